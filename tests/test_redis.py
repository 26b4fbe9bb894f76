"""Several nodes on one real Redis: fan-out, resume anywhere, outages, cross-node stop.

Each node is a `python server.py --redis-url ...` process, as in production;
a few finer points (the attach race) use in-process servers for speed.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import websockets

from sse.wire import DecodedEvent
from tests.client import EventStream, post_message, request, wait_until
from tests.conftest import MakeServer, ServerProcess
from tests.redis_server import RedisServer

Spawn = Callable[..., ServerProcess]
Address = tuple[str, int]


def _entry_id(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


def _assert_once_in_order(events: list[DecodedEvent]) -> None:
    ids = [_entry_id(e.last_event_id) for e in events]
    assert ids == sorted(set(ids)), "events duplicated or out of order"


async def _messages(stream: EventStream, count: int, timeout: float = 10.0) -> list[DecodedEvent]:
    return await stream.events(count, timeout)


def _nodes(spawn: Spawn, redis: RedisServer, count: int, *args: str) -> list[ServerProcess]:
    return [spawn("--redis-url", redis.url, *args) for _ in range(count)]


async def test_a_message_posted_on_one_node_reaches_every_stream_on_all_once_in_order(
    redis_server: RedisServer, spawn: Spawn
) -> None:
    nodes = _nodes(spawn, redis_server, 3, "--no-join-announcement")
    streams = [await EventStream.open(n.address) for n in nodes for _ in range(2)]
    await asyncio.sleep(0.2)  # every node's reader is on the room now
    sent = []
    for i in range(30):
        node = nodes[i % 3]
        response = await post_message(node.address, f"message {i}")
        assert response.status == 200, response.body
        sent.append(f"message {i}")
    ids = set()
    for stream in streams:
        got = await _messages(stream, len(sent))
        assert [e.data for e in got] == sent
        _assert_once_in_order(got)
        ids.add(tuple(e.last_event_id for e in got))
        await stream.close()
    # Redis entry ids are the event ids: one event has one id on every node.
    assert len(ids) == 1


async def test_joins_announced_on_one_node_reach_the_others(
    redis_server: RedisServer, spawn: Spawn
) -> None:
    a, b = _nodes(spawn, redis_server, 2)
    first = await EventStream.open(a.address)
    assert (await first.next_event()).data == "A new user joined!"
    second = await EventStream.open(b.address)
    assert (await second.next_event()).data == "A new user joined!"
    # The join of the stream on B reached the stream on A.
    assert (await first.next_event()).data == "A new user joined!"
    await first.close()
    await second.close()


async def test_resume_by_last_event_id_on_another_node(
    redis_server: RedisServer, spawn: Spawn
) -> None:
    a, b = _nodes(spawn, redis_server, 2, "--no-join-announcement")
    stream = await EventStream.open(a.address)
    await asyncio.sleep(0.1)
    for i in range(5):
        assert (await post_message(a.address, f"before {i}")).status == 200
    seen = await _messages(stream, 5)
    await stream.close()
    # Missed while away, posted on both nodes.
    for i in range(5):
        assert (await post_message((b if i % 2 else a).address, f"away {i}")).status == 200
    resumed = await EventStream.open(b.address, headers=[("last-event-id", seen[2].last_event_id)])
    replay = await _messages(resumed, 7)
    assert [e.data for e in replay] == ["before 3", "before 4"] + [f"away {i}" for i in range(5)]
    _assert_once_in_order(replay)
    # And then live, from either node.
    assert (await post_message(a.address, "live")).status == 200
    assert (await resumed.next_event()).data == "live"
    # The query parameter works too (a first connection cannot send the header).
    query = f"/events?last_event_id={replay[-1].last_event_id}"
    again = await EventStream.open(a.address, query)
    assert (await again.next_event()).data == "live"
    await resumed.close()
    await again.close()


async def test_a_gap_past_the_redis_history_is_told(
    redis_server: RedisServer, spawn: Spawn
) -> None:
    (node,) = _nodes(spawn, redis_server, 1, "--no-join-announcement", "--history-size", "10")
    stream = await EventStream.open(node.address)
    await asyncio.sleep(0.1)
    assert (await post_message(node.address, "first")).status == 200
    first = await stream.next_event()
    await stream.close()
    # MAXLEN ~ trims whole macro nodes (100 entries by default): post well past that.
    for i in range(300):
        assert (await post_message(node.address, f"m{i}")).status == 200
    resumed = await EventStream.open(node.address, headers=[("last-event-id", first.last_event_id)])
    gap = await resumed.next_event()
    assert gap.type == "gap"
    notice = json.loads(gap.data)
    assert notice["last_event_id"] == first.last_event_id
    assert "no longer kept" in notice["message"]
    kept = [e.data for e in await _messages(resumed, 5)]
    assert kept[0] != "first"
    assert all(d.startswith("m") for d in kept)
    await resumed.close()
    # Resuming from the gap's own id replays what is kept, with no second gap.
    again = await EventStream.open(node.address, headers=[("last-event-id", gap.last_event_id)])
    assert (await again.next_event()).data == kept[0]
    await again.close()
    # An id Redis never gave is told as unknown.
    bogus = await EventStream.open(node.address, headers=[("last-event-id", "not-an-id")])
    notice = json.loads((await bogus.next_event()).data)
    assert "unknown" in notice["message"]
    await bogus.close()


async def test_a_publish_while_redis_is_down_answers_503_and_streams_stay_open(
    redis_server: RedisServer, spawn: Spawn
) -> None:
    (node,) = _nodes(spawn, redis_server, 1, "--no-join-announcement", "--ping-interval", "0.2")
    stream = await EventStream.open(node.address)
    await asyncio.sleep(0.1)
    redis_server.stop()
    response = await post_message(node.address, "lost?")
    assert response.status == 503
    body = json.loads(response.body)
    assert "not sent" in body["error"]
    assert "try again" in body["error"]
    node.wait_for_log("Redis is unreachable", timeout=10)
    health = json.loads((await request(node.address, "GET", "/healthz")).body)
    assert health["redis"] == "down"
    # Heartbeats keep the stream alive meanwhile.
    assert not isinstance(await stream.next_item(timeout=2), DecodedEvent)
    redis_server.start()
    await wait_until(
        lambda: _redis_up(node.address), timeout=15, what="the node to see Redis again"
    )
    assert (await post_message(node.address, "after")).status == 200
    assert (await stream.next_event()).data == "after"
    assert not stream.ended
    await stream.close()


async def _redis_up(address: Address) -> bool:
    health = json.loads((await request(address, "GET", "/healthz")).body)
    return bool(health["redis"] == "up")


async def test_redis_restarted_during_a_steady_publish_loses_nothing_acknowledged(
    redis_server: RedisServer, spawn: Spawn
) -> None:
    nodes = _nodes(spawn, redis_server, 2, "--no-join-announcement")
    streams = [await EventStream.open(n.address) for n in nodes for _ in range(2)]
    await asyncio.sleep(0.2)
    acknowledged: list[str] = []
    refused: list[str] = []
    restarted = False
    for i in range(400):  # bounded: ~400 posts, one restart in the middle
        message = f"steady {i}"
        response = await post_message(nodes[i % 2].address, message)
        (acknowledged if response.status == 200 else refused).append(message)
        assert response.status in (200, 503), response.body
        if i == 150:
            redis_server.stop()
        if i == 200:
            redis_server.start()
            restarted = True
        if i > 200 and len(acknowledged) >= 300:
            break
        await asyncio.sleep(0.002)
    assert restarted
    assert refused, "the outage was not noticed"
    await wait_until(lambda: _redis_up(nodes[0].address), timeout=15, what="Redis up again")
    await wait_until(lambda: _redis_up(nodes[1].address), timeout=15, what="Redis up again")
    # Each stream's events: every acknowledged message once, in order; a refused
    # one may have reached Redis before the connection broke, but none twice.
    for stream in streams:
        got: list[DecodedEvent] = []
        while not {m for m in acknowledged} <= {e.data for e in got}:
            got.append(await stream.next_event(timeout=10))
        _assert_once_in_order(got)
        data = [e.data for e in got]
        assert len(data) == len(set(data))
        assert [d for d in data if d in set(acknowledged)] == acknowledged
        assert set(data) - set(acknowledged) <= set(refused)
        assert not stream.ended
    for stream in streams:
        await stream.close()


async def test_a_node_killed_its_clients_resume_on_another_without_loss(
    redis_server: RedisServer, spawn: Spawn
) -> None:
    a, b = _nodes(spawn, redis_server, 2, "--no-join-announcement")
    stream = await EventStream.open(a.address)
    await asyncio.sleep(0.1)
    assert (await post_message(b.address, "one")).status == 200
    last = await stream.next_event()
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(5)
    await stream.wait_ended()
    for i in range(3):
        assert (await post_message(b.address, f"while reconnecting {i}")).status == 200
    # What EventSource does: reconnect (here, to the node still up) with Last-Event-ID.
    resumed = await EventStream.open(b.address, headers=[("last-event-id", last.last_event_id)])
    got = [e.data for e in await _messages(resumed, 3)]
    assert got == [f"while reconnecting {i}" for i in range(3)]
    await resumed.close()


async def test_live_events_during_the_history_read_are_neither_lost_nor_doubled(
    redis_server: RedisServer, make_server: MakeServer
) -> None:
    # In process, so the publishing can race the attach as tightly as possible.
    a = await make_server(redis_url=redis_server.url, join_announcement=False)
    b = await make_server(redis_url=redis_server.url, join_announcement=False)
    watcher = await EventStream.open(a.address)
    await asyncio.sleep(0.1)
    assert (await post_message(b.address, "start")).status == 200
    start = await watcher.next_event()

    async def publish_burst() -> list[str]:
        sent = []
        for i in range(200):
            message = f"burst {i}"
            assert (await post_message(b.address, message)).status == 200
            sent.append(message)
        return sent

    burst = asyncio.create_task(publish_burst())
    await asyncio.sleep(0.05)
    # Resumes on A while B publishes: part comes from XRANGE, part live.
    resumers = [
        await EventStream.open(a.address, headers=[("last-event-id", start.last_event_id)])
        for _ in range(5)
    ]
    sent = await burst
    for resumer in resumers:
        got = await _messages(resumer, len(sent))
        assert [e.data for e in got] == sent
        _assert_once_in_order(got)
        await resumer.close()
    await watcher.close()


async def test_websockets_on_two_nodes_share_the_room(
    redis_server: RedisServer, make_server: MakeServer
) -> None:
    a = await make_server(redis_url=redis_server.url, join_announcement=False)
    b = await make_server(redis_url=redis_server.url, join_announcement=False)
    async with (
        websockets.connect(f"ws://{a.address[0]}:{a.address[1]}/ws") as on_a,
        websockets.connect(f"ws://{b.address[0]}:{b.address[1]}/ws") as on_b,
    ):
        await asyncio.sleep(0.1)
        await on_a.send(json.dumps({"type": "send", "message": "over the socket"}))
        ack = json.loads(await asyncio.wait_for(on_a.recv(), 5))
        assert ack["type"] == "ack"
        echoed = json.loads(await asyncio.wait_for(on_a.recv(), 5))
        arrived = json.loads(await asyncio.wait_for(on_b.recv(), 5))
        expected = {"id": ack["id"], "event": "message", "data": "over the socket"}
        assert echoed == arrived == expected


async def test_workers_serve_one_port_and_share_the_room(
    redis_server: RedisServer, spawn: Spawn, tmp_path: Path
) -> None:
    node = spawn("--redis-url", redis_server.url, "--workers", "2", "--no-join-announcement")
    node.wait_for_log("(2 workers)", timeout=15)  # a worker's own line may come first
    streams = [await EventStream.open(node.address) for _ in range(8)]
    pids: dict[int, int] = {}

    async def both_workers_hold_streams() -> bool:
        health = json.loads((await request(node.address, "GET", "/healthz")).body)
        pids[health["pid"]] = health["streams"]
        return len(pids) == 2 and sum(pids.values()) == 8 and all(pids.values())

    await wait_until(both_workers_hold_streams, timeout=10, what="streams on both workers")
    await asyncio.sleep(0.1)
    assert (await post_message(node.address, "to every worker")).status == 200
    for stream in streams:
        assert (await stream.next_event()).data == "to every worker"
        await stream.close()
    assert node.terminate() == 0


async def test_a_crowd_opening_at_once_is_served_without_exhausting_redis_connections(
    redis_server: RedisServer, make_server: MakeServer
) -> None:
    node = await make_server(redis_url=redis_server.url, join_announcement=False)

    # 300 streams at once on a channel this node does not read yet, half resuming:
    # far more than the connection pool, which makes them queue, not fail.
    async def one(i: int) -> EventStream:
        headers = [("last-event-id", "0-0")] if i % 2 else []
        return await EventStream.open(node.address, headers=headers)

    streams = await asyncio.gather(*(one(i) for i in range(300)))
    await wait_until(lambda: len(node.streams) == 300, timeout=20, what="300 streams open")
    assert (await post_message(node.address, "to the crowd")).status == 200
    for stream in streams:
        assert (await stream.next_event(timeout=10)).data == "to the crowd"
        await stream.close()


def _wire_size(event: DecodedEvent) -> int:
    # What the replay cap counts: the event as sent, "id: ...\ndata: ...\n\n".
    return len(f"id: {event.last_event_id}\ndata: {event.data}\n\n".encode())


async def _until_live(stream: EventStream, marker: str) -> list[DecodedEvent]:
    seen: list[DecodedEvent] = []
    while not seen or seen[-1].data != marker:
        seen.append(await stream.next_event())
    return seen[:-1]


@pytest.mark.parametrize(
    ("size", "count", "cap"),
    [
        (1000, 30, 16384),  # fits in the first page read
        (60, 80, 4096),  # needs several pages, newest first
    ],
)
async def test_a_redis_resume_replays_at_most_max_replay_bytes_after_a_gap(
    redis_server: RedisServer, make_server: MakeServer, size: int, count: int, cap: int
) -> None:
    node = await make_server(
        redis_url=redis_server.url, join_announcement=False, max_replay_bytes=cap
    )
    sent = [f"{i:03} " + "z" * size for i in range(count)]
    for message in sent:
        assert (await post_message(node.address, message)).status == 200
    # An unknown id, and a known one too far back: each a gap, then the newest that fit.
    for last, why in (("bogus", "unknown"), ("0-1", "more than one replay carries")):
        stream = await EventStream.open(node.address, headers=[("last-event-id", last)])
        gap = await stream.next_event()
        assert gap.type == "gap"
        assert why in json.loads(gap.data)["message"]
        # Cut off right after the gap, a client resumes from its id exactly: no new gap.
        again = await EventStream.open(node.address, headers=[("last-event-id", gap.last_event_id)])
        assert (await post_message(node.address, f"live {last}")).status == 200
        replayed = await _until_live(stream, f"live {last}")
        assert [e.data for e in await _until_live(again, f"live {last}")] == [
            e.data for e in replayed
        ]
        for opened in (stream, again):
            await opened.close()
        total = sum(_wire_size(e) for e in replayed)
        assert total <= cap < total + _wire_size(replayed[0])
        assert [e.data for e in replayed] == sent[-len(replayed) :]
        sent.append(f"live {last}")
    # A resume that fits is exact, as before.
    near = await EventStream.open(
        node.address, headers=[("last-event-id", replayed[-3].last_event_id)]
    )
    assert [e.data for e in await near.events(3)] == [*sent[-3:]]
    await near.close()
