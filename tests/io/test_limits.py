"""Every per-node limit over real sockets: the exact refusal, and another client untouched.

Clients are loopback source addresses: 127.0.0.2 and 127.0.0.3 are two
machines to the server. Limits are tiny and slow to refill (one per ten
seconds or more), so what a test sees does not depend on how fast it runs.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from sse.io.server import Server
from sse.limits.gcra import Rate
from sse.limits.policy import GUEST_IP_FACTOR, Limits
from tests.support.client import (
    DEFAULT,
    Connection,
    CookieJar,
    EventStream,
    Headers,
    Response,
    cookie_headers,
    event_data,
    events_until,
    json_object,
    request,
    wait_until,
)
from tests.support.fake_openai import FakeOpenAI, Script
from tests.support.servers import MakeServer, ServerProcess
from tests.support.sockets import closed_by_server

A, B = "127.0.0.2", "127.0.0.3"
JSON = [("content-type", "application/json")]
Spawn = Callable[..., ServerProcess]


# -- helpers: a client at a given source address --------------------------------------


async def _request(
    server: Server,
    source: str,
    method: str,
    target: str,
    headers: Headers = (),
    body: bytes = b"",
    jar: CookieJar | None = DEFAULT,
) -> Response:
    conn = await Connection.open(server.address, jar, local_addr=(source, 0))
    try:
        return await conn.request(method, target, headers, body)
    finally:
        await conn.close()


async def _stream(
    server: Server, source: str, target: str = "/events", jar: CookieJar | None = DEFAULT
) -> EventStream:
    conn = await Connection.open(server.address, jar, local_addr=(source, 0))
    await conn.send_request("GET", target, [("accept", "text/event-stream")])
    status, headers = await conn.read_head()
    return EventStream(conn, status, headers)


async def _post_room(
    server: Server, source: str, message: str, headers: Headers = (), jar: CookieJar | None = None
) -> Response:
    body = json.dumps({"message": message}).encode()
    return await _request(server, source, "POST", "/send-message", [*JSON, *headers], body, jar)


async def _create(server: Server, source: str, jar: CookieJar | None = DEFAULT) -> Response:
    return await _request(server, source, "POST", "/conversations", jar=jar)


async def _created(server: Server, source: str, jar: CookieJar | None = DEFAULT) -> str:
    response = await _create(server, source, jar)
    assert response.status == 201, response.body
    return str(json_object(response)["id"])


async def _post(
    server: Server, source: str, cid: str, content: str, jar: CookieJar | None = DEFAULT
) -> Response:
    body = json.dumps({"content": content}).encode()
    return await _request(server, source, "POST", f"/conversations/{cid}/messages", JSON, body, jar)


async def _transcript(server: Server, cid: str, jar: CookieJar | None = DEFAULT) -> list[str]:
    response = await _request(server, A, "GET", f"/conversations/{cid}", jar=jar)
    assert response.status == 200
    return [m["content"] for m in json_object(response)["messages"]]


async def _limits_report(server: Server) -> dict[str, Any]:
    response = await request(server.address, "GET", "/healthz", jar=None)
    assert response.status == 200
    report = json_object(response)["limits"]
    assert isinstance(report, dict)
    return report


def _assert_429(response: Response, limit: str) -> int:
    """The refusal of a POST over `limit`; returns its retry after (seconds)."""
    assert response.status == 429, response.body
    body = json_object(response)
    assert body.keys() == {"error", "limit", "retry_after"}
    assert body["limit"] == limit
    assert isinstance(body["error"], str)
    assert body["error"]
    retry_after = body["retry_after"]
    assert isinstance(retry_after, int)
    assert retry_after >= 1
    assert response.headers["retry-after"] == str(retry_after)
    return retry_after


async def _assert_busy(stream: EventStream, limit: str) -> None:
    """A stream over `limit`: 200 event stream, `retry:`, `event: busy`, and the end."""
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    event = await stream.next_event()
    assert event.type == "busy"
    data = json.loads(event.data)
    assert data.keys() == {"limit", "message", "retry_after_ms"}
    assert data["limit"] == limit
    assert data["message"]
    await stream.wait_ended()
    retry = re.search(rb"^retry: (\d+)$", bytes(stream.raw), re.MULTILINE)
    assert retry is not None, bytes(stream.raw)
    assert int(retry.group(1)) == data["retry_after_ms"] >= 1
    await stream.close()


async def _assert_live(stream: EventStream) -> None:
    """An accepted room stream: 200, and its first event is a real one (the join)."""
    assert stream.status == 200
    event = await stream.next_event()
    assert event.type == "message", event


def _url(server: Server, path: str = "/ws") -> str:
    host, port = server.address
    return f"ws://{host}:{port}{path}"


async def _recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), timeout)
    payload = json.loads(message)
    assert isinstance(payload, dict)
    return payload


# -- room posts -------------------------------------------------------------------------


async def test_room_posts_past_the_burst_get_429_and_are_never_published(
    make_server: MakeServer,
) -> None:
    server = await make_server(
        limits="on", room_posts_per_s=0.1, room_post_burst=3, join_announcement=False
    )
    watcher = await _stream(server, B)
    assert watcher.status == 200
    statuses = []
    for n in range(5):
        response = await _post_room(server, A, f"a{n}")
        statuses.append(response.status)
        if response.status == 429:
            assert _assert_429(response, "room_posts") <= 10
    assert statuses == [200, 200, 200, 429, 429]
    assert (await _post_room(server, B, "from b")).status == 200
    events = await watcher.events(4)
    assert [e.data for e in events] == ["a0", "a1", "a2", "from b"]
    await watcher.close()
    assert (await _limits_report(server))["refused"] == {"room_posts": 2}


async def test_a_socket_send_over_the_limit_gets_an_error_frame_and_stays_open(
    make_server: MakeServer,
) -> None:
    server = await make_server(
        limits="on", room_posts_per_s=0.1, room_post_burst=2, join_announcement=False
    )
    async with connect(_url(server), local_addr=(A, 0)) as ws:
        acks, published = [], []
        for n in range(2):
            await ws.send(json.dumps({"type": "send", "message": f"w{n}"}))
            while len(acks) <= n:
                frame = await _recv(ws)
                (acks if frame.get("type") == "ack" else published).append(frame)
        await ws.send(json.dumps({"type": "send", "message": "one too many"}))
        frame = await _recv(ws)
        while frame.get("event") == "message":
            published.append(frame)
            frame = await _recv(ws)
        assert frame["type"] == "error"
        assert frame["status"] == 429
        assert frame["error"]
        # Still open: it answers a ping and receives what another address posts.
        await asyncio.wait_for(await ws.ping(), 5)
        assert (await _post_room(server, B, "from b")).status == 200
        while len(published) < 3:
            published.append(await _recv(ws))
        assert [f["data"] for f in published] == ["w0", "w1", "from b"]
    assert (await _limits_report(server))["refused"] == {"room_posts": 1}


async def test_a_guest_posting_to_the_room_is_counted_as_itself_wherever_it_is(
    make_server: MakeServer,
) -> None:
    server = await make_server(limits="on", room_posts_per_s=0.1, room_post_burst=2)
    guest, other = CookieJar(), CookieJar()
    for jar in (guest, other):
        assert (await _request(server, A, "GET", "/me", jar=jar)).status == 200
    for n in range(2):
        assert (await _post_room(server, A, f"g{n}", jar=guest)).status == 200
    _assert_429(await _post_room(server, A, "g2", jar=guest), "room_posts")
    # Its cookie follows it to another address; another guest at its address is
    # counted apart (the address allows ten times one guest's).
    _assert_429(await _post_room(server, B, "g3", jar=guest), "room_posts")
    assert (await _post_room(server, A, "o0", jar=other)).status == 200
    # Without a cookie, 127.0.0.2 is one client of its own: its address's count.
    assert (await _post_room(server, A, "anonymous")).status == 200
    assert (await _limits_report(server))["refused"] == {"room_posts": 2}


async def test_a_conversation_socket_over_the_reply_rate_gets_a_429_frame(
    make_server: MakeServer,
) -> None:
    server = await make_server(limits="on", replies_per_min=1)
    cid = await _created(server, A)
    url = _url(server, f"/conversations/{cid}/ws")
    async with connect(url, additional_headers=cookie_headers(server.address)) as ws:
        await ws.send(json.dumps({"type": "message", "content": "one"}))
        frames = [await _recv(ws)]
        while frames[-1].get("event") != "done":
            frames.append(await _recv(ws))
        assert any(f.get("type") == "ack" for f in frames)
        await ws.send(json.dumps({"type": "message", "content": "two"}))
        refused = await _recv(ws)
        assert refused["type"] == "error"
        assert refused["status"] == 429
        await asyncio.wait_for(await ws.ping(), 5)
    assert await _transcript(server, cid) == ["one", "You said: one"]


# -- conversations, replies -------------------------------------------------------------


async def test_conversations_past_the_limit_get_429_and_none_is_created(
    make_server: MakeServer,
) -> None:
    server = await make_server(limits="on", conversations_per_min=2)
    await _created(server, A)
    await _created(server, A)
    _assert_429(await _create(server, A), "conversations")
    listed = await _request(server, A, "GET", "/conversations")
    assert len(json_object(listed)["conversations"]) == 2
    # The identity is counted, not the address: from 127.0.0.3 it is still refused,
    _assert_429(await _create(server, B), "conversations")
    # and another person from either address is not.
    await _created(server, A, CookieJar())
    await _created(server, B, CookieJar())
    assert (await _limits_report(server))["refused"] == {"conversations": 2}


async def test_replies_past_the_limit_get_429_and_the_message_is_not_stored(
    make_server: MakeServer,
) -> None:
    server = await make_server(limits="on", replies_per_min=2)
    cid = await _created(server, A)
    stream = await _stream(server, A, f"/conversations/{cid}/events")
    for content in ("one", "two"):
        assert (await _post(server, A, cid, content)).status == 202
        await events_until(stream, "done")
    before = await _transcript(server, cid)
    assert before == ["one", "You said: one", "two", "You said: two"]
    _assert_429(await _post(server, A, cid, "three"), "replies")
    assert await _transcript(server, cid) == before
    # Another person is not affected.
    other = CookieJar()
    theirs = await _created(server, A, other)
    assert (await _post(server, A, theirs, "hi", other)).status == 202
    await stream.close()
    assert (await _limits_report(server))["refused"] == {"replies": 1}


async def test_a_second_reply_at_once_waits_for_the_first_to_finish(
    make_server: MakeServer,
) -> None:
    server = await make_server(limits="on", replies_at_once=1, echo_delay_s=0.2)
    first, second = await _created(server, A), await _created(server, A)
    stream = await _stream(server, A, f"/conversations/{first}/events")
    assert (await _post(server, A, first, "slow one")).status == 202
    _assert_429(await _post(server, A, second, "meanwhile"), "replies_at_once")
    assert await _transcript(server, second) == []
    # Another person's reply is not held up.
    other = CookieJar()
    theirs = await _created(server, A, other)
    assert (await _post(server, A, theirs, "mine", other)).status == 202
    await events_until(stream, "done")
    await stream.close()
    # `done` is published once the slot is given back.
    assert (await _post(server, A, second, "now")).status == 202
    assert (await _limits_report(server))["refused"] == {"replies_at_once": 1}


async def test_a_message_refused_while_a_reply_runs_costs_no_reply_per_minute(
    make_server: MakeServer,
) -> None:
    server = await make_server(limits="on", replies_at_once=1, replies_per_min=2, echo_delay_s=0.1)
    first, second = await _created(server, A), await _created(server, A)
    stream = await _stream(server, A, f"/conversations/{first}/events")
    assert (await _post(server, A, first, "slow one")).status == 202
    for _ in range(3):
        _assert_429(await _post(server, A, second, "meanwhile"), "replies_at_once")
    await events_until(stream, "done")
    # The second of two a minute: the refused ones were not counted.
    assert (await _post(server, A, second, "now")).status == 202
    await stream.close()
    assert (await _limits_report(server))["refused"] == {"replies_at_once": 3}


async def test_a_stopped_or_deleted_reply_gives_its_slot_back(make_server: MakeServer) -> None:
    server = await make_server(limits="on", replies_at_once=1, echo_delay_s=0.2)
    first, second, third = [await _created(server, A) for _ in range(3)]
    stream = await _stream(server, A, f"/conversations/{first}/events")
    assert (await _post(server, A, first, "slow one")).status == 202
    _assert_429(await _post(server, A, second, "meanwhile"), "replies_at_once")
    stopped = await _request(server, A, "POST", f"/conversations/{first}/stop")
    assert json_object(stopped)["stopped"] is True
    assert event_data((await events_until(stream, "done"))[-1])["finish_reason"] == "cancelled"
    await stream.close()
    assert (await _post(server, A, second, "now")).status == 202
    deleted = await _request(server, A, "DELETE", f"/conversations/{second}")
    assert deleted.status == 204
    await wait_until(lambda: not server.chat.generating(), what="the deleted reply to stop")
    assert (await _post(server, A, third, "and now")).status == 202


async def test_a_stream_the_server_ends_gives_its_slot_back(make_server: MakeServer) -> None:
    server = await make_server(limits="on", streams_per_identity=1)
    first, second = await _created(server, A), await _created(server, A)
    stream = await _stream(server, A, f"/conversations/{first}/events")
    await _assert_busy(await _stream(server, A, f"/conversations/{second}/events"), "streams")
    assert (await _request(server, A, "DELETE", f"/conversations/{first}")).status == 204
    assert (await stream.next_event()).type == "deleted"
    await stream.wait_ended()
    await stream.close()
    await wait_until(lambda: not server.streams, what="the ended stream to be gone")
    reopened = await _stream(server, A, f"/conversations/{second}/events")
    assert (await _post(server, A, second, "hello")).status == 202
    assert (await reopened.next_event()).type == "user"
    await reopened.close()


async def test_a_message_refused_with_409_gives_its_reply_slot_back(
    make_server: MakeServer,
) -> None:
    server = await make_server(limits="on", replies_at_once=2, echo_delay_s=0.1)
    first, second = await _created(server, A), await _created(server, A)
    stream = await _stream(server, A, f"/conversations/{first}/events")
    assert (await _post(server, A, first, "slow one")).status == 202
    for _ in range(3):
        assert (await _post(server, A, first, "still replying")).status == 409
    await events_until(stream, "done")
    # Two at once are allowed: a reply in one conversation, and one in the other.
    assert (await _post(server, A, first, "again")).status == 202
    assert (await _post(server, A, second, "and here")).status == 202
    await stream.close()


async def test_accounts_are_counted_as_themselves_and_never_by_address(
    make_server: MakeServer,
) -> None:
    server = await make_server(limits="on", auth="accounts", conversations_per_min=1)
    people = [CookieJar() for _ in range(GUEST_IP_FACTOR + 2)]
    for n, jar in enumerate(people):
        body = json.dumps({"username": f"user{n}", "password": "correct horse"}).encode()
        signed_up = await _request(server, A, "POST", "/auth/signup", JSON, body, jar)
        assert signed_up.status == 201, signed_up.body
    # More accounts than the guests of one address could share: each has its own.
    for jar in people:
        assert (await _create(server, A, jar)).status == 201
    for jar in people[:2]:
        _assert_429(await _create(server, A, jar), "conversations")
    assert (await _limits_report(server))["refused"] == {"conversations": 2}


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as upstream:
        yield upstream


async def _relay(make_server: MakeServer, fake: FakeOpenAI, **overrides: Any) -> Server:
    return await make_server(
        limits="on",
        model="openai",
        model_url=fake.url,
        model_name="gpt-test",
        model_api_key="sk-test",
        **overrides,
    )


async def test_replies_past_the_model_concurrency_get_429_for_everyone(
    make_server: MakeServer, fake: FakeOpenAI
) -> None:
    server = await _relay(make_server, fake, model_concurrency=1)
    release = asyncio.Event()
    fake.script = Script(pieces=["held"], hold={0: release})
    mine = await _created(server, A)
    stream = await _stream(server, A, f"/conversations/{mine}/events")
    assert (await _post(server, A, mine, "first")).status == 202
    await wait_until(lambda: len(fake.requests) == 1, what="the upstream to be asked")
    # The model is this node's: another person at another address waits as well.
    other = CookieJar()
    theirs = await _created(server, B, other)
    _assert_429(await _post(server, B, theirs, "second", other), "model_concurrency")
    assert await _transcript(server, theirs, other) == []
    release.set()
    await events_until(stream, "done")
    await stream.close()
    fake.script = Script(pieces=["ok"])
    assert (await _post(server, B, theirs, "second", other)).status == 202


async def test_a_spent_daily_budget_gets_429_and_an_error_event(
    make_server: MakeServer, fake: FakeOpenAI
) -> None:
    # No usage from the fake: 40 characters are counted as 10 tokens, over the 5.
    server = await _relay(make_server, fake, model_guest_daily_tokens=5)
    fake.script = Script(pieces=["x" * 40])
    cid = await _created(server, A)
    stream = await _stream(server, A, f"/conversations/{cid}/events")
    assert (await _post(server, A, cid, "first")).status == 202
    await events_until(stream, "done")
    before = await _transcript(server, cid)
    refused = await _post(server, A, cid, "second")
    assert _assert_429(refused, "model_daily_tokens") <= 86400
    assert "resets at" in json_object(refused)["error"]
    told = await stream.next_event()
    assert told.type == "error"
    assert event_data(told) == {"message_id": None, "message": json_object(refused)["error"]}
    assert await _transcript(server, cid) == before
    assert len(fake.requests) == 1
    # Another guest at the same address has a budget of its own (the address: 10x).
    other = CookieJar()
    theirs = await _created(server, A, other)
    assert (await _post(server, A, theirs, "mine", other)).status == 202
    await stream.close()
    assert (await _limits_report(server))["refused"] == {"model_daily_tokens": 1}


# -- streams ----------------------------------------------------------------------------


async def test_streams_past_the_identity_cap_get_busy_and_a_closed_one_frees_its_slot(
    make_server: MakeServer,
) -> None:
    server = await make_server(limits="on", streams_per_identity=2)
    cid = await _created(server, A)
    target = f"/conversations/{cid}/events"
    held = [await _stream(server, A, target), await _stream(server, B, target)]
    assert [s.status for s in held] == [200, 200]
    await wait_until(lambda: len(server.streams) == 2, what="two open streams")
    await _assert_busy(await _stream(server, A, target), "streams")
    # A WebSocket over the cap: 101, then close code 1013 (try again later).
    ws_url = _url(server, f"/conversations/{cid}/ws")
    async with connect(ws_url, additional_headers=cookie_headers(server.address)) as ws:
        closed = await closed_by_server(ws)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1013
    assert closed.rcvd.reason
    # Another person has streams of their own.
    other = CookieJar()
    theirs = await _created(server, A, other)
    elsewhere = await _stream(server, A, f"/conversations/{theirs}/events", other)
    assert (await _post(server, A, theirs, "live?", other)).status == 202
    assert (await elsewhere.next_event()).type == "user"
    await elsewhere.close()
    # Closing one gives its slot back.
    await held.pop().close()
    await wait_until(lambda: len(server.streams) == 1, what="the closed stream to be gone")
    reopened = await _stream(server, A, target)
    assert (await _post(server, A, cid, "hello")).status == 202
    assert (await reopened.next_event()).type == "user"
    for stream in (*held, reopened):
        await stream.close()
    assert (await _limits_report(server))["refused"] == {"streams": 2}


async def test_streams_past_the_address_cap_get_busy_and_other_addresses_do_not(
    make_server: MakeServer,
) -> None:
    server = await make_server(limits="on", streams_per_ip=2)
    held = [await _stream(server, A), await _stream(server, A)]
    for stream in held:
        await _assert_live(stream)
    await _assert_busy(await _stream(server, A), "streams_per_ip")
    async with connect(_url(server), local_addr=(A, 0)) as ws:
        closed = await closed_by_server(ws)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1013
    other = await _stream(server, B)
    await _assert_live(other)
    await other.close()
    await held.pop().close()
    await wait_until(lambda: len(server.streams) == 1, what="the closed stream to be gone")
    # A socket takes the freed slot, and gives it back when it closes.
    async with connect(_url(server), local_addr=(A, 0)) as ws:
        assert (await _recv(ws))["event"] == "message"
        await _assert_busy(await _stream(server, A), "streams_per_ip")
    await wait_until(lambda: not server.sockets, what="the socket to be gone")
    reopened = await _stream(server, A)
    await _assert_live(reopened)
    for stream in (*held, reopened):
        await stream.close()
    assert (await _limits_report(server))["refused"] == {"streams_per_ip": 3}


async def test_a_stream_refused_for_its_identity_holds_no_slot_of_its_address(
    make_server: MakeServer,
) -> None:
    server = await make_server(limits="on", streams_per_identity=1, streams_per_ip=2)
    people = [CookieJar() for _ in range(3)]
    cids = [await _created(server, A, jar) for jar in people]
    held = [await _stream(server, A, f"/conversations/{cids[0]}/events", people[0])]
    for _ in range(3):
        refused = await _stream(server, A, f"/conversations/{cids[0]}/events", people[0])
        await _assert_busy(refused, "streams")
    # The address's second slot is still free: the refusals gave theirs back.
    held.append(await _stream(server, A, f"/conversations/{cids[1]}/events", people[1]))
    assert (await _post(server, A, cids[1], "live?", people[1])).status == 202
    assert (await held[-1].next_event()).type == "user"
    refused = await _stream(server, A, f"/conversations/{cids[2]}/events", people[2])
    await _assert_busy(refused, "streams_per_ip")
    for stream in held:
        await stream.close()
    assert (await _limits_report(server))["refused"] == {"streams": 3, "streams_per_ip": 1}


async def test_stream_opens_past_the_rate_get_busy(make_server: MakeServer) -> None:
    # 0.2 a second bursts 10x: two at once, then one per five seconds.
    server = await make_server(limits="on", stream_opens_per_s=0.2)
    held = [await _stream(server, A), await _stream(server, A)]
    for stream in held:
        await _assert_live(stream)
    await _assert_busy(await _stream(server, A), "stream_opens")
    other = await _stream(server, B)
    await _assert_live(other)
    for stream in (*held, other):
        await stream.close()
    assert (await _limits_report(server))["refused"] == {"stream_opens": 1}


# -- requests, guests -------------------------------------------------------------------


async def test_requests_past_the_rate_get_429_or_busy_and_probes_never_do(
    make_server: MakeServer,
) -> None:
    # 0.1 a second bursts 5x, rounded: one request, then one per ten seconds.
    server = await make_server(limits="on", requests_per_s=0.1)
    assert (await _post_room(server, A, "first")).status == 200
    _assert_429(await _post_room(server, A, "second"), "requests")
    _assert_429(await _request(server, A, "GET", "/me"), "requests")
    await _assert_busy(await _stream(server, A), "requests")
    for _ in range(20):
        assert (await _request(server, A, "GET", "/healthz")).status == 200
        assert (await _request(server, A, "GET", "/readyz")).status == 200
    assert (await _post_room(server, B, "from b")).status == 200
    assert (await _limits_report(server))["refused"] == {"requests": 3}


async def test_new_guests_past_the_rate_get_429_and_kept_cookies_do_not(
    make_server: MakeServer,
) -> None:
    server = await make_server(limits="on", guests_per_min=2)
    kept = CookieJar()
    first = await _request(server, A, "GET", "/me", jar=kept)
    assert first.status == 200
    assert "set-cookie" in first.headers
    assert (await _request(server, A, "GET", "/me", jar=None)).status == 200
    refused = await _request(server, A, "GET", "/me", jar=None)
    _assert_429(refused, "guests")
    assert "set-cookie" not in refused.headers
    _assert_429(await _create(server, A, jar=None), "guests")
    # The guest who kept its cookie is the same person, not a new guest.
    again = await _request(server, A, "GET", "/me", jar=kept)
    assert again.status == 200
    assert json_object(again)["id"] == json_object(first)["id"]
    assert "set-cookie" not in again.headers
    assert (await _create(server, A, jar=kept)).status == 201
    # New guests from another address are.
    assert (await _request(server, B, "GET", "/me", jar=None)).status == 200
    assert (await _limits_report(server))["refused"] == {"guests": 2}


async def test_the_guests_of_one_address_share_ten_times_one_guests_budget(
    make_server: MakeServer,
) -> None:
    server = await make_server(limits="on", conversations_per_min=1)
    # One guest: a minute's worth at once (1), then one a minute. Every guest of
    # one address together: GUEST_IP_FACTOR times that, so 10 at once.
    limits = Limits(server.config)
    assert limits.conversations == Rate("conversations", 1 / 60, 1)
    assert limits.conversations.scaled(GUEST_IP_FACTOR) == Rate("conversations", 10 / 60, 10)
    guests = [CookieJar() for _ in range(GUEST_IP_FACTOR + 1)]
    statuses = [(await _create(server, A, jar)).status for jar in guests]
    assert statuses == [201] * GUEST_IP_FACTOR + [429]
    last = guests[-1]
    listed = await _request(server, A, "GET", "/conversations", jar=last)
    assert json_object(listed)["conversations"] == []
    # Each of the ten used its own one: from another address too it is refused,
    _assert_429(await _create(server, B, guests[0]), "conversations")
    # while the eleventh, refused for its address only, was charged nothing.
    assert (await _create(server, B, last)).status == 201
    assert (await _limits_report(server))["refused"] == {"conversations": 2}


# -- modes ------------------------------------------------------------------------------


async def test_dry_run_refuses_nothing_and_counts_what_it_would_have(
    make_server: MakeServer,
) -> None:
    server = await make_server(
        limits="dry-run",
        room_posts_per_s=0.1,
        room_post_burst=1,
        conversations_per_min=1,
        streams_per_ip=1,
        stream_opens_per_s=0.1,
        requests_per_s=0.1,
        guests_per_min=1,
    )
    for n in range(5):
        assert (await _post_room(server, A, f"m{n}")).status == 200
    for _ in range(3):  # the first makes the test's person a guest
        assert (await _create(server, A)).status == 201
    for _ in range(2):
        assert (await _request(server, A, "GET", "/me", jar=None)).status == 200
    held = [await _stream(server, A), await _stream(server, A)]
    for stream in held:
        await _assert_live(stream)
        await stream.close()
    report = await _limits_report(server)
    assert report["mode"] == "dry-run"
    assert report["refused"] == {}
    assert report["would_refuse"] == {
        "requests": 5 + 3 + 2 + 2 - 1,
        "room_posts": 4,
        "conversations": 2,
        "guests": 2,
        "stream_opens": 1,
        "streams_per_ip": 1,
    }
    assert report["clients_tracked"] >= 1


async def test_limits_off_refuse_nothing_far_past_the_tiny_limits(
    make_server: MakeServer,
) -> None:
    server = await make_server(
        limits="off",
        room_posts_per_s=0.1,
        room_post_burst=1,
        conversations_per_min=1,
        replies_per_min=1,
        replies_at_once=1,
        streams_per_identity=1,
        streams_per_ip=1,
        stream_opens_per_s=0.1,
        requests_per_s=0.1,
        guests_per_min=1,
    )
    for n in range(10):
        assert (await _post_room(server, A, f"m{n}")).status == 200
    for _ in range(5):
        assert (await _request(server, A, "GET", "/me", jar=None)).status == 200
    cids = [await _created(server, A) for _ in range(3)]
    for cid in cids:
        assert (await _post(server, A, cid, "hi")).status == 202
    streams = [await _stream(server, A, f"/conversations/{cids[0]}/events") for _ in range(3)]
    streams += [await _stream(server, A) for _ in range(3)]
    for stream in streams[3:]:
        await _assert_live(stream)
    for stream in streams:
        assert stream.status == 200
        await stream.close()
    report = await _limits_report(server)
    assert report["mode"] == "off"
    assert report["refused"] == {}


# -- trusted proxies --------------------------------------------------------------------


async def test_a_trusted_proxy_names_the_client_and_an_untrusted_one_does_not(
    make_server: MakeServer,
) -> None:
    server = await make_server(
        limits="on", trusted_proxies=("127.0.0.2",), room_posts_per_s=0.1, room_post_burst=1
    )

    def via(address: str) -> list[tuple[str, str]]:
        return [("x-forwarded-for", address)]

    # Through the proxy 127.0.0.2: two clients, each with its own burst.
    assert (await _post_room(server, A, "x", via("198.51.100.7"))).status == 200
    assert (await _post_room(server, A, "x", via("198.51.100.8"))).status == 200
    _assert_429(await _post_room(server, A, "x", via("198.51.100.7")), "room_posts")
    _assert_429(await _post_room(server, A, "x", via("198.51.100.8")), "room_posts")
    # From 127.0.0.3 the header is a client's claim: both are 127.0.0.3.
    assert (await _post_room(server, B, "x", via("198.51.100.7"))).status == 200
    _assert_429(await _post_room(server, B, "x", via("198.51.100.8")), "room_posts")
    _assert_429(await _post_room(server, B, "x", via("198.51.100.9")), "room_posts")
    # Through the proxy, a Forwarded of the client's own beside the proxy's
    # X-Forwarded-For: neither is believed, so a new one each time gains nothing.
    for n in range(3):
        forged = [*via("198.51.100.20"), ("forwarded", f"for=192.0.2.{n}")]
        response = await _post_room(server, A, "x", forged)
        assert response.status == (200 if n == 0 else 429)
    assert (await _limits_report(server))["refused"] == {"room_posts": 6}


async def test_the_access_log_shows_the_address_a_trusted_proxy_gave(spawn: Spawn) -> None:
    proc = spawn("--log-format", "json", "--limits", "on", "--trusted-proxy", "127.0.0.2")
    forwarded = [("x-forwarded-for", "198.51.100.7")]
    for source, target in ((A, "/healthz"), (B, "/readyz")):
        conn = await Connection.open(proc.address, None, local_addr=(source, 0))
        try:
            assert (await conn.request("GET", target, forwarded)).status == 200
        finally:
            await conn.close()
    proc.wait_for_log("GET /readyz 200")
    assert proc.terminate() == 0
    records = [json.loads(line) for line in proc.lines]
    ips = {r["route"]: r["client_ip"] for r in records if r["logger"] == "ssechat.access"}
    assert ips == {"/healthz": "198.51.100.7", "/readyz": "127.0.0.3"}
