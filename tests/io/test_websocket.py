"""WebSockets over real sockets, with the `websockets` client (the pure tables are in
tests/protocol/test_websocket.py and tests/app/test_sockets.py).

What a library will not send (unmasked frames, bad UTF-8, reserved bits, a
client that never answers a ping) goes through `RawSocket`, a client written
by hand from RFC 6455 section 5 that reads the server's frames with wsproto.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import socket
import struct
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK, InvalidStatus
from websockets.typing import Origin
from wsproto.connection import Connection as WsprotoConnection
from wsproto.connection import ConnectionType
from wsproto.events import CloseConnection, Event, Ping, TextMessage

from sse.config import Config
from sse.errors import ConfigError
from sse.io.server import Server
from tests.support.client import (
    Connection,
    EventStream,
    Response,
    cookie_headers,
    post_message,
    request,
    wait_until,
)
from tests.support.servers import MakeServer, ServerProcess
from tests.support.sockets import closed_by_server

KEY = base64.b64encode(b"0123456789abcdef").decode()
UPGRADE = [
    ("upgrade", "websocket"),
    ("connection", "Upgrade"),
    ("sec-websocket-key", KEY),
    ("sec-websocket-version", "13"),
]
OP_TEXT, OP_BINARY, OP_CONT, OP_CLOSE, OP_PING = 0x1, 0x2, 0x0, 0x8, 0x9


# -- pure: frames, payloads, handshake checks, commands ----------------------------


def test_impossible_ws_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="ws_compression"):
        Config(ws_compression="always")
    with pytest.raises(ConfigError, match="ws_ping_timeout_s"):
        Config(ws_ping_timeout_s=0)


# -- helpers for real sockets ---------------------------------------------------


def _url(server: Server, path: str = "/ws") -> str:
    host, port = server.address
    return f"ws://{host}:{port}{path}"


async def _recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(message, str), "every server message is a text frame"
    payload = json.loads(message)
    assert isinstance(payload, dict)
    return payload


async def _recv_until(
    ws: ClientConnection, kind: str, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Messages up to and including the first event of type `kind`."""
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1].get("event") != kind:
        seen.append(await _recv(ws, timeout))
    return seen


async def _send(ws: ClientConnection, payload: object) -> None:
    await ws.send(json.dumps(payload))


def _mask(payload: bytes, key: bytes) -> bytes:
    """RFC 6455 section 5.3: XOR with the four key octets, repeated."""
    if not payload:
        return b""
    stream = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(
        len(payload), "big"
    )


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False, masked: bool = True
) -> bytes:
    """One frame as a client sends it (RFC 6455 section 5.2), or breaks it on purpose."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mask_bit = 0x80 if masked else 0
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", first, mask_bit | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + _mask(payload, key)


class RawSocket:
    """A WebSocket client written by hand: we send any bytes; wsproto reads the server's."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = WsprotoConnection(ConnectionType.CLIENT)
        self.eof = False

    @classmethod
    async def open(
        cls, address: tuple[str, int], path: str = "/ws", *, first: bytes = b""
    ) -> RawSocket:
        """Handshake (with `first` in the same write), and check the 101 to the letter."""
        reader, writer = await asyncio.open_connection(*address)
        key = base64.b64encode(os.urandom(16))
        writer.write(
            b"GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n%s"
            % (path.encode(), key, first)
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0] == "HTTP/1.1 101 Switching Protocols", head
        # RFC 6455 section 4.2.2: SHA-1 of the key and the GUID, base64-encoded.
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        ).decode()
        assert f"Sec-WebSocket-Accept: {accept}" in lines
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def next_event(self, timeout: float = 5.0) -> Event:
        """The next thing the server sent; a CloseConnection(1006) at EOF."""
        while True:
            for event in self.parser.events():
                return event
            if self.eof:
                raise EOFError("the server closed the connection")
            try:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                self.parser.receive_data(None)
            else:
                self.parser.receive_data(data)

    async def close_code(self, timeout: float = 5.0) -> int:
        """Read until the server's Close; its code."""
        while True:
            event = await self.next_event(timeout)
            if isinstance(event, CloseConnection):
                return event.code

    async def wait_eof(self, timeout: float = 5.0) -> None:
        """Read and drop until the server closes TCP."""
        async with asyncio.timeout(timeout):
            while not self.eof:
                try:
                    if not await self.reader.read(65536):
                        self.eof = True
                except ConnectionResetError:
                    self.eof = True

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def raw_sockets() -> AsyncIterator[list[RawSocket]]:
    """Raw clients that are closed after the test, whatever it asserted."""
    opened: list[RawSocket] = []
    yield opened
    for raw in opened:
        raw.close()


def _obj(response: Response) -> dict[str, Any]:
    payload = response.json()
    assert isinstance(payload, dict)
    return payload


async def _create_conversation(server: Server) -> str:
    response = await request(server.address, "POST", "/conversations")
    assert response.status == 201
    return str(_obj(response)["id"])


# -- the room ----------------------------------------------------------------------


async def test_room_message_sent_over_a_socket_reaches_sockets_and_streams(server: Server) -> None:
    async with connect(_url(server)) as alice, connect(_url(server)) as bob:
        stream = await EventStream.open(server.address)
        # Joins: alice sees three (hers, bob's, the stream's), bob two, the stream one.
        for ws, joins in ((alice, 3), (bob, 2)):
            for _ in range(joins):
                assert (await _recv(ws))["data"] == "A new user joined!"
        assert (await stream.next_event()).data == "A new user joined!"
        await _send(alice, {"type": "send", "message": "hello from a socket"})
        acked = await _recv(alice)
        assert acked["type"] == "ack"
        for ws in (alice, bob):
            assert await _recv(ws) == {
                "id": acked["id"],
                "event": "message",
                "data": "hello from a socket",
            }
        event = await stream.next_event()
        assert (event.data, event.last_event_id) == ("hello from a socket", acked["id"])
        await stream.close()


async def test_post_reaches_a_socket_as_the_same_event_a_stream_gets(server: Server) -> None:
    async with connect(_url(server)) as ws:
        stream = await EventStream.open(server.address)
        await _recv_until(ws, "message")  # its own join
        await _recv_until(ws, "message")  # the stream's
        await stream.next_event()
        response = await post_message(server.address, "line one\r\nline two")
        assert response.status == 200
        event = await stream.next_event()
        assert await _recv(ws) == {
            "id": event.last_event_id,
            "event": event.type,
            "data": event.data,
        }
        assert event.data == "line one\nline two"
        await stream.close()


async def test_join_announcement_follows_the_same_switch(make_server: MakeServer) -> None:
    server = await make_server(join_announcement=False)
    async with connect(_url(server)) as ws:
        await post_message(server.address, "first")
        assert (await _recv(ws))["data"] == "first"


async def test_bad_commands_get_an_error_frame_and_the_socket_stays_open(
    server: Server,
) -> None:
    async with connect(_url(server)) as ws:
        await _recv(ws)  # join
        bad: list[tuple[str | bytes, int]] = [
            ("not json", 400),
            ('["send"]', 400),
            ('{"type":"message","content":"x"}', 400),
            ('{"type":"send"}', 400),
            ('{"type":"send","message":7}', 400),
            (b'{"type":"send","message":"binary"}', 400),
        ]
        for message, status in bad:
            await ws.send(message)
            reply = await _recv(ws)
            assert reply["type"] == "error"
            assert reply["status"] == status
            assert isinstance(reply["error"], str)
            assert reply["error"]
        await _send(ws, {"type": "send", "message": "still here"})
        assert (await _recv(ws))["type"] == "ack"
        assert (await _recv(ws))["data"] == "still here"


async def test_healthz_counts_open_websockets(server: Server) -> None:
    async with connect(_url(server)), connect(_url(server)):
        await wait_until(lambda: len(server.sockets) == 2, what="two sockets")
        health = _obj(await request(server.address, "GET", "/healthz"))
        assert health["websockets"] == 2
        assert health["streams"] == 0
    await wait_until(lambda: not server.sockets, what="sockets forgotten")
    assert _obj(await request(server.address, "GET", "/healthz"))["websockets"] == 0


async def test_frame_sent_with_the_handshake_is_read(
    server: Server, raw_sockets: list[RawSocket]
) -> None:
    command = json.dumps({"type": "send", "message": "early"}).encode()
    raw = await RawSocket.open(server.address, first=client_frame(OP_TEXT, command))
    raw_sockets.append(raw)
    texts = []
    while len(texts) < 3:
        event = await raw.next_event()
        if isinstance(event, TextMessage):
            texts.append(json.loads(event.data))
    (acked,) = [t for t in texts if t.get("type") == "ack"]
    # Its own join first, then its message: as if it had waited for the 101.
    assert [t["data"] for t in texts if "data" in t] == ["A new user joined!", "early"]
    assert [t["id"] for t in texts if t.get("data") == "early"] == [acked["id"]]


async def test_client_ping_gets_a_pong(server: Server) -> None:
    async with connect(_url(server), ping_interval=None) as ws:
        waiter = await ws.ping(b"are you there")
        await asyncio.wait_for(waiter, 5)


# -- conversations --------------------------------------------------------------


async def test_conversation_socket_streams_the_reply_a_stream_gets(server: Server) -> None:
    cid = await _create_conversation(server)
    async with connect(
        _url(server, f"/conversations/{cid}/ws"), additional_headers=cookie_headers(server.address)
    ) as ws:
        stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
        await _send(ws, {"type": "message", "content": "hello there world"})
        acked = await _recv(ws)
        assert acked["type"] == "ack"
        assert set(acked) == {"type", "message_id", "reply_id"}
        got = await _recv_until(ws, "done")
        assert [g["event"] for g in got][:2] == ["user", "start"]
        assert {g["event"] for g in got[2:-1]} == {"delta"}
        assert (
            "".join(json.loads(g["data"])["text"] for g in got[2:-1])
            == "You said: hello there world"
        )
        assert json.loads(got[0]["data"])["message_id"] == acked["message_id"]
        assert json.loads(got[1]["data"])["message_id"] == acked["reply_id"]
        # The same events, ids and data as the event stream's.
        events = [await stream.next_event(10) for _ in got]
        assert [(e.last_event_id, e.type, e.data) for e in events] == [
            (g["id"], g["event"], g["data"]) for g in got
        ]
        await stream.close()


async def test_second_message_while_replying_gets_a_409_error_frame(
    make_server: MakeServer,
) -> None:
    server = await make_server(echo_delay_s=0.05)
    cid = await _create_conversation(server)
    async with connect(
        _url(server, f"/conversations/{cid}/ws"), additional_headers=cookie_headers(server.address)
    ) as ws:
        await _send(ws, {"type": "message", "content": "one two three four five six"})
        await _send(ws, {"type": "message", "content": "too soon"})
        replies = []
        while len(replies) < 2:
            message = await _recv(ws)
            if "type" in message:
                replies.append(message)
        assert replies[0]["type"] == "ack"
        assert replies[1] == {
            "type": "error",
            "status": 409,
            "error": "a reply is still streaming; stop it or wait for it",
        }
        await _recv_until(ws, "done")


async def test_conversation_content_over_the_limit_gets_413(make_server: MakeServer) -> None:
    server = await make_server(max_content_chars=10)
    cid = await _create_conversation(server)
    async with connect(
        _url(server, f"/conversations/{cid}/ws"), additional_headers=cookie_headers(server.address)
    ) as ws:
        await _send(ws, {"type": "message", "content": "x" * 11})
        reply = await _recv(ws)
        assert (reply["type"], reply["status"]) == ("error", 413)


@pytest.mark.parametrize("cid", [str(uuid.uuid4()), "not-a-uuid"])
async def test_unknown_conversation_is_refused_with_404(server: Server, cid: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            _url(server, f"/conversations/{cid}/ws"),
            additional_headers=cookie_headers(server.address),
        ):
            pass
    assert refused.value.response.status_code == 404


# -- resume ------------------------------------------------------------------------


async def test_last_event_id_replays_what_was_missed_without_a_join(server: Server) -> None:
    async with connect(_url(server)) as ws:
        joined = await _recv(ws)
        for text in ("one", "two", "three"):
            await post_message(server.address, text)
        first = await _recv(ws)
        assert first["data"] == "one"
    async with connect(_url(server) + f"?last_event_id={first['id']}") as again:
        assert [(await _recv(again))["data"] for _ in range(2)] == ["two", "three"]
        await post_message(server.address, "four")
        # No "A new user joined!" for a returning client: the next event is live.
        assert (await _recv(again))["data"] == "four"
    assert joined["data"] == "A new user joined!"


async def test_unknown_last_event_id_gets_a_gap_event_then_the_history(server: Server) -> None:
    await post_message(server.address, "kept")
    async with connect(_url(server) + "?last_event_id=1-1") as ws:
        gap = await _recv(ws)
        assert gap["event"] == "gap"
        assert json.loads(gap["data"])["last_event_id"] == "1-1"
        assert (await _recv(ws))["data"] == "kept"


# -- handshake refusals ---------------------------------------------------------------


async def test_origin_not_on_the_allow_list_is_refused_with_403(make_server: MakeServer) -> None:
    server = await make_server(cors_origins=("http://ok.example",))
    with pytest.raises(InvalidStatus) as refused:
        async with connect(_url(server), origin=Origin("http://evil.example")):
            pass
    assert refused.value.response.status_code == 403
    async with connect(_url(server), origin=Origin("http://ok.example")) as ws:
        assert (await _recv(ws))["data"] == "A new user joined!"


async def test_plain_get_on_ws_is_a_400(server: Server) -> None:
    response = await request(server.address, "GET", "/ws")
    assert response.status == 400
    assert "Upgrade: websocket" in _obj(response)["error"]


async def test_unsupported_version_gets_426_naming_version_13(server: Server) -> None:
    headers = [*UPGRADE[:3], ("sec-websocket-version", "8")]
    response = await request(server.address, "GET", "/ws", headers)
    assert response.status == 426
    assert response.headers["sec-websocket-version"] == "13"


async def test_refused_handshake_keeps_the_connection_usable(server: Server) -> None:
    conn = await Connection.open(server.address)
    try:
        refused = await conn.request("GET", "/ws", UPGRADE[:3])
        assert refused.status == 400
        health = await conn.request("GET", "/healthz")
        assert health.status == 200
    finally:
        await conn.close()


async def test_http10_upgrade_is_refused(server: Server) -> None:
    head = (
        "GET /ws HTTP/1.0\r\nHost: x\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in UPGRADE)
        + "\r\n"
    )
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(head.encode())
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.startswith(b"HTTP/1.1 400 ")
    writer.close()


# -- close codes ------------------------------------------------------------------------


async def test_client_close_is_echoed_with_its_code_1000(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ssechat")
    ws = await connect(_url(server))
    await _recv(ws)
    await ws.close(1000, "bye")
    assert ws.close_code == 1000
    assert ws.close_reason == "bye"
    assert ws.protocol.close_rcvd is not None
    assert ws.protocol.close_rcvd.code == 1000
    await wait_until(lambda: not server.sockets, what="socket forgotten")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("websocket ")]
    assert any(" open for " in line and "topic=room" in line for line in lines)
    assert any(" closed for " in line and "code=1000" in line for line in lines)


async def test_shutdown_closes_sockets_with_1001(make_server: MakeServer) -> None:
    server = await make_server()
    ws = await connect(_url(server))
    await _recv(ws)
    stopping = asyncio.create_task(server.stop())
    closed = await closed_by_server(ws)
    assert isinstance(closed, ConnectionClosedOK)  # both Close frames were exchanged
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1001
    # The client's answer ends the handshake: the server stops well before its timeout.
    await asyncio.wait_for(stopping, server.config.shutdown_timeout_s)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        # RFC 6455 section 5.1: a client's frames must be masked.
        (client_frame(OP_TEXT, b"{}", masked=False), 1002),
        # Section 5.2: reserved bits need an extension that defines them.
        (client_frame(OP_TEXT, b"{}", rsv1=True), 1002),
        # Opcode 0x3 is reserved.
        (client_frame(0x3, b"{}"), 1002),
        # Section 5.5: control frames are never fragmented, and carry <= 125 bytes.
        (client_frame(OP_PING, b"x", fin=False), 1002),
        (client_frame(OP_PING, b"x" * 126), 1002),
        # A continuation with no message to continue.
        (client_frame(OP_CONT, b"x"), 1002),
        # Section 8.1: a text message must be UTF-8.
        (client_frame(OP_TEXT, b"\xff\xfe"), 1007),
        (client_frame(OP_TEXT, b"ok", fin=False) + client_frame(OP_CONT, b"\xc0\xaf"), 1007),
    ],
)
async def test_invalid_frames_fail_the_connection_with_the_right_code(
    server: Server, raw_sockets: list[RawSocket], frame: bytes, code: int
) -> None:
    raw = await RawSocket.open(server.address)
    raw_sockets.append(raw)
    raw.send(frame)
    assert await raw.close_code() == code
    # Then the server half-closes without waiting for a Close it can no longer
    # parse, and forgets the socket once the client hangs up too.
    await raw.wait_eof()
    raw.close()
    await wait_until(lambda: not server.sockets, what="socket forgotten")


async def test_message_over_the_limit_is_closed_with_1009(make_server: MakeServer) -> None:
    server = await make_server(ws_max_message_bytes=1024)
    async with connect(_url(server)) as ws:
        await _recv(ws)
        await _send(ws, {"type": "send", "message": "x" * 900})  # within the limit
        assert (await _recv(ws))["type"] == "ack"
        await ws.send("y" * 1025)
        closed = await closed_by_server(ws)
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1009


async def test_fragments_count_toward_the_limit_as_they_arrive(
    make_server: MakeServer, raw_sockets: list[RawSocket]
) -> None:
    server = await make_server(ws_max_message_bytes=4096)
    raw = await RawSocket.open(server.address)
    raw_sockets.append(raw)
    raw.send(client_frame(OP_TEXT, b"a" * 1000, fin=False))
    for _ in range(4):  # 5,000 bytes in all, none of its fragments over the limit
        raw.send(client_frame(OP_CONT, b"a" * 1000, fin=False))
    assert await raw.close_code() == 1009


async def test_frame_declaring_a_huge_length_is_closed_before_it_arrives(
    make_server: MakeServer, raw_sockets: list[RawSocket]
) -> None:
    server = await make_server(ws_max_message_bytes=4096)
    raw = await RawSocket.open(server.address)
    raw_sockets.append(raw)
    # A header announcing 2**40 bytes, then the first 8 kB of them.
    key = os.urandom(4)
    raw.send(struct.pack("!BBQ", 0x81, 0x80 | 127, 1 << 40) + key + _mask(b"b" * 8192, key))
    assert await raw.close_code() == 1009


async def test_compressed_message_inflating_past_the_limit_is_closed_with_1009(
    make_server: MakeServer,
) -> None:
    server = await make_server(ws_max_message_bytes=64 * 1024, ws_compression="shared")
    async with connect(_url(server)) as ws:
        assert "permessage-deflate" in (ws.response.headers.get("sec-websocket-extensions") or "")
        await _recv(ws)
        # 16 MB of one letter: a few kilobytes on the wire.
        await ws.send("z" * (16 << 20))
        closed = await closed_by_server(ws)
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1009


# -- keepalive and slow clients --------------------------------------------------------


async def test_client_that_never_answers_pings_is_cut_while_others_stay(
    make_server: MakeServer, raw_sockets: list[RawSocket]
) -> None:
    server = await make_server(ws_ping_interval_s=0.1, ws_ping_timeout_s=0.3)
    async with connect(_url(server)) as lively:  # websockets answers pings itself
        mute = await RawSocket.open(server.address)
        raw_sockets.append(mute)
        events = []
        while not events or not isinstance(events[-1], CloseConnection):
            events.append(await mute.next_event())
        assert any(isinstance(e, Ping) for e in events)
        closing = events[-1]
        assert isinstance(closing, CloseConnection)
        assert closing.code == 1011
        await mute.wait_eof()
        # The lively client has answered several pings by now and is still served.
        await post_message(server.address, "still there?")
        assert "still there?" in [(await _recv(lively))["data"] for _ in range(3)]
        assert len(server.sockets) == 1


async def _never_reading_socket(address: tuple[str, int]) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, address)
    head = "GET /ws HTTP/1.1\r\nHost: x\r\n" + "".join(f"{k}: {v}\r\n" for k, v in UPGRADE)
    await loop.sock_sendall(sock, (head + "\r\n").encode())
    return sock


async def test_socket_that_never_reads_is_dropped_while_others_keep_receiving(
    make_server: MakeServer,
) -> None:
    server = await make_server(join_announcement=False, backlog_limit_bytes=64 * 1024)
    async with connect(_url(server), max_size=None) as fast:
        slow = await _never_reading_socket(server.address)
        try:
            await wait_until(lambda: len(server.sockets) == 2, what="both sockets open")
            payload = "x" * 16_000
            sent = 0
            # Bounded: 2,000 x 16 kB is far more than the kernel buffers plus the backlog.
            while len(server.sockets) == 2 and sent < 2000:
                response = await post_message(server.address, f"{sent} {payload}")
                assert response.status == 200
                assert (await _recv(fast))["data"] == f"{sent} {payload}"
                sent += 1
            assert len(server.sockets) == 1, f"slow socket still open after {sent} messages"
            await post_message(server.address, "after")
            assert (await _recv(fast))["data"] == "after"
        finally:
            slow.close()


# -- compression -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["shared", "per-connection"])
async def test_compressed_and_plain_clients_get_the_same_events(
    make_server: MakeServer, mode: str
) -> None:
    server = await make_server(ws_compression=mode, join_announcement=False)
    async with connect(_url(server)) as deflated, connect(_url(server), compression=None) as plain:
        extensions = deflated.response.headers.get("sec-websocket-extensions") or ""
        assert extensions.startswith("permessage-deflate")
        assert ("server_no_context_takeover" in extensions) == (mode == "shared")
        assert plain.response.headers.get("sec-websocket-extensions") is None
        texts = [f"{i} " + "compressible text " * i for i in range(1, 20)]
        for text in texts:
            await _send(deflated, {"type": "send", "message": text})
        got_deflated = [m for m in [await _recv(deflated) for _ in range(38)] if "data" in m]
        got_plain = [await _recv(plain) for _ in texts]
        assert [m["data"] for m in got_deflated] == texts
        assert got_plain == got_deflated


async def test_unparsable_deflate_offer_is_refused_with_400(make_server: MakeServer) -> None:
    server = await make_server(ws_compression="shared")
    offer = ("sec-websocket-extensions", "permessage-deflate; client_max_window_bits=many")
    response = await request(server.address, "GET", "/ws", [*UPGRADE, offer])
    assert response.status == 400
    assert "Sec-WebSocket-Extensions" in _obj(response)["error"]


async def test_compression_is_not_offered_when_off(server: Server) -> None:
    async with connect(_url(server)) as ws:
        assert ws.response.headers.get("sec-websocket-extensions") is None


async def test_server_process_on_uvloop_fails_closes_and_drains_sockets(
    spawn: Callable[..., ServerProcess], raw_sockets: list[RawSocket]
) -> None:
    proc = spawn("--loop", "uvloop")
    host, port = proc.address
    broken = await RawSocket.open(proc.address)
    raw_sockets.append(broken)
    broken.send(client_frame(OP_TEXT, b"{}", masked=False))
    assert await broken.close_code() == 1002
    await broken.wait_eof()  # uvloop's half-close after the Close
    broken.close()
    async with connect(f"ws://{host}:{port}/ws") as ws:
        assert (await _recv(ws))["data"] == "A new user joined!"
        proc.proc.terminate()
        closed = await closed_by_server(ws, timeout=10)
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1001
    assert await asyncio.to_thread(proc.terminate) == 0
    assert "code=1002" in proc.log
    assert "code=1001 server shutting down" in proc.log
