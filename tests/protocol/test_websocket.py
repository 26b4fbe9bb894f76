"""WebSocket frames and the handshake answer as pure bytes (RFC 6455, RFC 7692)."""

from __future__ import annotations

import json
import zlib

import pytest
from wsproto.frame_protocol import FrameDecoder

from sse.protocol.frame import Frame
from sse.protocol.sse import Event as SseEvent
from sse.protocol.websocket import (
    deflate_message,
    deflated_frames,
    encode_frame,
    event_payload,
    handshake_response,
    payloads,
    text_frames,
)

OP_TEXT, OP_BINARY, OP_CONT, OP_CLOSE, OP_PING = 0x1, 0x2, 0x0, 0x8, 0x9


# -- pure: frames, payloads, handshake checks, commands ----------------------------


def _decode_as_client(data: bytes) -> list[tuple[int, bytes | str, bool]]:
    """Frames as wsproto's client-side decoder reads them: opcode, payload, fin."""
    decoder = FrameDecoder(client=True)
    decoder.receive_bytes(data)
    out = []
    while (frame := decoder.process_buffer()) is not None:
        out.append((int(frame.opcode), frame.payload, frame.message_finished))
    return out


@pytest.mark.parametrize(
    ("size", "head"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_frame_uses_the_shortest_length_form_unmasked(size: int, head: bytes) -> None:
    payload = b"a" * size
    data = encode_frame(payload)
    assert data == head + payload
    assert _decode_as_client(data) == [(OP_TEXT, payload, True)]


def test_compressed_frame_sets_rsv1_and_binary_its_opcode() -> None:
    assert encode_frame(b"x", compressed=True)[:1] == b"\xc1"
    assert encode_frame(b"x", 0x2)[:1] == b"\x82"


def test_payloads_splits_frames_written_back_to_back() -> None:
    parts = [b"", b"a" * 125, b"b" * 300, b"c" * 70_000]
    assert list(payloads(b"".join(encode_frame(p) for p in parts))) == parts


@pytest.mark.parametrize(
    ("event", "text"),
    [
        (SseEvent("hi", id="e-1"), '{"id":"e-1","event":"message","data":"hi"}'),
        (SseEvent("{}", event="gap", id="e-2"), '{"id":"e-2","event":"gap","data":"{}"}'),
        # As an EventSource sees them: CRLF and lone CR become LF.
        (SseEvent("a\r\nb\rc\nd", id="3"), '{"id":"3","event":"message","data":"a\\nb\\nc\\nd"}'),
        (
            SseEvent('é "q" \u2028', id="4"),
            '{"id":"4","event":"message","data":"é \\"q\\" \u2028"}',
        ),
    ],
)
def test_event_payload_is_json_with_id_event_and_data(event: SseEvent, text: str) -> None:
    assert event_payload(event) == text.encode()


def test_a_frame_of_several_events_is_one_text_frame_per_event_encoded_once() -> None:
    one = Frame.of(SseEvent("one", id="e-1"), 1)
    two = Frame.of(SseEvent("two", event="user", id="e-2"), 2)
    batch = Frame(2, "e-2", one.raw + two.raw, b"", parts=(one, two))
    data = text_frames(batch)
    assert [json.loads(p) for _, p, _ in _decode_as_client(data)] == [
        {"id": "e-1", "event": "message", "data": "one"},
        {"id": "e-2", "event": "user", "data": "two"},
    ]
    assert text_frames(batch) is data  # cached: the next connection pays nothing
    # Each event was encoded once, and a batch of the same events reuses that.
    assert data == text_frames(one) + text_frames(two)


def test_shared_deflate_is_a_plain_rfc7692_message_and_cached() -> None:
    frame = Frame.of(SseEvent("hello " * 50, id="e-1"), 1)
    data = deflated_frames(frame, 15)
    assert data[0] == 0xC1  # FIN, RSV1 (compressed), text
    (payload,) = payloads(data)
    inflated = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
    assert frame.event is not None
    assert inflated == event_payload(frame.event)
    assert deflated_frames(frame, 15) is data
    assert deflate_message(b"same", 10) == deflate_message(b"same", 10)


def test_handshake_response_carries_the_rfc6455_accept_token() -> None:
    # The example of RFC 6455 section 1.3.
    assert handshake_response("dGhlIHNhbXBsZSBub25jZQ==") == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    )
    assert handshake_response("dGhlIHNhbXBsZSBub25jZQ==", b"permessage-deflate").endswith(
        b"\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    )
