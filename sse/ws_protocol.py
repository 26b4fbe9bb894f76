"""The WebSocket side of the protocol, with no I/O: handshake checks, frames, messages.

RFC 6455 (The WebSocket Protocol) and RFC 7692 (permessage-deflate). wsproto
parses what clients send; what we broadcast is framed here, once per event for
every connection, because a server's frames are not masked (RFC 6455 section
5.1) and so are the same bytes for every client.

Pure: no sockets, no asyncio, no clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from sse.app import Reply, Request, json_reply, require_text
from sse.errors import ClientError
from sse.hub import Frame
from sse.wire import Event

__all__ = [
    "OP_BINARY",
    "OP_TEXT",
    "TEXT_ENCODING",
    "Deflater",
    "PostCommand",
    "SendCommand",
    "ack",
    "check_handshake",
    "deflate_message",
    "deflated_frames",
    "encode_frame",
    "error",
    "event_payload",
    "handshake_response",
    "parse_command",
    "payloads",
    "text_frames",
]

# RFC 6455 section 5.2: opcodes of data frames.
OP_TEXT = 0x1
OP_BINARY = 0x2
_FIN = 0x80
_RSV1 = 0x40  # RFC 7692 section 6: "Per-Message Compressed" bit, on the first frame only
# RFC 7692 section 7.2.1: a message compressed with a sync flush ends in these
# four octets, which the sender removes and the receiver appends again.
_SYNC_TAIL = b"\x00\x00\xff\xff"
_VERSION = "13"  # RFC 6455 section 4.1: the only version this server speaks
_KEY_BYTES = 16  # RFC 6455 section 4.1: the key is 16 random bytes, base64-encoded
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
# An EventSource turns CRLF and lone CR into LF (WHATWG HTML 9.2.6), so an SSE
# client never sees CR; a WebSocket client gets the same string.
_CR = re.compile(r"\r\n?")

# Key of `Frame.encodings` for the uncompressed text frames of a frame's events.
TEXT_ENCODING = "ws"


def encode_frame(payload: bytes, opcode: int = OP_TEXT, *, compressed: bool = False) -> bytes:
    """One unfragmented, unmasked frame (RFC 6455 section 5.2), as a server sends it."""
    first = _FIN | opcode | (_RSV1 if compressed else 0)
    size = len(payload)
    # The length takes 7 bits, or 126 and 16 bits, or 127 and 64 bits, and must
    # use the shortest form (section 5.2, "Payload length"; wsproto refuses others).
    if size < 126:
        head = struct.pack("!BB", first, size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, 126, size)
    else:
        head = struct.pack("!BBQ", first, 127, size)
    return head + payload


def payloads(frames: bytes) -> Iterator[bytes]:
    """The payloads of the unmasked frames `encode_frame` wrote back to back."""
    view = memoryview(frames)
    at = 0
    while at < len(view):
        size = view[at + 1] & 0x7F
        at += 2
        if size == 126:
            (size,) = struct.unpack_from("!H", view, at)
            at += 2
        elif size == 127:
            (size,) = struct.unpack_from("!Q", view, at)
            at += 8
        yield bytes(view[at : at + size])
        at += size


def event_payload(event: Event) -> bytes:
    """The JSON text of one event as a WebSocket client receives it: id, event, data."""
    data = event.data
    if "\r" in data:
        data = _CR.sub("\n", data)
    message = {"id": event.id or "", "event": event.event or "message", "data": data}
    # The event was validated when published: its text is UTF-8 encodable.
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


def text_frames(frame: Frame) -> bytes:
    """`frame`'s events as text frames, one per event, each encoded once."""
    data = frame.encodings.get(TEXT_ENCODING)
    if data is None:
        if frame.parts:
            # A batch, or the tail of one that a late subscriber gets: its events
            # were encoded (and cached) as they went out to the others.
            data = b"".join(text_frames(part) for part in frame.parts)
        else:
            assert frame.event is not None, "a one-event frame carries its event"
            data = encode_frame(event_payload(frame.event))
        frame.encodings[TEXT_ENCODING] = data
    return data


def _payload(single: Frame) -> memoryview:
    """The JSON text of a one-event frame, inside its cached text frame."""
    data = text_frames(single)
    size = data[1] & 0x7F
    return memoryview(data)[2 if size < 126 else 4 if size == 126 else 10 :]


def deflate_message(payload: bytes | memoryview, window_bits: int) -> bytes:
    """`payload` compressed on its own, as RFC 7692 section 7.2.1 sends a message."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -window_bits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[: -len(_SYNC_TAIL)]


def deflated_frames(frame: Frame, window_bits: int) -> bytes:
    """`frame`'s events as compressed text frames without context takeover, once per frame.

    Without context takeover (RFC 7692 section 7.1.1.1) each message is compressed
    on its own, so the bytes depend only on the message and the window: the same
    for every client that negotiated that window.
    """
    key = f"ws-deflate-{window_bits}"
    data = frame.encodings.get(key)
    if data is None:
        if frame.parts:
            data = b"".join(deflated_frames(part, window_bits) for part in frame.parts)
        else:
            compressed = deflate_message(_payload(frame), window_bits)
            data = encode_frame(compressed, compressed=True)
        frame.encodings[key] = data
    return data


class Deflater:
    """One connection's compressor with context takeover (RFC 7692 section 7.2.1)."""

    __slots__ = ("_compressor",)

    def __init__(self, window_bits: int, mem_level: int) -> None:
        self._compressor = zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -window_bits, mem_level
        )

    def frames(self, frame: Frame) -> bytes:
        """`frame`'s events as compressed text frames; each one extends the shared context."""
        compressor = self._compressor
        out = []
        for single in frame.singles():
            data = compressor.compress(_payload(single)) + compressor.flush(zlib.Z_SYNC_FLUSH)
            out.append(encode_frame(data[: -len(_SYNC_TAIL)], compressed=True))
        return b"".join(out)


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def check_handshake(req: Request, allowed_origins: tuple[str, ...]) -> Reply | None:
    """Why `req` cannot be upgraded to a WebSocket, as the reply to send; None if it can."""
    # RFC 6455 section 4.2.1 lists what a client's opening handshake must hold;
    # section 4.2.2 answers anything else with 400.
    headers = req.headers
    problem = None
    if req.method != "GET":
        problem = "the WebSocket handshake must be a GET request"
    elif "websocket" not in _tokens(headers.get("upgrade", "")):
        problem = "expected a WebSocket handshake (Upgrade: websocket)"
    elif "upgrade" not in _tokens(headers.get("connection", "")):
        problem = "expected a WebSocket handshake (Connection: Upgrade)"
    elif not _valid_key(headers.get("sec-websocket-key", "")):
        problem = "Sec-WebSocket-Key must be 16 bytes in base64"
    version = headers.get("sec-websocket-version")
    versions = (("sec-websocket-version", _VERSION),)
    if problem is None and version != _VERSION:
        if version is None:
            problem = "missing Sec-WebSocket-Version"
        else:
            # Section 4.2.2: a version we do not speak gets 426 and the one we do.
            message = f"WebSocket version {version!r} is not supported; use {_VERSION}"
            return json_reply(426, {"error": message}, versions)
    if problem is not None:
        return json_reply(400, {"error": problem}, versions)
    origin = headers.get("origin")
    # Section 10.2: a browser always sends Origin, and a WebSocket is not covered
    # by CORS, so the allow-list that guards reads by other sites guards it here.
    if origin is not None and "*" not in allowed_origins and origin not in allowed_origins:
        return json_reply(403, {"error": f"origin {origin!r} is not allowed"})
    return None


def handshake_response(key: str, extensions: bytes | None = None) -> bytes:
    """The 101 accepting a handshake whose Sec-WebSocket-Key is `key` (RFC 6455 section 4.2.2)."""
    # Section 4.2.2 item 5.4: base64 of the SHA-1 of the key with the GUID appended.
    digest = hashlib.sha1(key.strip().encode("ascii") + _GUID).digest()
    head = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: %s\r\n" % base64.b64encode(digest)
    )
    if extensions:
        head += b"Sec-WebSocket-Extensions: %s\r\n" % extensions
    return head + b"\r\n"


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == _KEY_BYTES
    except (binascii.Error, ValueError):
        return False


@dataclass(frozen=True, slots=True)
class SendCommand:
    """`{"type": "send", "message": ...}` on the room's socket: broadcast `message`."""

    message: str


@dataclass(frozen=True, slots=True)
class PostCommand:
    """`{"type": "message", "content": ...}` on a conversation's socket: post it."""

    content: str


def parse_command(
    text: str, *, conversation: bool, max_content_chars: int
) -> SendCommand | PostCommand:
    """What a client's text message asks for, checked like the matching POST body.

    Raises:
        ClientError: 400 for anything but the expected JSON object, 413 for a
            conversation message longer than `max_content_chars`.
    """
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ClientError(400, f"message is not valid JSON: {exc}") from None
    except ValueError as exc:
        # int() refuses a number of more than 4,300 digits (CPython's limit).
        raise ClientError(400, f"message holds a number too long to read: {exc}") from None
    if not isinstance(value, dict):
        raise ClientError(400, "message must be a JSON object")
    expected = "message" if conversation else "send"
    if value.get("type") != expected:
        where = "a conversation's" if conversation else "the room's"
        raise ClientError(400, f'"type" must be "{expected}" on {where} socket')
    if not conversation:
        return SendCommand(require_text(value, "message"))
    content = require_text(value, "content")
    if not content.strip():
        raise ClientError(400, '"content" must not be empty')
    if len(content) > max_content_chars:
        raise ClientError(
            413, f'"content" is longer than the limit of {max_content_chars} characters'
        )
    return PostCommand(content)


def _json(payload: Mapping[str, object]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def ack(**fields: str) -> bytes:
    """The JSON text answering a command that was carried out."""
    return _json({"type": "ack", **fields})


def error(status: int, message: str) -> bytes:
    """The JSON text answering a command that was refused, with the HTTP status it would get."""
    return _json({"type": "error", "status": status, "error": message})
