"""The browser page's files, read once at start-up and served from memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["StaticFile", "load_static"]

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    """One file of the page: its media type and bytes."""

    content_type: str
    body: bytes


def load_static(root: Path) -> dict[str, StaticFile]:
    """Map URL paths to the files directly under `root`; `/` is `index.html`.

    Only the top-level files with a known type are served, so nothing outside the
    folder (or a stray dotfile in it) can be reached by a crafted path.
    """
    files: dict[str, StaticFile] = {}
    if not root.is_dir():
        return files
    for path in sorted(root.iterdir()):
        kind = _TYPES.get(path.suffix)
        if kind is None or not path.is_file() or path.name.startswith("."):
            continue
        files["/" + path.name] = StaticFile(kind, path.read_bytes())
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files
