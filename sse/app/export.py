"""A transcript as a file to download: Markdown or JSON bytes, and a safe file name.

Pure: a `Transcript` in, bytes and header values out.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from urllib.parse import quote

from sse.chat.store.base import StoredMessage, Transcript

__all__ = ["FORMATS", "content_disposition", "export_json", "export_markdown", "media_type"]

# Format name -> (media type, file extension).
FORMATS: Mapping[str, tuple[str, str]] = {
    "json": ("application/json; charset=utf-8", "json"),
    "md": ("text/markdown; charset=utf-8", "md"),
}
_SLUG_MAX_CHARS = 60
_FALLBACK = "conversation"
_NOT_ASCII_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
# \w is Unicode-aware for str: letters and digits of every script stay.
_NOT_SAFE = re.compile(r"[^\w.-]+")
# A run of dots and dashes with a dash in it reads as one dash ("a-..-b" -> "a-b").
_DASHES = re.compile(r"[-.]*-[-.]*")
# What an assistant line says when its reply did not end normally.
_ENDINGS = {"cancelled": "stopped", "interrupted": "interrupted", "streaming": "still streaming"}


def media_type(fmt: str) -> str:
    """The Content-Type of format `fmt` (a key of `FORMATS`)."""
    return FORMATS[fmt][0]


def export_json(transcript: Transcript) -> bytes:
    """The transcript as a JSON document, UTF-8, indented for people."""
    c = transcript.conversation
    payload = {
        "id": c.id,
        "title": c.title,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "messages": [
            {
                "role": m.role,
                "content": m.content,
                "status": m.status,
                "model": m.model,
                "created_at": m.created_at,
                "finish_reason": m.finish_reason,
                "error": m.error,
            }
            for m in transcript.messages
        ],
    }
    return (json.dumps(payload, ensure_ascii=False, indent=2) + "\n").encode()


def _ending(m: StoredMessage) -> str | None:
    if m.status == "error":
        return f"_(error: {m.error})_" if m.error else "_(error)_"
    said = _ENDINGS.get(m.status)
    return f"_({said})_" if said else None


def export_markdown(transcript: Transcript, labels: Mapping[str, str]) -> bytes:
    """The transcript as Markdown: `# title`, then `## You` / `## Assistant (model)` sections.

    Message content is written verbatim (it is Markdown already, as the page renders it).
    """
    parts = [f"# {transcript.conversation.title}"]
    for m in transcript.messages:
        if m.role == "user":
            parts.append("## You")
        else:
            model = labels.get(m.model or "") or m.model
            parts.append(f"## Assistant ({model})" if model else "## Assistant")
        if m.content:
            parts.append(m.content)
        ending = _ending(m) if m.role != "user" else None
        if ending is not None:
            parts.append(ending)
    return ("\n\n".join(parts) + "\n").encode()


def _slug(name: str, unsafe: re.Pattern[str]) -> str:
    dashed = _DASHES.sub("-", unsafe.sub("-", name)).strip("-.")
    return dashed[:_SLUG_MAX_CHARS].strip("-.") or _FALLBACK


def content_disposition(title: str, fmt: str) -> str:
    """`attachment` with an ASCII file name from `title`, plus `filename*` (RFC 6266) if needed.

    The ASCII name is a slug: letters, digits, `.`, `_`, `-`, at most 60
    characters, never empty, never starting with a dot (no hidden files).
    """
    ext = FORMATS[fmt][1]
    ascii_text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = _slug(ascii_text.lower(), _NOT_ASCII_SAFE)
    value = f'attachment; filename="{slug}.{ext}"'
    if title.isascii():
        return value
    # RFC 6266 section 4.3: a UTF-8 name for the clients that read it (RFC 8187 encoding).
    wide = _slug(unicodedata.normalize("NFC", title), _NOT_SAFE)
    return f"{value}; filename*=UTF-8''{quote(f'{wide}.{ext}', safe='')}"
