"""The HTTP/1.1 pieces we frame ourselves: exact bytes."""

from __future__ import annotations

import pytest

from sse.protocol.http1 import LAST_CHUNK, chunk, with_header


@pytest.mark.parametrize(
    ("head", "wire"),
    [
        (b"HTTP/1.1 200 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nx-request-id: r-1\r\n\r\n"),
        (
            b"HTTP/1.1 204 No Content\r\nallow: GET\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nallow: GET\r\nx-request-id: r-1\r\n\r\n",
        ),
    ],
)
def test_with_header_adds_a_field_line_before_the_blank_line(head: bytes, wire: bytes) -> None:
    assert with_header(head, b"x-request-id", b"r-1") == wire


@pytest.mark.parametrize(
    ("data", "wire"), [(b"hi", b"2\r\nhi\r\n"), (b"x" * 16, b"10\r\n" + b"x" * 16 + b"\r\n")]
)
def test_chunk(data: bytes, wire: bytes) -> None:
    assert chunk(data) == wire
    assert LAST_CHUNK == b"0\r\n\r\n"
