"""Event streams over real sockets: headers, framing, the seed API, resume, heartbeats."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from sse.app.room import JOIN_ANNOUNCEMENT
from sse.io.server import Server
from sse.protocol.sse import Comment
from tests.support.client import EventStream, post_message, raw_exchange, request, wait_until
from tests.support.servers import MakeServer


async def test_stream_headers_say_event_stream_no_cache_and_no_proxy_buffering(
    server: Server,
) -> None:
    stream = await EventStream.open(
        server.address, headers=[("origin", "http://elsewhere.example")]
    )
    assert stream.status == 200
    assert stream.headers["content-type"] == "text/event-stream"
    assert stream.headers["cache-control"] == "no-cache"
    assert stream.headers["x-accel-buffering"] == "no"
    assert stream.headers["transfer-encoding"] == "chunked"
    assert stream.headers["access-control-allow-origin"] == "*"
    assert "content-length" not in stream.headers
    await stream.close()


async def test_stream_opens_with_a_jittered_retry_chunk_then_the_join_event(server: Server) -> None:
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    size_line = await reader.readuntil(b"\r\n")
    retry_chunk = await reader.readexactly(int(size_line, 16) + 2)
    assert retry_chunk.startswith(b"retry: ")
    assert retry_chunk.endswith(b"\n\r\n")
    retry_ms = int(retry_chunk[7:-3])
    config = server.config
    assert config.retry_ms <= retry_ms <= config.retry_ms + config.retry_jitter_ms
    size_line = await reader.readuntil(b"\r\n")
    join = await reader.readexactly(int(size_line, 16) + 2)
    assert join == f"id: {server.hub.last_id('room')}\ndata: {JOIN_ANNOUNCEMENT}\n\n\r\n".encode()
    writer.close()


async def test_every_new_stream_announces_a_join_to_every_stream(server: Server) -> None:
    first = await EventStream.open(server.address)
    own = await first.next_event()
    assert own.data == JOIN_ANNOUNCEMENT
    second = await EventStream.open(server.address)
    assert (await first.next_event()).data == JOIN_ANNOUNCEMENT
    assert (await second.next_event()).data == JOIN_ANNOUNCEMENT
    await first.close()
    await second.close()


async def test_join_announcement_can_be_turned_off(make_server: MakeServer) -> None:
    server = await make_server(join_announcement=False)
    stream = await EventStream.open(server.address)
    await post_message(server.address, "only this")
    event = await stream.next_event()
    assert event.data == "only this"
    await stream.close()


async def test_post_reaches_every_open_stream_with_the_seed_reply(server: Server) -> None:
    streams = [await EventStream.open(server.address) for _ in range(3)]
    # Stream k sees the joins of itself and of every stream opened after it.
    for k, s in enumerate(streams):
        joins = await s.events(3 - k)
        assert {e.data for e in joins} == {JOIN_ANNOUNCEMENT}
    response = await post_message(server.address, "hello room")
    assert response.status == 200
    assert response.body == b"Message sent successfully!"
    assert response.headers["content-type"].startswith("text/plain")
    for s in streams:
        assert (await s.next_event()).data == "hello room"
        await s.close()


async def test_broadcast_writes_the_same_bytes_to_every_stream(make_server: MakeServer) -> None:
    server = await make_server(join_announcement=False)
    a = await EventStream.open(server.address)
    b = await EventStream.open(server.address)
    await wait_until(lambda: len(server.streams) == 2)
    await post_message(server.address, "same\nbytes")
    await a.next_event()
    await b.next_event()
    frame = f"id: {server.hub.last_id('room')}\ndata: same\ndata: bytes\n\n".encode()
    assert bytes(a.raw).endswith(frame)
    assert bytes(b.raw).endswith(frame)
    await a.close()
    await b.close()


async def test_message_cannot_inject_fields_or_events(make_server: MakeServer) -> None:
    server = await make_server(join_announcement=False)
    stream = await EventStream.open(server.address)
    nasty = "a\r\n\r\ndata: injected\nid: 999\nevent: admin\rretry: 1\n\nb"
    await post_message(server.address, nasty)
    event = await stream.next_event()
    assert event.type == "message"
    assert event.data == "a\n\ndata: injected\nid: 999\nevent: admin\nretry: 1\n\nb"
    assert event.last_event_id == server.hub.last_id("room")
    assert stream.decoder.retry_ms != 1
    await post_message(server.address, "next")
    assert (await stream.next_event()).data == "next"
    await stream.close()


async def test_every_event_carries_an_increasing_id(make_server: MakeServer) -> None:
    server = await make_server(join_announcement=False)
    stream = await EventStream.open(server.address)
    for i in range(5):
        await post_message(server.address, f"m{i}")
    events = await stream.events(5)
    seqs = [int(e.last_event_id.rsplit("-", 1)[1]) for e in events]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 5
    assert [e.data for e in events] == [f"m{i}" for i in range(5)]
    await stream.close()


async def test_reconnect_with_last_event_id_replays_missed_events_in_order_without_duplicates(
    make_server: MakeServer,
) -> None:
    server = await make_server(join_announcement=False)
    stream = await EventStream.open(server.address)
    for i in range(3):
        await post_message(server.address, f"before {i}")
    seen = await stream.events(3)
    await stream.close()
    for i in range(4):
        await post_message(server.address, f"missed {i}")
    again = await EventStream.open(
        server.address, headers=[("last-event-id", seen[-1].last_event_id)]
    )
    await post_message(server.address, "live")
    events = await again.events(5)
    assert [e.data for e in events] == [f"missed {i}" for i in range(4)] + ["live"]
    await again.close()


async def test_last_event_id_query_parameter_resumes_a_first_connection(
    make_server: MakeServer,
) -> None:
    server = await make_server(join_announcement=False)
    await post_message(server.address, "one")
    first_id = server.hub.last_id("room")
    await post_message(server.address, "two")
    stream = await EventStream.open(server.address, f"/events?last_event_id={first_id}")
    event = await stream.next_event()
    assert (event.data, event.last_event_id) == ("two", server.hub.last_id("room"))
    await stream.close()


async def test_header_takes_precedence_over_the_query_parameter(make_server: MakeServer) -> None:
    server = await make_server(join_announcement=False)
    await post_message(server.address, "one")
    one = server.hub.last_id("room")
    await post_message(server.address, "two")
    two = server.hub.last_id("room")
    await post_message(server.address, "three")
    stream = await EventStream.open(
        server.address, f"/events?last_event_id={one}", headers=[("last-event-id", two)]
    )
    assert (await stream.next_event()).data == "three"
    await stream.close()


async def test_id_that_left_the_history_gets_an_explicit_gap_event_then_what_is_kept(
    make_server: MakeServer,
) -> None:
    server = await make_server(join_announcement=False, history_size=3)
    await post_message(server.address, "m0")
    stale = server.hub.last_id("room")
    for i in range(1, 6):
        await post_message(server.address, f"m{i}")
    stream = await EventStream.open(server.address, headers=[("last-event-id", stale)])
    gap = await stream.next_event()
    assert gap.type == "gap"
    notice = json.loads(gap.data)
    assert notice["last_event_id"] == stale
    assert "2 were missed" in notice["message"]
    events = await stream.events(3)
    assert [e.data for e in events] == ["m3", "m4", "m5"]
    await stream.close()


async def test_id_from_before_a_restart_gets_a_gap_event(make_server: MakeServer) -> None:
    server = await make_server(join_announcement=False)
    await post_message(server.address, "kept")
    stream = await EventStream.open(server.address, headers=[("last-event-id", "123-4")])
    gap = await stream.next_event()
    assert gap.type == "gap"
    assert "unknown" in json.loads(gap.data)["message"]
    assert (await stream.next_event()).data == "kept"
    await stream.close()


async def test_idle_stream_gets_a_lone_comment_line_as_heartbeat(make_server: MakeServer) -> None:
    server = await make_server(join_announcement=False, ping_interval_s=0.1)
    stream = await EventStream.open(server.address)
    await post_message(server.address, "x")
    await stream.next_event()
    item = await stream.next_item(timeout=3)
    assert item == Comment("")
    # A lone ":\n" line: no blank line, so no client can invent an empty event.
    assert bytes(stream.raw).endswith(b"\n\n:\n") or bytes(stream.raw).endswith(b":\n:\n")
    assert b":\n\n" not in bytes(stream.raw)
    await stream.close()


async def test_head_on_events_gives_headers_and_opens_no_stream(server: Server) -> None:
    response = await request(server.address, "HEAD", "/events")
    assert response.status == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.body == b""
    assert len(server.streams) == 0


async def test_http10_client_gets_a_close_delimited_stream(make_server: MakeServer) -> None:
    server = await make_server(join_announcement=False)
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(b"GET /events HTTP/1.0\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    await wait_until(lambda: len(server.streams) == 1)
    await post_message(server.address, "for 1.0")
    body = await reader.readuntil(b"data: for 1.0\n\n")
    assert body.startswith(b"retry: ")
    assert b"\r\n" not in body
    writer.close()


async def test_stream_leaves_the_dict_when_its_client_disconnects(server: Server) -> None:
    stream = await EventStream.open(server.address)
    await wait_until(lambda: len(server.streams) == 1)
    await stream.close()
    await wait_until(lambda: len(server.streams) == 0, what="stream dropped")
    assert server.hub.sink_count("room") == 0


async def test_connect_disconnect_churn_leaves_no_stream_behind(make_server: MakeServer) -> None:
    server = await make_server(join_announcement=False)
    for _ in range(5):
        batch = await asyncio.gather(*(EventStream.open(server.address) for _ in range(40)))
        await asyncio.gather(*(s.close() for s in batch[::2]))
        await post_message(server.address, "tick")
        await asyncio.gather(*(s.close() for s in batch[1::2]))
    await wait_until(lambda: not server.streams and not server.connections, what="all closed")
    assert server.hub.sink_count("room") == 0


async def test_half_close_ends_the_stream(server: Server) -> None:
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    await wait_until(lambda: len(server.streams) == 1)
    writer.write_eof()
    await wait_until(lambda: len(server.streams) == 0, what="stream closed on EOF")
    writer.close()


async def test_raw_stream_response_is_chunked_http11(server: Server) -> None:
    data = await raw_exchange(
        server.address, b"HEAD /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"\r\n\r\n")


async def test_a_resuming_stream_is_not_announced_as_a_new_user(server: Server) -> None:
    watcher = await EventStream.open(server.address)
    assert (await watcher.next_event()).data == JOIN_ANNOUNCEMENT
    last = server.hub.last_id("room")
    returning = await EventStream.open(server.address, headers=[("last-event-id", last)])
    await wait_until(lambda: len(server.streams) == 2)
    await post_message(server.address, "after the return")
    assert (await watcher.next_event()).data == "after the return"
    assert (await returning.next_event()).data == "after the return"
    await watcher.close()
    await returning.close()


async def test_client_ids_cannot_forge_log_lines(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ssechat")
    forged = "abc%0A2026-11-24%20WARNING%20ssechat:%20forged"
    stream = await EventStream.open(server.address, f"/events?last_event_id={forged}")
    await stream.next_event()
    await stream.close()
    opened = [r.getMessage() for r in caplog.records if " open for " in r.getMessage()]
    assert opened
    assert all("\n" not in line for line in opened)
    assert "resume='abc\\n2026-11-24 WARNING ssechat: forged'" in opened[0]
