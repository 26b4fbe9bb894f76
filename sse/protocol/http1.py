"""HTTP/1.1 pieces h11 leaves to us: the chunk framing of a body we write ourselves.

An open event stream frames its own body (RFC 9112 section 7.1) so that a
broadcast is one write per stream: h11 frames the head, we frame each chunk.
Pure: bytes in, bytes out.
"""

from __future__ import annotations

from http import HTTPStatus

__all__ = ["LAST_CHUNK", "chunk", "status_phrase", "with_header"]

# RFC 9112 section 7.1: the zero-size chunk and the empty trailer section end a body.
LAST_CHUNK = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """`data` as one chunk: size in hex, CRLF, data, CRLF (RFC 9112 section 7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def status_phrase(status: int) -> bytes:
    """The standard reason phrase for `status`, for the status line."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def with_header(head: bytes, name: bytes, value: bytes) -> bytes:
    """A framed response `head` with one more field line before its blank line.

    For a field whose name and value are known to be valid (RFC 9110 section
    5.5): it skips h11's validation, so a validated head can be shared.
    """
    return b"%b%b: %b\r\n\r\n" % (head[:-2], name, value)
