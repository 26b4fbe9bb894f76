"""Plain requests over real sockets: keep-alive, pipelining, CORS, and every bad input."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from sse.io.server import Server
from tests.support.client import (
    Connection,
    EventStream,
    post_message,
    raw_exchange,
    request,
    wait_until,
)
from tests.support.servers import MakeServer

JSON = [("content-type", "application/json")]


def _error_of(body: bytes) -> str:
    payload = json.loads(body)
    assert isinstance(payload, dict)
    return str(payload["error"])


async def test_keep_alive_serves_several_requests_on_one_connection(server: Server) -> None:
    conn = await Connection.open(server.address)
    for i in range(3):
        body = json.dumps({"message": f"k{i}"}).encode()
        response = await conn.request("POST", "/send-message", JSON, body)
        assert response.status == 200
    health = await conn.request("GET", "/healthz")
    assert health.status == 200
    await conn.close()


async def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    one = b'{"message": "first"}'
    data = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /send-message HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%b"
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ) % (len(one), one)
    out = await raw_exchange(server.address, data)
    statuses = re.findall(rb"HTTP/1.1 (\d{3}) ", out)
    assert statuses == [b"200", b"200", b"404"]
    assert out.index(b'"status": "ok"') < out.index(b"Message sent successfully!")


async def test_http10_request_is_answered_and_closed(server: Server) -> None:
    out = await raw_exchange(server.address, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close" in out.lower()
    assert json.loads(out.split(b"\r\n\r\n", 1)[1])["status"] == "ok"


async def test_healthz_reports_open_streams_and_uptime(server: Server) -> None:
    stream = await EventStream.open(server.address)
    await wait_until(lambda: len(server.streams) == 1)
    health = (await request(server.address, "GET", "/healthz")).json()
    assert isinstance(health, dict)
    assert health["status"] == "ok"
    assert health["streams"] == 1
    assert health["connections"] == 2
    assert health["uptime_s"] >= 0
    assert health["broadcast_ms"]["count"] == 1  # the join announcement
    await stream.close()


async def test_healthz_reports_how_long_broadcasts_took(make_server: MakeServer) -> None:
    server = await make_server(join_announcement=False)
    health = (await request(server.address, "GET", "/healthz")).json()
    assert health["broadcast_ms"] == {"count": 0}
    streams = [await EventStream.open(server.address) for _ in range(3)]
    await wait_until(lambda: len(server.streams) == 3)
    for text in ("one", "two"):
        assert (await post_message(server.address, text)).status == 200
        for stream in streams:
            assert (await stream.next_event()).data == text
    took = (await request(server.address, "GET", "/healthz")).json()["broadcast_ms"]
    assert isinstance(took, dict)
    # Each POST was answered before the next was sent: two broadcasts; the lobby's
    # JSON copies (published once kept, behind the answer) go in their own or ride
    # along with a later one.
    assert 2 <= took["count"] <= 4
    assert 0 <= took["p50"] <= took["max"]
    assert 0 <= took["last"] <= took["max"]
    for stream in streams:
        await stream.close()


async def test_page_is_served_at_root_with_its_assets(server: Server) -> None:
    page = await request(server.address, "GET", "/")
    assert page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert b"<html" in page.body.lower()
    # Module scripts must be served as JavaScript, or the browser refuses them.
    assets = [("/main.js", "text/javascript"), ("/live.js", "text/javascript")]
    assets += [("/style.css", "text/css"), ("/chat.css", "text/css")]
    for asset, kind in assets:
        response = await request(server.address, "GET", asset)
        assert response.status == 200
        assert response.headers["content-type"].startswith(kind)


async def test_head_gets_the_length_of_get_and_no_body(server: Server) -> None:
    get = await request(server.address, "GET", "/")
    head = await request(server.address, "HEAD", "/")
    assert head.status == 200
    assert head.body == b""
    assert head.headers["content-length"] == str(len(get.body))


async def test_unknown_path_is_404_with_json(server: Server) -> None:
    response = await request(server.address, "GET", "/../etc/passwd")
    assert response.status == 404
    assert "no such path" in _error_of(response.body)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/events", "GET, HEAD, OPTIONS"),
        ("GET", "/send-message", "POST, OPTIONS"),
        ("DELETE", "/healthz", "GET, HEAD, OPTIONS"),
    ],
)
async def test_wrong_method_is_405_with_allow(
    server: Server, method: str, path: str, allow: str
) -> None:
    response = await request(server.address, method, path)
    assert response.status == 405
    assert response.headers["allow"] == allow
    assert "not allowed" in _error_of(response.body)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid UTF-8"),
        (b"[1, 2]", "must be a JSON object"),
        (b"{}", 'missing "message"'),
        (b'{"message": 42}', '"message" must be a string'),
        (b'{"message": null}', '"message" must be a string'),
        (b'{"message": "\\ud800"}', "lone surrogate"),
        (b"[" * 60_000, "nested too deeply"),
    ],
)
async def test_bad_json_body_is_400_naming_the_problem(
    server: Server, body: bytes, problem: str
) -> None:
    response = await request(server.address, "POST", "/send-message", JSON, body)
    assert response.status == 400
    assert response.headers["content-type"] == "application/json"
    assert problem in _error_of(response.body)


async def test_non_json_media_type_is_415(server: Server) -> None:
    response = await request(
        server.address,
        "POST",
        "/send-message",
        [("content-type", "text/plain")],
        b'{"message": "x"}',
    )
    assert response.status == 415


async def test_body_over_the_limit_is_413_and_closes(make_server: MakeServer) -> None:
    server = await make_server(max_body_bytes=100)
    body = json.dumps({"message": "x" * 200}).encode()
    out = await raw_exchange(
        server.address,
        b"POST /send-message HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(body), body),
    )
    assert out.startswith(b"HTTP/1.1 413 ")
    assert b"larger than the limit of 100 bytes" in out


async def test_chunked_body_over_the_limit_is_413(make_server: MakeServer) -> None:
    server = await make_server(max_body_bytes=100)
    chunk = b'{"message": "' + b"y" * 150 + b'"}'
    out = await raw_exchange(
        server.address,
        b"POST /send-message HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (len(chunk), chunk),
    )
    assert out.startswith(b"HTTP/1.1 413 ")


async def test_body_at_the_limit_is_accepted(make_server: MakeServer) -> None:
    server = await make_server(max_body_bytes=100)
    body = b'{"message": "' + b"z" * (100 - 15) + b'"}'
    assert len(body) == 100
    response = await request(server.address, "POST", "/send-message", JSON, body)
    assert response.status == 200


async def test_malformed_request_line_is_400(server: Server) -> None:
    out = await raw_exchange(server.address, b"THIS IS NOT HTTP\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")


async def test_bad_header_is_400(server: Server) -> None:
    out = await raw_exchange(server.address, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")


async def test_header_block_over_the_limit_is_431(make_server: MakeServer) -> None:
    server = await make_server(max_header_bytes=1024)
    out = await raw_exchange(
        server.address, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n"
    )
    assert out.startswith(b"HTTP/1.1 431 ")


async def test_bytes_that_never_end_a_line_get_431(make_server: MakeServer) -> None:
    server = await make_server(max_header_bytes=1024)
    out = await raw_exchange(server.address, b"G" * 5000)
    assert out.startswith(b"HTTP/1.1 431 ")


async def test_slowloris_headers_are_cut_off_by_the_header_timeout(make_server: MakeServer) -> None:
    server = await make_server(header_timeout_s=0.3)
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(b"GET / HTTP/1.1\r\n")
    for _ in range(5):
        writer.write(b"X-Slow: 1\r\n")
        await asyncio.sleep(0.1)  # the trickle itself, not a wait for a condition
    data = await asyncio.wait_for(reader.read(), 5)
    assert data.startswith(b"HTTP/1.1 408 ")
    writer.close()
    await wait_until(lambda: not server.connections, what="slow connection closed")


async def test_idle_keep_alive_connection_is_closed_quietly(make_server: MakeServer) -> None:
    server = await make_server(header_timeout_s=0.2)
    reader, writer = await asyncio.open_connection(*server.address)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_slow_body_gets_408(make_server: MakeServer) -> None:
    server = await make_server(body_timeout_s=0.2)
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(b"POST /send-message HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
    data = await asyncio.wait_for(reader.read(), 5)
    assert data.startswith(b"HTTP/1.1 408 ")
    writer.close()


async def test_bad_input_does_not_disturb_open_streams(make_server: MakeServer) -> None:
    server = await make_server(join_announcement=False, max_header_bytes=1024)
    stream = await EventStream.open(server.address)
    await raw_exchange(server.address, b"NOT HTTP\r\n\r\n")
    await raw_exchange(server.address, b"G" * 5000)
    await request(server.address, "POST", "/send-message", JSON, b"{bad")
    await post_message(server.address, "still here")
    assert (await stream.next_event()).data == "still here"
    await stream.close()


async def test_preflight_allows_the_json_post_from_another_origin(server: Server) -> None:
    response = await request(
        server.address,
        "OPTIONS",
        "/send-message",
        [
            ("origin", "http://elsewhere.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ],
    )
    assert response.status == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-allow-headers"] == "content-type"


async def test_allow_list_echoes_a_listed_origin_and_refuses_others(
    make_server: MakeServer,
) -> None:
    server = await make_server(cors_origins=("http://good.example",))
    good = await post_message_from(server, "http://good.example")
    assert good.headers["access-control-allow-origin"] == "http://good.example"
    assert "Origin" in good.headers["vary"]
    bad = await post_message_from(server, "http://evil.example")
    assert "access-control-allow-origin" not in bad.headers
    stream = await EventStream.open(server.address, headers=[("origin", "http://good.example")])
    assert stream.headers["access-control-allow-origin"] == "http://good.example"
    await stream.close()


async def test_requests_without_origin_get_no_cors_headers(server: Server) -> None:
    response = await post_message(server.address, "same origin")
    assert not any(name.startswith("access-control-") for name in response.headers)


async def post_message_from(server: Server, origin: str) -> object:
    return await request(
        server.address, "POST", "/send-message", [*JSON, ("origin", origin)], b'{"message": "o"}'
    )


async def test_stream_past_the_connection_cap_gets_200_retry_and_is_closed(
    make_server: MakeServer,
) -> None:
    server = await make_server(max_connections=1, overload_retry_ms=20_000, retry_jitter_ms=500)
    held = await EventStream.open(server.address)
    await wait_until(lambda: len(server.streams) == 1)
    refused = await EventStream.open(server.address)
    assert refused.status == 200
    assert refused.headers["content-type"] == "text/event-stream"
    await refused.wait_ended()
    assert refused.decoder.retry_ms is not None
    assert 20_000 <= refused.decoder.retry_ms <= 20_500
    post = await request(server.address, "POST", "/send-message", JSON, b'{"message": "m"}')
    assert post.status == 503
    assert post.headers["retry-after"] == "20"
    assert len(server.streams) == 1
    await held.close()
