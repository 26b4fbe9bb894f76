"""Rooms on real services: presence and typing across nodes on Redis, a killed node's people
leaving after their lease, and room messages kept in PostgreSQL across a restart.

Each node is a `python server.py` process, as in production.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

from sse.protocol.sse import DecodedEvent
from tests.support.client import (
    CookieJar,
    EventStream,
    Response,
    event_data,
    json_object,
    post_message,
    request,
)
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerProcess

Spawn = Callable[..., ServerProcess]
Address = tuple[str, int]
_JSON = [("content-type", "application/json")]


async def _post(address: Address, target: str, payload: object, **kw: Any) -> Response:
    return await request(address, "POST", target, _JSON, json.dumps(payload).encode(), **kw)


async def _me(address: Address, **kw: Any) -> dict[str, Any]:
    return json_object(await request(address, "GET", "/me", **kw))


async def _next_of(stream: EventStream, kind: str, timeout: float = 15.0) -> DecodedEvent:
    while True:
        event = await stream.next_event(timeout)
        if event.type == kind:
            return event


def _nodes(spawn: Spawn, redis: RedisServer, count: int, *args: str) -> list[ServerProcess]:
    return [spawn("--redis-url", redis.url, "--no-join-announcement", *args) for _ in range(count)]


async def test_presence_joins_and_leaves_across_nodes(
    redis_server: RedisServer, spawn: Spawn
) -> None:
    a, b = _nodes(spawn, redis_server, 2, "--presence-grace", "0.3")
    watcher_jar = CookieJar()
    await _me(a.address, jar=watcher_jar)
    watchers = [
        await EventStream.open(node.address, "/rooms/lobby/events", jar=watcher_jar)
        for node in (a, b)
    ]
    for watcher in watchers:
        assert event_data(await _next_of(watcher, "presence"))["count"] == 1
    me = await _me(b.address)  # one guest on every node: they share the session secret
    on_b = await EventStream.open(b.address, "/rooms/lobby/events")
    for watcher in watchers:
        data = event_data(await _next_of(watcher, "presence"))
        assert data == {
            "room": "lobby",
            "action": "join",
            "user": {"id": me["id"], "name": me["name"]},
            "count": 2,
        }
    on_a = await EventStream.open(a.address, "/rooms/lobby/events")  # the same person again
    presence = json_object(await request(a.address, "GET", "/rooms/lobby/presence"))
    assert presence["count"] == 2
    assert {u["id"] for u in presence["users"]} == {
        me["id"],
        (await _me(a.address, jar=watcher_jar))["id"],
    }
    rooms = json_object(await request(b.address, "GET", "/rooms"))["rooms"]
    assert {"name": "lobby", "members": 2} in rooms
    # A second node holding the person is no second join.
    await _post(a.address, "/rooms/lobby/messages", {"text": "marker"})
    for watcher in watchers:
        event = await watcher.next_event(15.0)
        assert event.type == "message", event
    await on_b.close()
    await on_a.close()
    for watcher in watchers:
        left = event_data(await _next_of(watcher, "presence"))
        assert left["action"] == "leave"
        assert left["user"]["id"] == me["id"]
        assert left["count"] == 1
    for watcher in watchers:
        await watcher.close()


async def test_a_killed_nodes_people_leave_after_its_lease(
    redis_server: RedisServer, spawn: Spawn
) -> None:
    a, b = _nodes(spawn, redis_server, 2, "--presence-grace", "0.3", "--presence-lease", "1.5")
    watcher = await EventStream.open(a.address, "/rooms/lobby/events", jar=CookieJar())
    await _next_of(watcher, "presence")
    me = await _me(b.address)
    doomed = await EventStream.open(b.address, "/rooms/lobby/events")
    joined = event_data(await _next_of(watcher, "presence"))
    assert joined["action"] == "join"
    assert joined["user"]["id"] == me["id"]
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait(5)
    left = event_data(await _next_of(watcher, "presence"))
    assert left["action"] == "leave"
    assert left["user"]["id"] == me["id"]
    assert left["count"] == 1
    presence = json_object(await request(a.address, "GET", "/rooms/lobby/presence"))
    assert presence["count"] == 1
    await doomed.close()
    await watcher.close()


async def test_typing_crosses_nodes_throttled_once_for_all(
    redis_server: RedisServer, spawn: Spawn
) -> None:
    a, b = _nodes(spawn, redis_server, 2)
    watcher = await EventStream.open(a.address, "/rooms/lobby/events", jar=CookieJar())
    await _next_of(watcher, "presence")
    me = await _me(b.address)
    sent = await _post(b.address, "/rooms/lobby/typing", {})
    assert sent.status == 202
    assert json_object(sent) == {"published": True}
    again = await _post(a.address, "/rooms/lobby/typing", {})  # another node, same person
    assert json_object(again) == {"published": False}
    typing = await _next_of(watcher, "typing")
    assert not typing.last_event_id
    assert event_data(typing)["user"] == {"id": me["id"], "name": me["name"]}
    # Not kept in Redis's history: a resume from before it replays only messages.
    first = json_object(await _post(b.address, "/rooms/lobby/messages", {"text": "one"}))
    one = await _next_of(watcher, "message")
    assert event_data(one)["id"] == first["id"]
    await _post(b.address, "/rooms/lobby/typing", {}, jar=CookieJar())
    await _post(b.address, "/rooms/lobby/messages", {"text": "two"})
    await _next_of(watcher, "message")
    resumed = await EventStream.open(
        b.address, "/rooms/lobby/events", [("last-event-id", one.last_event_id)], jar=CookieJar()
    )
    replayed = await resumed.next_event(15.0)
    assert replayed.type == "message"
    assert event_data(replayed)["text"] == "two"
    await resumed.close()
    await watcher.close()


async def test_postgres_keeps_room_messages_across_a_restart(
    postgres_url: str, spawn: Spawn
) -> None:
    first = spawn("--db", postgres_url)
    assert (await _post(first.address, "/rooms", {"name": "kept"})).status == 201
    for i in range(3):
        await _post(first.address, "/rooms/kept/messages", {"text": f"m{i}"})
    assert (await post_message(first.address, "seed post")).status == 200
    assert first.terminate() == 0
    second = spawn("--db", postgres_url)
    page = json_object(await request(second.address, "GET", "/rooms/kept/messages?limit=2"))
    assert [m["text"] for m in page["messages"]] == ["m1", "m2"]
    older = json_object(
        await request(second.address, "GET", f"/rooms/kept/messages?before={page['before']}")
    )
    assert [m["text"] for m in older["messages"]] == ["m0"]
    lobby = json_object(await request(second.address, "GET", "/rooms/lobby/messages"))
    assert [m["text"] for m in lobby["messages"]] == ["seed post"]
    names = [
        r["name"] for r in json_object(await request(second.address, "GET", "/rooms"))["rooms"]
    ]
    assert names == ["kept", "lobby"]


async def test_presence_catches_up_after_a_redis_outage(
    redis_server: RedisServer, spawn: Spawn
) -> None:
    (node,) = _nodes(spawn, redis_server, 1, "--presence-grace", "0.3", "--presence-lease", "1.5")
    watcher = await EventStream.open(node.address, "/rooms/lobby/events", jar=CookieJar())
    await _next_of(watcher, "presence")
    me = await _me(node.address)
    redis_server.stop()
    typing = await _post(node.address, "/rooms/lobby/typing", {})
    assert typing.status == 503
    assert "error" in json_object(typing)
    presence = await request(node.address, "GET", "/rooms/lobby/presence")
    assert presence.status == 503
    # Joining while Redis is away: the stream opens, and the join is announced once it is back.
    during = await EventStream.open(node.address, "/rooms/lobby/events")
    assert during.status == 200
    redis_server.start()
    joined = event_data(await _next_of(watcher, "presence", timeout=30.0))
    assert joined["action"] == "join"
    assert joined["user"]["id"] == me["id"]
    assert joined["count"] == 2
    back = json_object(await request(node.address, "GET", "/rooms/lobby/presence"))
    assert back["count"] == 2
    await during.close()
    await watcher.close()
