"""`GET /stream`, one stream for many channels, over real sockets on one node.

Room channels are fed here by publishing to their hub topics (`room:<name>`)
directly, and the servers here follow any well-named room with no presence
(`OpenRooms`): the named rooms' own checks and presence on /stream are
tests/io/test_rooms_stream.py's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sse.app.multiplex import OpenRooms
from sse.auth.identity import Identity
from sse.config import Config
from sse.errors import ClientError
from sse.io.server import Server
from sse.protocol.multiplex import fingerprint
from sse.protocol.sse import Comment, DecodedEvent, Decoder
from sse.pubsub.broker import settle
from tests.support.client import (
    CookieJar,
    EventStream,
    Response,
    event_data,
    events_until,
    json_object,
    request,
    wait_until,
)

JSON = [("content-type", "application/json")]


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """conftest's `make_server`, with servers that follow rooms without presence."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(**overrides: Any) -> Server:
            settings: dict[str, Any] = {
                "port": 0,
                "shutdown_timeout_s": 2.0,
                "db_path": tmp_path / "chat.sqlite3",
                "echo_delay_s": 0.005,
                "session_secret_file": tmp_path / "session.secret",
                "limits": "off",
                **overrides,
            }
            return await stack.enter_async_context(_running(Config(**settings), OpenRooms()))

        yield make


@pytest.fixture
async def server(make_server: Callable[..., Awaitable[Server]]) -> Server:
    """A server on the embedded defaults, following rooms without presence."""
    return await make_server()


async def _create(server: Server, jar: CookieJar | None = None) -> str:
    if jar is None:
        response = await request(server.address, "POST", "/conversations")
    else:
        response = await request(server.address, "POST", "/conversations", jar=jar)
    assert response.status == 201
    return str(json_object(response)["id"])


async def _post(server: Server, cid: str, content: str) -> Response:
    body = json.dumps({"content": content}).encode()
    response = await request(server.address, "POST", f"/conversations/{cid}/messages", JSON, body)
    assert response.status == 202, response.body
    return response


async def _say(server: Server, room: str, text: str) -> str:
    """A room message as the rooms publish them: JSON on `room:<name>`, with an id."""
    payload = {"id": text, "room": room, "text": text, "from": {"id": "u1", "name": "Ann"}}
    return await settle(server.broker.publish(f"room:{room}", json.dumps(payload), event="message"))


@contextlib.asynccontextmanager
async def _running(config: Config, rooms: Any) -> AsyncIterator[Server]:
    server = Server(config, rooms=rooms)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _target(*channels: str) -> str:
    return "/stream?" + "&".join(f"ch={c}" for c in channels)


def _by_channel(events: list[DecodedEvent]) -> dict[str, list[tuple[str, str]]]:
    """Each channel's events as (type, data without the tag), in order."""
    out: dict[str, list[tuple[str, str]]] = {}
    for event in events:
        data = event_data(event)
        channel = data.pop("channel")
        out.setdefault(channel, []).append((event.type, json.dumps(data, sort_keys=True)))
    return out


async def _until_types(stream: EventStream, wanted: dict[str, int]) -> list[DecodedEvent]:
    """Events until each channel has seen its count of `done`/`message` events."""
    seen: list[DecodedEvent] = []
    counts = dict.fromkeys(wanted, 0)
    while any(counts[c] < n for c, n in wanted.items()):
        event = await stream.next_event(10.0)
        seen.append(event)
        if event.type in ("done", "message"):
            counts[event_data(event)["channel"]] += 1
    return seen


async def test_one_stream_carries_two_conversations_and_a_room_each_tagged(
    server: Server,
) -> None:
    a, b = await _create(server), await _create(server)
    channels = (f"conv:{a}", f"conv:{b}", "room:lobby")
    stream = await EventStream.open(server.address, _target(*channels))
    assert stream.status == 200
    assert stream.headers["content-type"] == "text/event-stream"
    await _post(server, a, "first")
    await _say(server, "lobby", "hello room")
    await _post(server, b, "second")
    events = await _until_types(stream, {channels[0]: 1, channels[1]: 1, channels[2]: 1})
    tagged = _by_channel(events)
    assert set(tagged) == set(channels)
    assert [t for t, _ in tagged[channels[0]]][:2] == ["user", "start"]
    assert tagged[channels[0]][-1][0] == "done"
    assert tagged[channels[2]] == [
        (
            "message",
            json.dumps(
                {
                    "id": "hello room",
                    "room": "lobby",
                    "text": "hello room",
                    "from": {"id": "u1", "name": "Ann"},
                },
                sort_keys=True,
            ),
        )
    ]
    # The same data as the conversation's own stream carries, plus the tag.
    user = next(e for e in events if e.type == "user" and event_data(e)["channel"] == channels[1])
    assert event_data(user)["content"] == "second"
    # Every event's id is the composite of all three positions.
    prefix = fingerprint(channels) + "."
    assert all(e.last_event_id.startswith(prefix) for e in events)
    assert all(len(e.last_event_id.split(".")) == 4 for e in events)
    assert len({e.last_event_id for e in events}) == len(events)
    await stream.close()


async def test_a_resume_replays_what_every_channel_missed_exactly_once(server: Server) -> None:
    a, b = await _create(server), await _create(server)
    channels = (f"conv:{a}", "room:lobby", f"conv:{b}")
    target = _target(*channels)
    # The reference: a stream that stays open throughout.
    whole = await EventStream.open(server.address, target)
    tab = await EventStream.open(server.address, target)
    await _post(server, a, "before")
    await _say(server, "lobby", "before")
    before = await _until_types(tab, {channels[0]: 1, channels[1]: 1})
    last = before[-1].last_event_id
    await tab.close()
    # While the tab is away, every channel moves on.
    await _post(server, b, "while away")
    await _say(server, "lobby", "while away 1")
    await _post(server, a, "while away")
    await _say(server, "lobby", "while away 2")
    reference = await _until_types(whole, {channels[0]: 2, channels[1]: 3, channels[2]: 1})
    back = await EventStream.open(server.address, target, [("last-event-id", last)])
    assert back.status == 200
    missed = await back.events(len(reference) - len(before))
    assert [e.type for e in missed if e.type == "gap"] == []
    assert _by_channel([*before, *missed]) == _by_channel(reference)
    # Nothing more: the next event is a live one.
    await _say(server, "lobby", "live")
    live = await back.next_event()
    assert event_data(live)["text"] == "live"
    await whole.close()
    await back.close()


async def test_a_channel_whose_history_ran_out_gets_its_own_gap(make_server: Any) -> None:
    server = await make_server(history_size=3)
    a = await _create(server)
    channels = ("room:busy", f"conv:{a}")
    tab = await EventStream.open(server.address, _target(*channels))
    first = await _say(server, "busy", "seen")
    seen = await tab.next_event()
    assert event_data(seen)["text"] == "seen"
    assert seen.last_event_id.split(".")[1] == first
    await tab.close()
    for i in range(6):  # more than the room's history keeps
        await _say(server, "busy", f"missed {i}")
    kept = await _say(server, "busy", "kept")
    await _say(server, "quiet", "another room")
    back = await EventStream.open(
        server.address, _target(*channels), [("last-event-id", seen.last_event_id)]
    )
    gap = await back.next_event()
    assert gap.type == "gap"
    assert event_data(gap)["channel"] == "room:busy"
    replay = await back.events(3)
    assert [event_data(e)["text"] for e in replay] == ["missed 4", "missed 5", "kept"]
    assert replay[-1].last_event_id.split(".")[1] == kept
    # The conversation had nothing to miss: no gap for it, and it streams on.
    await _post(server, a, "after")
    after = await events_until(back, "done")
    assert {event_data(e)["channel"] for e in after} == {f"conv:{a}"}
    assert "gap" not in [e.type for e in after]
    await back.close()


async def test_someone_elses_conversation_is_404_like_a_missing_one(server: Server) -> None:
    mine = await _create(server)
    other = CookieJar()
    theirs = await _create(server, other)
    missing = "00000000-0000-4000-8000-000000000000"
    refused = await request(server.address, "GET", _target("room:lobby", f"conv:{theirs}"))
    absent = await request(server.address, "GET", _target(f"conv:{missing}"))
    assert refused.status == absent.status == 404
    assert json_object(refused) == {"error": f"no conversation {theirs}"}
    assert json_object(absent) == {"error": f"no conversation {missing}"}
    # Its owner gets in; the other person does not get in to mine either.
    own = await EventStream.open(server.address, _target(f"conv:{theirs}"), jar=other)
    assert own.status == 200
    await own.close()
    assert (await request(server.address, "GET", _target(f"conv:{mine}"), jar=other)).status == 404


async def test_malformed_too_many_and_repeated_channels_are_400(server: Server) -> None:
    a = await _create(server)
    bad = [
        "/stream",
        _target(*(f"room:r{i}" for i in range(17))),
        _target("room:lobby", "room:lobby"),
        _target("room:Lobby"),
        _target("room:"),
        _target("room:-x"),
        _target("room:" + "x" * 65),
        _target("conv:not-an-id"),
        _target(f"conv:{a.upper()}"),
        _target("lobby"),
        _target("conversation:" + a),
        "/stream?ch=",
    ]
    for target in bad:
        response = await request(server.address, "GET", target)
        assert response.status == 400, target
        assert "error" in json_object(response)
    sixteen = await EventStream.open(server.address, _target(*(f"room:r{i}" for i in range(16))))
    assert sixteen.status == 200
    await sixteen.close()


async def test_a_malformed_last_event_id_never_wedges_the_stream(server: Server) -> None:
    channels = ("room:lobby", "room:other")
    right = fingerprint(channels)
    for last in [
        "garbage",
        f"{right}.1-2",  # too few positions
        f"{right}.x-1.1-1",
        "deadbeef.1-1.1-1",  # another list of channels
        f"{right}." + "9" * 30 + "-1.1-1",
        "." * 5000,
        "%C3%A9%00%0A",  # in the query (a header cannot carry them): e-acute, NUL, LF
    ]:
        if last.startswith("%"):
            target = _target(*channels) + "&last_event_id=" + last
            stream = await EventStream.open(server.address, target)
        else:
            stream = await EventStream.open(
                server.address, _target(*channels), [("last-event-id", last)]
            )
        assert stream.status == 200, last
        gaps = await stream.events(2)
        assert sorted(event_data(g)["channel"] for g in gaps) == sorted(channels)
        assert {g.type for g in gaps} == {"gap"}
        await _say(server, "other", "still streams")
        live = await stream.next_event()
        assert (event_data(live)["channel"], event_data(live)["text"]) == (
            "room:other",
            "still streams",
        )
        await stream.close()


async def test_events_of_several_channels_in_one_turn_go_out_as_one_chunk(
    server: Server,
) -> None:
    # Published in one callback: the hub flushes them together (each topic's as
    # one batch, topics in publish order), and the stream writes them as one
    # HTTP chunk, not one per channel.
    head = (
        f"GET {_target('room:x', 'room:y')} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(head)
    got = await reader.readuntil(b"\r\n\r\n")  # the head
    assert b" 200 " in got
    size = int((await reader.readuntil(b"\r\n")).strip(), 16)  # the retry chunk
    await reader.readexactly(size + 2)
    server.broker.publish("room:x", json.dumps({"text": "1"}), event="message")
    server.broker.publish("room:y", json.dumps({"text": "2"}), event="message")
    server.broker.publish("room:x", json.dumps({"text": "3"}), event="message")
    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
    body = (await reader.readexactly(size + 2))[:-2].decode()
    assert body.count("event: message\n") == 3
    assert [
        json.loads(line[6:])["text"] for line in body.splitlines() if line.startswith("data:")
    ] == ["1", "3", "2"]
    writer.close()


async def test_a_deleted_conversation_leaves_the_other_channels_streaming(server: Server) -> None:
    a = await _create(server)
    stream = await EventStream.open(server.address, _target(f"conv:{a}", "room:lobby"))
    assert (await request(server.address, "DELETE", f"/conversations/{a}")).status == 204
    deleted = await stream.next_event()
    assert deleted.type == "deleted"
    assert event_data(deleted) == {"conversation_id": a, "channel": f"conv:{a}"}
    await _say(server, "lobby", "still here")
    assert event_data(await stream.next_event())["text"] == "still here"
    await stream.close()


class _Rooms:
    """A RoomAccess that knows two rooms and records presence, as the named rooms will."""

    def __init__(self) -> None:
        self.told: list[tuple[str, str, tuple[str, ...]]] = []

    def check(self, who: Identity, rooms: tuple[str, ...]) -> None:
        for room in rooms:
            if room not in ("lobby", "games"):
                raise ClientError(404, f"no room {room}")

    def watch(self, who: Identity, rooms: tuple[str, ...]) -> _Watch:
        return _Watch(self.told, who.owner, rooms)


class _Watch:
    def __init__(
        self, told: list[tuple[str, str, tuple[str, ...]]], owner: str, rooms: tuple[str, ...]
    ) -> None:
        self._told, self._owner, self._rooms = told, owner, rooms

    def opened(self) -> None:
        self._told.append(("opened", self._owner, self._rooms))

    def closed(self) -> None:
        self._told.append(("closed", self._owner, self._rooms))


async def test_room_access_refuses_unknown_rooms_and_hears_of_opens_and_closes(
    tmp_path: Path,
) -> None:
    rooms = _Rooms()
    config = Config(
        port=0,
        db_path=tmp_path / "chat.sqlite3",
        session_secret_file=tmp_path / "session.secret",
        limits="off",
        shutdown_timeout_s=2.0,
    )
    async with _running(config, rooms) as server:
        cid = await _create(server)
        missing = await request(server.address, "GET", _target("room:lobby", "room:nowhere"))
        assert (missing.status, json_object(missing)) == (404, {"error": "no room nowhere"})
        stream = await EventStream.open(
            server.address, _target("room:lobby", f"conv:{cid}", "room:games")
        )
        assert stream.status == 200
        await _say(server, "games", "gg")
        assert event_data(await stream.next_event())["text"] == "gg"
        (opened,) = rooms.told
        assert opened[0] == "opened"
        assert opened[2] == ("lobby", "games")
        await stream.close()
        await wait_until(lambda: len(rooms.told) == 2, what="the close told")
        assert rooms.told[1] == ("closed", *opened[1:])
        # A stream of conversations only has no presence to tell.
        alone = await EventStream.open(server.address, _target(f"conv:{cid}"))
        await alone.close()
        assert len(rooms.told) == 2


async def test_a_one_channel_stream_shares_its_bytes_and_resumes_exactly(server: Server) -> None:
    target = _target("room:solo")
    tabs = [await EventStream.open(server.address, target) for _ in range(3)]
    ids = [await _say(server, "solo", f"m{i}") for i in range(3)]
    seen = [await tab.events(3) for tab in tabs]
    prefix = fingerprint(("room:solo",)) + "."
    for got in seen:
        assert [e.last_event_id for e in got] == [prefix + i for i in ids]
        assert [event_data(e) for e in got] == [event_data(e) for e in seen[0]]
        assert event_data(got[0])["channel"] == "room:solo"
    await tabs[0].close()
    for i in range(3, 5):
        await _say(server, "solo", f"m{i}")
    back = await EventStream.open(
        server.address, target, [("last-event-id", seen[0][1].last_event_id)]
    )
    assert [event_data(e)["text"] for e in await back.events(3)] == ["m2", "m3", "m4"]
    for tab in (*tabs[1:], back):
        await tab.close()


async def test_a_one_channel_stream_of_a_deleted_conversation_ends(server: Server) -> None:
    cid = await _create(server)
    stream = await EventStream.open(server.address, _target(f"conv:{cid}"))
    assert (await request(server.address, "DELETE", f"/conversations/{cid}")).status == 204
    deleted = await stream.next_event()
    assert (deleted.type, event_data(deleted)["channel"]) == ("deleted", f"conv:{cid}")
    await stream.wait_ended()
    assert stream.ended


async def test_an_idle_multiplexed_stream_gets_heartbeats(make_server: Any) -> None:
    server = await make_server(ping_interval_s=0.05)
    stream = await EventStream.open(server.address, _target("room:a", "room:b"))
    while not isinstance(await stream.next_item(), Comment):
        pass
    await stream.close()


async def test_over_http_1_0_the_stream_is_close_delimited_and_tagged(server: Server) -> None:
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(f"GET {_target('room:a', 'room:b')} HTTP/1.0\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head.lower()
    await reader.readuntil(b"\n")  # the retry line
    server.broker.publish("room:b", json.dumps({"text": "hi"}), event="message")
    server.broker.publish("room:a", json.dumps({"text": "ho"}), event="message")
    decoder = Decoder()
    events: list[Any] = []
    while len(events) < 2:
        events += decoder.feed(await reader.read(4096))
    assert [json.loads(e.data) for e in events] == [
        {"text": "hi", "channel": "room:b"},
        {"text": "ho", "channel": "room:a"},
    ]
    writer.close()
