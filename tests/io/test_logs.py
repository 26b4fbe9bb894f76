"""--log-format json and X-Request-Id over real sockets, and no secret in any log line."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from websockets.asyncio.client import connect

from tests.support.client import (
    Connection,
    EventStream,
    json_object,
    raw_exchange,
    request,
    wait_until,
)
from tests.support.servers import MakeServer, ServerProcess

Spawn = Callable[..., ServerProcess]

_COOKIE = "session=cookie-secret-31337"
_TOKEN = "Bearer token-secret-4242"
_MESSAGE = "message-secret-hunter2"
_SECRETS = ("cookie-secret-31337", "token-secret-4242", "message-secret-hunter2", "hunter2")
_JSON = [("content-type", "application/json")]
# The test client connects from here: a proxy of ours, whose X-Request-Id is taken.
_PROXY = ("127.0.0.1",)


def _records(proc: ServerProcess) -> list[dict[str, object]]:
    records = []
    for line in proc.lines:
        record = json.loads(line)  # every line, not only the access lines
        assert isinstance(record, dict), line
        records.append(record)
    return records


def _access(proc: ServerProcess) -> list[dict[str, object]]:
    return [r for r in _records(proc) if r["logger"] == "ssechat.access"]


async def test_json_logs_parse_carry_the_fields_and_hold_no_secret(spawn: Spawn) -> None:
    proc = spawn("--log-format", "json")
    address = proc.address
    # A real session besides the made-up cookie: its value must not be logged either.
    session = (await request(address, "GET", "/me", jar=None)).headers["set-cookie"]
    session_value = session.split(";", 1)[0]
    credentials = [("cookie", f"{_COOKIE}; {session_value}"), ("authorization", _TOKEN)]
    sent = json.dumps({"message": _MESSAGE}).encode()
    post = await request(address, "POST", "/send-message", [*credentials, *_JSON], sent)
    assert post.status == 200
    created = await request(address, "POST", "/conversations", credentials)
    cid = json_object(created)["id"]
    content = json.dumps({"content": _MESSAGE}).encode()
    target = f"/conversations/{cid}/messages"
    posted = await request(address, "POST", target, [*credentials, *_JSON], content)
    assert posted.status < 300, posted.body
    assert (await request(address, "GET", f"/conversations/{cid}", credentials)).status == 200
    # A malformed header line holding a secret: h11 quotes the bytes it refuses.
    bad = b"GET /healthz HTTP/1.1\r\nhost: x\r\ncookie-secret-31337\r\n\r\n"
    assert (await raw_exchange(address, bad)).startswith(b"HTTP/1.1 400 ")
    stream = await EventStream.open(address, headers=credentials)
    await stream.next_event()
    await stream.close()
    proc.wait_for_log('"lifetime_s"')
    assert proc.terminate() == 0
    assert session_value.split("=", 1)[1] not in "".join(proc.lines)

    records = _records(proc)
    for record in records:
        assert {"time", "level", "logger", "event"} <= record.keys(), record
    text = "".join(proc.lines)
    for secret in _SECRETS:
        assert secret not in text
    access = _access(proc)
    by_route = {(r["method"], r["route"]): r for r in access}
    send = by_route[("POST", "/send-message")]
    assert send["status"] == 200
    assert send["bytes"] == len(post.body)
    assert send["client_ip"] == "127.0.0.1"
    assert isinstance(send["duration_ms"], float)
    assert send["request_id"] == post.headers["x-request-id"]
    assert send["event"] == "POST /send-message 200"
    # The pattern, never the path with the conversation's id in it.
    assert ("GET", "/conversations/{id}") in by_route
    assert ("POST", "/conversations/{id}/messages") in by_route
    assert cid not in json.dumps(access)
    opened = by_route[("GET", "/events")]
    assert opened["status"] == 200
    assert opened["bytes"] is None
    closed = [r for r in records if "lifetime_s" in r]
    assert len(closed) == 1
    assert closed[0]["reason"] == "client closed"
    assert isinstance(closed[0]["lifetime_s"], float)
    assert closed[0]["client_ip"] == "127.0.0.1"


async def test_text_logs_stay_the_default(spawn: Spawn) -> None:
    proc = spawn()
    assert (await request(proc.address, "GET", "/healthz")).status == 200
    proc.wait_for_log('"GET /healthz HTTP/1.1" 200')
    with pytest.raises(json.JSONDecodeError):
        json.loads(proc.lines[0])


async def test_a_request_id_from_a_peer_that_is_no_trusted_proxy_is_replaced(
    make_server: MakeServer,
) -> None:
    # Anyone could otherwise write ids into our logs, or collide with others'.
    server = await make_server(trusted_proxies=("10.0.0.0/8",))
    reply = await request(server.address, "GET", "/healthz", [("x-request-id", "chosen-1")])
    assert reply.headers["x-request-id"].startswith(server.node[:12] + "-")


async def test_a_sane_request_id_is_echoed_and_others_are_replaced(
    make_server: MakeServer,
) -> None:
    server = await make_server(trusted_proxies=_PROXY)
    given = "abc.DEF-123_x" + "9" * 115  # 128 characters: the longest taken
    echoed = await request(server.address, "GET", "/healthz", [("x-request-id", given)])
    assert echoed.headers["x-request-id"] == given
    made = set()
    for bad in ("a b", "x" * 129, "id;evil", ""):
        reply = await request(server.address, "GET", "/healthz", [("x-request-id", bad)])
        assert reply.headers["x-request-id"] not in (bad, given)
        made.add(reply.headers["x-request-id"])
    absent = await request(server.address, "GET", "/no-such-path")
    assert absent.status == 404
    made.add(absent.headers["x-request-id"])
    assert len(made) == 5  # a fresh one each time
    assert all(rid.startswith(server.node[:12] + "-") for rid in made)


async def test_every_response_of_a_keep_alive_connection_has_its_own_request_id(
    make_server: MakeServer,
) -> None:
    server = await make_server(trusted_proxies=_PROXY)
    conn = await Connection.open(server.address)
    first = await conn.request("GET", "/healthz", [("x-request-id", "first")])
    second = await conn.request("GET", "/healthz")
    await conn.close()
    assert first.headers["x-request-id"] == "first"
    assert second.headers["x-request-id"] not in ("", "first")


async def test_stream_responses_echo_the_request_id(make_server: MakeServer) -> None:
    server = await make_server(trusted_proxies=_PROXY)
    stream = await EventStream.open(server.address, headers=[("x-request-id", "stream-1")])
    assert stream.headers["x-request-id"] == "stream-1"
    await wait_until(lambda: len(server.streams) == 1)
    await stream.close()
    plain = await EventStream.open(server.address)
    assert plain.headers["x-request-id"].startswith(server.node[:12] + "-")
    await plain.close()


async def test_a_websocket_handshake_echoes_the_request_id(make_server: MakeServer) -> None:
    server = await make_server(trusted_proxies=_PROXY)
    host, port = server.address
    async with connect(f"ws://{host}:{port}/ws", additional_headers={"X-Request-Id": "ws-7"}) as ws:
        assert ws.response is not None
        assert ws.response.headers["x-request-id"] == "ws-7"
