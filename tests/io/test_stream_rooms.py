"""Room channels of the multiplexed GET /stream, over real sockets: the named rooms behind them.

A room channel is refused (404) for a room that does not exist, and its
person is present in the room while the stream is open, leaving after the
grace once it closes (sse.app.rooms.RoomChannels).
"""

from __future__ import annotations

import json
from typing import Any

from sse.protocol.sse import DecodedEvent
from tests.support.client import CookieJar, EventStream, json_object, request
from tests.support.servers import MakeServer


def _data(event: DecodedEvent) -> dict[str, Any]:
    payload = json.loads(event.data)
    assert isinstance(payload, dict)
    return payload


async def _next_of(stream: EventStream, kind: str) -> DecodedEvent:
    while True:
        event = await stream.next_event(10.0)
        if event.type == kind:
            return event


async def test_a_room_channel_of_no_room_is_404_and_a_stream_makes_its_person_present(
    make_server: MakeServer,
) -> None:
    server = await make_server(presence_grace_s=0.2)
    address = server.address
    ann, bo = CookieJar(), CookieJar()
    missing = await request(address, "GET", "/stream?ch=room:lobby&ch=room:nowhere", jar=ann)
    assert (missing.status, json_object(missing)) == (404, {"error": "no such room: nowhere"})

    ann_me = json_object(await request(address, "GET", "/me", jar=ann))
    watcher = await EventStream.open(address, "/stream?ch=room:lobby", jar=bo)
    assert watcher.status == 200
    # Bo's own join first, then Ann's when her multiplexed stream opens.
    assert _data(await _next_of(watcher, "presence"))["count"] == 1
    ann_stream = await EventStream.open(address, "/stream?ch=room:lobby", jar=ann)
    assert ann_stream.status == 200
    joined = _data(await _next_of(watcher, "presence"))
    assert joined == {
        "room": "lobby",
        "action": "join",
        "user": {"id": ann_me["id"], "name": ann_me["name"]},
        "count": 2,
        "channel": "room:lobby",
    }
    present = json_object(await request(address, "GET", "/rooms/lobby/presence", jar=bo))
    assert present["count"] == 2
    # Her stream closes: she leaves after the grace.
    await ann_stream.close()
    left = _data(await _next_of(watcher, "presence"))
    assert (left["action"], left["user"]["id"], left["count"]) == ("leave", ann_me["id"], 1)
    await watcher.close()
