"""Bounded memory over real sockets: history in bytes per channel and in total, replay cap."""

from __future__ import annotations

import json

from sse.io.server import Server
from sse.protocol.sse import DecodedEvent
from tests.support.client import EventStream, events_until, json_object, post_message, request
from tests.support.servers import MakeServer

JSON = [("content-type", "application/json")]


async def _held(server: Server) -> tuple[int, int]:
    health = json_object(await request(server.address, "GET", "/healthz"))
    return int(health["history_events"]), int(health["history_bytes"])


def _wire_size(event: DecodedEvent) -> int:
    # What the hub counts: the event as sent, "id: ...\ndata: ...\n\n".
    return len(f"id: {event.last_event_id}\ndata: {event.data}\n\n".encode())


async def test_histories_filled_past_their_byte_bounds_hold_no_more_than_the_bounds(
    make_server: MakeServer,
) -> None:
    server = await make_server(
        join_announcement=False, history_bytes=8192, history_total_bytes=16384, echo_delay_s=0.0
    )
    first_in_room = server.hub.last_id("room")
    text = "x" * 1000
    for i in range(20):
        assert (await post_message(server.address, f"{i:02} {text}")).status == 200
    # The seed's room alone (the lobby's JSON copies are a topic of their own).
    events, held = server.hub.topic_held("room")
    assert 8192 - 1100 < held <= 8192  # at its own bound
    assert events == 7
    # Three conversations, each listened to, each given more than it can keep.
    streams = []
    for _ in range(3):
        created = await request(server.address, "POST", "/conversations")
        cid = str(json_object(created)["id"])
        stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
        streams.append(stream)
        for _ in range(3):
            body = json.dumps({"content": text}).encode()
            posted = await request(
                server.address, "POST", f"/conversations/{cid}/messages", JSON, body
            )
            assert posted.status == 202
            await events_until(stream, "done")
    events, held = await _held(server)
    assert 16384 - 2048 < held <= 16384  # all channels together, at the total bound
    # The room, published to least recently, gave up its events first; resuming
    # from before them is told the gap, never silently skipped.
    room = await EventStream.open(server.address, headers=[("last-event-id", first_in_room)])
    gap = await room.next_event()
    assert gap.type == "gap"
    assert json.loads(gap.data)["last_event_id"] == first_in_room
    for stream in (*streams, room):
        await stream.close()


async def test_a_bogus_last_event_id_receives_a_gap_and_at_most_the_replay_cap(
    make_server: MakeServer,
) -> None:
    server = await make_server(join_announcement=False, max_replay_bytes=16384)
    for i in range(64):  # about 64 KB kept, well inside the history's bounds
        assert (await post_message(server.address, f"{i:02} " + "y" * 1000)).status == 200
    assert server.hub.topic_held("room")[0] == 64
    stream = await EventStream.open(server.address, headers=[("last-event-id", "bogus")])
    gap = await stream.next_event()
    assert gap.type == "gap"
    assert json.loads(gap.data)["last_event_id"] == "bogus"
    assert (await post_message(server.address, "live")).status == 200
    replayed: list[DecodedEvent] = []
    while not replayed or replayed[-1].data != "live":
        replayed.append(await stream.next_event())
    replayed.pop()
    size = sum(_wire_size(e) for e in replayed)
    # The newest that fit, in order, ending with the newest of all.
    assert size <= 16384 < size + _wire_size(replayed[0])
    assert [e.data[:2] for e in replayed] == [f"{i:02}" for i in range(64 - len(replayed), 64)]
    # The gap's id is the one just before the first replayed: resuming from it is exact.
    assert int(gap.last_event_id.rpartition("-")[2]) + 1 == int(
        replayed[0].last_event_id.rpartition("-")[2]
    )
    assert len(stream.raw) < 16384 + 2048  # the whole response so far: replay, gap, framing
    await stream.close()
