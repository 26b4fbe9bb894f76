"""`GET /stream` across two nodes on one real Redis: tagged events, exact resume, gaps.

In-process nodes sharing a Redis and a database (as nodes share them): events
published on one node reach a multiplexed stream on the other, and a composite
id from one node resumes every channel on the other.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sse.io.server import Server
from sse.protocol.sse import DecodedEvent
from tests.support.client import EventStream, event_data, json_object, request
from tests.support.redis_server import RedisServer
from tests.support.servers import MakeServer

JSON = [("content-type", "application/json")]


async def _nodes(
    redis: RedisServer, make_server: MakeServer, tmp_path: Path, **kw: Any
) -> list[Server]:
    db = tmp_path / "shared.sqlite3"
    return [await make_server(redis_url=redis.url, db_path=db, **kw) for _ in range(2)]


async def _create(server: Server) -> str:
    response = await request(server.address, "POST", "/conversations")
    assert response.status == 201
    return str(json_object(response)["id"])


async def _post(server: Server, cid: str, content: str) -> None:
    body = json.dumps({"content": content}).encode()
    response = await request(server.address, "POST", f"/conversations/{cid}/messages", JSON, body)
    assert response.status == 202, response.body


async def _say(server: Server, room: str, text: str) -> str:
    payload = {"id": text, "room": room, "text": text, "from": {"id": "u1", "name": "Ann"}}
    published = server.broker.publish(f"room:{room}", json.dumps(payload), event="message")
    assert not isinstance(published, str)
    return await published


async def _make_rooms(server: Server, *names: str) -> None:
    for name in names:
        made = await request(
            server.address, "POST", "/rooms", JSON, json.dumps({"name": name}).encode()
        )
        assert made.status == 201, made.body


async def _next(stream: EventStream) -> DecodedEvent:
    """The next event that is not presence (no id, nothing to resume; tested elsewhere)."""
    while True:
        event = await stream.next_event(10.0)
        if event.type != "presence":
            return event


async def _events(stream: EventStream, count: int) -> list[DecodedEvent]:
    return [await _next(stream) for _ in range(count)]


def _target(*channels: str) -> str:
    return "/stream?" + "&".join(f"ch={c}" for c in channels)


def _by_channel(events: list[DecodedEvent]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for event in events:
        data = event_data(event)
        out.setdefault(data.pop("channel"), []).append(
            event.type + " " + json.dumps(data, sort_keys=True)
        )
    return out


async def _until(stream: EventStream, wanted: dict[str, int]) -> list[DecodedEvent]:
    """Events until each channel has seen its count of `done`/`message` events.

    Presence is left out: it has no id, resumes nothing, and has tests of its own.
    """
    seen: list[DecodedEvent] = []
    counts = dict.fromkeys(wanted, 0)
    while any(counts[c] < n for c, n in wanted.items()):
        event = await stream.next_event(10.0)
        if event.type == "presence":
            continue
        seen.append(event)
        if event.type in ("done", "message"):
            counts[event_data(event)["channel"]] += 1
    return seen


async def test_events_published_on_one_node_reach_a_stream_on_the_other_tagged(
    redis_server: RedisServer, make_server: MakeServer, tmp_path: Path
) -> None:
    a, b = await _nodes(redis_server, make_server, tmp_path)
    cid = await _create(a)
    channels = (f"conv:{cid}", "room:lobby")
    stream = await EventStream.open(b.address, _target(*channels))
    assert stream.status == 200
    await _post(a, cid, "hello")
    await _say(a, "lobby", "hi all")
    events = await _until(stream, {channels[0]: 1, channels[1]: 1})
    tagged = _by_channel(events)
    assert set(tagged) == set(channels)
    assert tagged[channels[0]][0].startswith("user ")
    assert tagged[channels[1]] == [
        "message "
        + json.dumps(
            {
                "from": {"id": "u1", "name": "Ann"},
                "id": "hi all",
                "room": "lobby",
                "text": "hi all",
            },
            sort_keys=True,
        )
    ]
    await stream.close()


async def test_a_composite_id_from_one_node_resumes_every_channel_on_the_other(
    redis_server: RedisServer, make_server: MakeServer, tmp_path: Path
) -> None:
    a, b = await _nodes(redis_server, make_server, tmp_path)
    one, two = await _create(a), await _create(a)
    channels = (f"conv:{one}", "room:lobby", f"conv:{two}")
    target = _target(*channels)
    whole = await EventStream.open(a.address, target)  # open throughout: the reference
    tab = await EventStream.open(b.address, target)
    await _say(a, "lobby", "before")
    await _post(b, one, "before")
    before = await _until(tab, {channels[0]: 1, channels[1]: 1})
    await tab.close()
    # While away, every channel moves on, published on both nodes.
    await _post(a, two, "away")
    await _say(b, "lobby", "away 1")
    await _post(b, one, "away")
    await _say(a, "lobby", "away 2")
    reference = await _until(whole, {channels[0]: 2, channels[1]: 3, channels[2]: 1})
    back = await EventStream.open(a.address, target, [("last-event-id", before[-1].last_event_id)])
    missed = await _events(back, len(reference) - len(before))
    assert "gap" not in [e.type for e in missed]
    assert _by_channel([*before, *missed]) == _by_channel(reference)
    await _say(b, "lobby", "live")
    assert event_data(await _next(back))["text"] == "live"
    await whole.close()
    await back.close()


async def test_a_gap_only_for_the_channel_whose_redis_history_ran_out(
    redis_server: RedisServer, make_server: MakeServer, tmp_path: Path
) -> None:
    a, b = await _nodes(redis_server, make_server, tmp_path, history_size=10)
    await _make_rooms(a, "busy", "quiet")
    channels = ("room:busy", "room:quiet")
    tab = await EventStream.open(b.address, _target(*channels))
    await _say(a, "quiet", "seen")
    seen = await _next(tab)
    await tab.close()
    # MAXLEN ~ trims whole macro nodes (100 entries by default): well past that.
    for i in range(300):
        await _say(a, "busy", f"m{i}")
    await _say(a, "quiet", "missed")
    back = await EventStream.open(
        a.address, _target(*channels), [("last-event-id", seen.last_event_id)]
    )
    first = await _next(back)
    assert (first.type, event_data(first)["channel"]) == ("gap", "room:busy")
    assert "no longer kept" in event_data(first)["message"]
    rest = []
    while not rest or event_data(rest[-1])["text"] != "m299":
        rest.append(await _next(back))
    assert all(event_data(e)["channel"] == "room:busy" for e in rest)
    # The quiet room lost nothing: its one missed event, with no gap.
    quiet = await _next(back)
    assert (quiet.type, event_data(quiet)["text"], event_data(quiet)["channel"]) == (
        "message",
        "missed",
        "room:quiet",
    )
    await back.close()


async def test_live_events_while_the_channels_attach_are_neither_lost_nor_doubled(
    redis_server: RedisServer, make_server: MakeServer, tmp_path: Path
) -> None:
    a, b = await _nodes(redis_server, make_server, tmp_path)
    await _make_rooms(a, "x", "y")
    channels = ("room:x", "room:y")
    watcher = await EventStream.open(a.address, _target(*channels))
    await _say(b, "x", "start")
    start = await _next(watcher)

    async def burst() -> list[str]:
        sent = []
        for i in range(100):
            room = "xy"[i % 2]
            await _say(b, room, f"{room}{i}")
            sent.append(f"{room}{i}")
        return sent

    task = asyncio.create_task(burst())
    await asyncio.sleep(0.02)
    resumers = [
        await EventStream.open(
            a.address, _target(*channels), [("last-event-id", start.last_event_id)]
        )
        for _ in range(4)
    ]
    sent = await task
    for resumer in resumers:
        got = await _events(resumer, len(sent))
        texts = [event_data(e)["text"] for e in got]
        assert sorted(texts) == sorted(sent)  # each once
        for room in "xy":  # and each channel in its order
            assert [t for t in texts if t[0] == room] == [s for s in sent if s[0] == room]
        await resumer.close()
    await watcher.close()
