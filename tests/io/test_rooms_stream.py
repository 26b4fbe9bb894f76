"""Named rooms as channels of `GET /stream`: the room must exist, and its person is present."""

from __future__ import annotations

from typing import Any

from sse.protocol.sse import DecodedEvent
from tests.support.client import CookieJar, EventStream, event_data, json_object, request
from tests.support.servers import MakeServer

Address = tuple[str, int]
_JSON = [("content-type", "application/json")]


async def _next_of(stream: EventStream, kind: str) -> DecodedEvent:
    while True:
        event = await stream.next_event(10.0)
        if event.type == kind:
            return event


async def _me(address: Address, **kw: Any) -> dict[str, Any]:
    return json_object(await request(address, "GET", "/me", **kw))


async def test_a_missing_room_channel_is_refused_like_its_own_stream(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    refused = await request(server.address, "GET", "/stream?ch=room:lobby&ch=room:nowhere")
    assert refused.status == 404
    assert "nowhere" in json_object(refused)["error"]


async def test_a_stream_makes_its_person_present_in_each_room_until_it_closes(
    make_server: MakeServer,
) -> None:
    server = await make_server(presence_grace_s=0.2)
    address = server.address
    made = await request(address, "POST", "/rooms", _JSON, b'{"name": "general"}')
    assert made.status == 201
    watcher_jar = CookieJar()
    await _me(address, jar=watcher_jar)
    watcher = await EventStream.open(address, "/rooms/general/events", jar=watcher_jar)
    await _next_of(watcher, "presence")  # the watcher's own join
    me = await _me(address)
    stream = await EventStream.open(address, "/stream?ch=room:lobby&ch=room:general")
    assert stream.status == 200
    joined = event_data(await _next_of(watcher, "presence"))
    assert (joined["action"], joined["user"]["id"], joined["count"]) == ("join", me["id"], 2)
    # The stream hears its own joins too, each tagged with its channel.
    own = {event_data(await _next_of(stream, "presence"))["channel"] for _ in range(2)}
    assert own == {"room:lobby", "room:general"}
    lobby = json_object(await request(address, "GET", "/rooms/lobby/presence", jar=watcher_jar))
    assert [u["id"] for u in lobby["users"]] == [me["id"]]
    posted = await request(
        address, "POST", "/rooms/general/messages", _JSON, b'{"text": "hi"}', jar=watcher_jar
    )
    assert posted.status == 201
    message = event_data(await _next_of(stream, "message"))
    assert (message["channel"], message["text"]) == ("room:general", "hi")
    await stream.close()
    left = event_data(await _next_of(watcher, "presence"))
    assert (left["action"], left["user"]["id"], left["count"]) == ("leave", me["id"], 1)
    await watcher.close()
