"""Issue 11, hardening: no request wedges a connection; hostile ids, numbers and types."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Mapping
from typing import Any

import pytest
from websockets.asyncio.client import connect

from sse.app.router import App
from sse.app.values import OpenStream, Reply, Request, Result, Route, json_reply
from sse.errors import SSEChatError
from sse.io.server import Server
from sse.pubsub.hub import Resume
from tests.support.client import (
    EventStream,
    cookie_headers,
    events_until,
    json_object,
    post_message,
    raw_exchange,
    request,
    wait_until,
)
from tests.support.redis_server import RedisServer
from tests.support.servers import MakeServer

JSON = [("content-type", "application/json")]
_HUGE_DIGITS = "9" * 5000


class InjectedFault(SSEChatError):
    """A failure a test puts on the request path on purpose."""


def _raise_sync(req: Request, body: bytes, params: Mapping[str, str]) -> Result:
    raise InjectedFault("sync handler")


async def _raise_async(req: Request, body: bytes, params: Mapping[str, str]) -> Result:
    await asyncio.sleep(0)
    raise InjectedFault("async handler")


async def _stream_async(req: Request, body: bytes, params: Mapping[str, str]) -> Result:
    await asyncio.sleep(0)
    return OpenStream("faulty", None)


def _stream_sync(req: Request, body: bytes, params: Mapping[str, str]) -> Result:
    return OpenStream("faulty", None)


def _ok(req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
    return json_reply(200, {"ok": True})


def _with_routes(server: Server) -> None:
    routes = [
        Route("/fault/sync", {"GET": _raise_sync}),
        Route("/fault/async", {"GET": _raise_async}),
        Route("/fault/stream-sync", {"GET": _stream_sync}),
        Route("/fault/stream-async", {"GET": _stream_async}),
        Route("/ok", {"GET": _ok}),
    ]
    # Fault injection on the live server: its own app, plus routes that fail.
    server.app = App(server.config, routes, {}, server.health)


def _failing_attach(*args: Any, **kwargs: Any) -> Resume | Awaitable[Resume]:
    raise InjectedFault("attach")


def _head(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n".encode()


@pytest.mark.parametrize(
    "target", ["/fault/sync", "/fault/async", "/fault/stream-sync", "/fault/stream-async"]
)
async def test_a_failure_at_any_stage_of_a_request_answers_500_and_frees_the_socket(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    server = await make_server()
    _with_routes(server)
    monkeypatch.setattr(server.broker, "attach", _failing_attach)
    reply = await raw_exchange(server.address, _head(target))  # reads until EOF
    assert reply.startswith(b"HTTP/1.1 500 "), reply
    assert b"connection: close" in reply.lower()
    await wait_until(lambda: not server.connections, what="the connection to be forgotten")
    assert not server.streams
    ok = await request(server.address, "GET", "/ok")
    assert ok.status == 200


@pytest.mark.parametrize(
    "target", ["/fault/sync", "/fault/async", "/fault/stream-sync", "/fault/stream-async"]
)
async def test_a_failed_request_is_logged_once_with_its_traceback(
    make_server: MakeServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    target: str,
) -> None:
    server = await make_server()
    _with_routes(server)
    monkeypatch.setattr(server.broker, "attach", _failing_attach)
    await raw_exchange(server.address, _head(target))
    failures = [r for r in caplog.records if r.exc_info and r.name == "ssechat"]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], InjectedFault)


async def _conversation(server: Server) -> str:
    response = await request(server.address, "POST", "/conversations")
    assert response.status == 201
    return str(json_object(response)["id"])


def _huge_id(server: Server) -> str:
    epoch = server.hub.last_id("any").split("-", 1)[0]
    return f"{epoch}-{_HUGE_DIGITS}"


@pytest.mark.parametrize("how", ["header", "query"])
@pytest.mark.parametrize("where", ["room", "conversation"])
async def test_an_oversized_last_event_id_on_an_event_stream_is_a_gap(
    server: Server, how: str, where: str
) -> None:
    path = "/events" if where == "room" else f"/conversations/{await _conversation(server)}/events"
    huge = _huge_id(server)
    headers = [("last-event-id", huge)] if how == "header" else []
    target = path if how == "header" else f"{path}?last_event_id={huge}"
    stream = await EventStream.open(server.address, target, headers)
    try:
        assert stream.status == 200
        seen = await events_until(stream, "gap")
        assert json.loads(seen[-1].data)["last_event_id"] == huge
    finally:
        await stream.close()
    assert (await post_message(server.address, "still here")).status == 200


@pytest.mark.parametrize("how", ["header", "query"])
@pytest.mark.parametrize("where", ["room", "conversation"])
async def test_an_oversized_last_event_id_on_a_websocket_is_a_gap(
    server: Server, how: str, where: str
) -> None:
    path = "/ws" if where == "room" else f"/conversations/{await _conversation(server)}/ws"
    huge = _huge_id(server)
    host, port = server.address
    url = f"ws://{host}:{port}{path}" + ("" if how == "header" else f"?last_event_id={huge}")
    extra = dict(cookie_headers(server.address))
    if how == "header":
        extra["last-event-id"] = huge
    async with connect(url, additional_headers=extra, max_size=None) as ws:
        async with asyncio.timeout(5):
            while True:
                message = json.loads(await ws.recv())
                if message.get("event") == "gap":
                    break
    assert (await post_message(server.address, "still here")).status == 200


@pytest.mark.parametrize("value", ["-", "x-1", "1-2-3", "9" * 250, "epoch-" + _HUGE_DIGITS])
async def test_a_foreign_or_unparseable_last_event_id_is_a_gap(server: Server, value: str) -> None:
    stream = await EventStream.open(server.address, "/events", [("last-event-id", value)])
    try:
        assert stream.status == 200
        await events_until(stream, "gap")
    finally:
        await stream.close()


async def test_json_numbers_too_long_to_read_are_a_400(server: Server) -> None:
    body = b'{"message": "hi", "n": ' + _HUGE_DIGITS.encode() + b"}"
    response = await request(server.address, "POST", "/send-message", JSON, body)
    assert response.status == 400
    assert "number too long" in str(json_object(response)["error"])
    cid = await _conversation(server)
    body = b'{"content": "hi", "n": ' + _HUGE_DIGITS.encode() + b"}"
    target = f"/conversations/{cid}/messages"
    response = await request(server.address, "POST", target, JSON, body)
    assert response.status == 400


@pytest.mark.parametrize("limit", [_HUGE_DIGITS, "%C2%B2", "0", "201"])
async def test_a_list_limit_that_is_not_a_small_whole_number_is_a_400(
    server: Server, limit: str
) -> None:
    response = await request(server.address, "GET", f"/conversations?limit={limit}")
    assert response.status == 400


@pytest.mark.parametrize("path", ["/ws", "conversation"])
async def test_a_websocket_number_too_long_to_read_is_an_error_frame_and_the_socket_stays(
    server: Server, path: str
) -> None:
    if path == "conversation":
        path = f"/conversations/{await _conversation(server)}/ws"
        good: dict[str, object] = {"type": "message", "content": "after"}
    else:
        good = {"type": "send", "message": "after"}
    host, port = server.address
    cookie = cookie_headers(server.address)
    async with connect(f"ws://{host}:{port}{path}", additional_headers=cookie, max_size=None) as ws:
        await ws.send('{"type": "send", "n": ' + _HUGE_DIGITS + "}")
        async with asyncio.timeout(5):
            while True:
                message = json.loads(await ws.recv())
                if message.get("type") == "error" or message.get("event") == "error":
                    break
        assert "number too long" in json.dumps(message)
        await ws.send(json.dumps(good))
        await ws.ping()  # the socket is still open and answering


# -- Expect: 100-continue -------------------------------------------------------


async def _read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    return await asyncio.wait_for(reader.readuntil(marker), 5)


async def test_expect_100_continue_is_answered_before_the_body_is_sent(server: Server) -> None:
    body = json.dumps({"message": "continued"}).encode()
    reader, writer = await asyncio.open_connection(*server.address)
    try:
        writer.write(
            b"POST /send-message HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"expect: 100-continue\r\ncontent-length: %d\r\n\r\n" % len(body)
        )
        assert await _read_until(reader, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        head = await _read_until(reader, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()


async def test_expect_100_continue_with_a_body_over_the_limit_is_a_413_without_100(
    server: Server,
) -> None:
    size = server.config.max_body_bytes + 1
    reply = await raw_exchange(
        server.address,
        b"POST /send-message HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"expect: 100-continue\r\ncontent-length: %d\r\n\r\n" % size,
    )
    assert reply.startswith(b"HTTP/1.1 413 "), reply
    assert b" 100 " not in reply


# -- Content-Type --------------------------------------------------------------


@pytest.mark.parametrize("headers", [[], [("content-type", "text/plain")]])
async def test_a_json_endpoint_refuses_a_body_without_the_json_type(
    server: Server, headers: list[tuple[str, str]]
) -> None:
    body = json.dumps({"message": "hi"}).encode()
    response = await request(server.address, "POST", "/send-message", headers, body)
    assert response.status == 415
    cid = await _conversation(server)
    body = json.dumps({"content": "hi"}).encode()
    target = f"/conversations/{cid}/messages"
    response = await request(server.address, "POST", target, headers, body)
    assert response.status == 415


@pytest.mark.parametrize(
    "media", ["application/json", "Application/JSON; charset=utf-8", "application/ld+json"]
)
async def test_a_json_endpoint_accepts_json_types_in_any_case_with_parameters(
    server: Server, media: str
) -> None:
    body = json.dumps({"message": "hi"}).encode()
    response = await request(
        server.address, "POST", "/send-message", [("content-type", media)], body
    )
    assert response.status == 200


@pytest.mark.parametrize(
    "value", [_HUGE_DIGITS, f"{_HUGE_DIGITS}-{_HUGE_DIGITS}", "1-" + "9" * 250]
)
async def test_an_oversized_last_event_id_on_redis_is_a_gap(
    make_server: MakeServer, redis_server: RedisServer, value: str
) -> None:
    server = await make_server(redis_url=redis_server.url)
    stream = await EventStream.open(server.address, "/events", [("last-event-id", value)])
    try:
        assert stream.status == 200
        await events_until(stream, "gap")
    finally:
        await stream.close()
    assert (await post_message(server.address, "still here")).status == 200


async def test_requests_with_oversized_ids_leave_no_connection_behind(
    make_server: MakeServer,
) -> None:
    server = await make_server(max_connections=3)
    cid = await _conversation(server)
    target = f"/conversations/{cid}/events?last_event_id={_huge_id(server)}"
    for _ in range(5):
        stream = await EventStream.open(server.address, target)
        assert stream.status == 200
        await events_until(stream, "gap")
        await stream.close()
    await wait_until(lambda: not server.connections, what="every connection to be freed")
    assert (await post_message(server.address, "not wedged")).status == 200
