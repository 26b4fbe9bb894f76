"""Presence on one node, through the real hub: per person, idempotent leaves, hooks together."""

from __future__ import annotations

import asyncio
import json
from uuid import uuid4

from sse.chat.rooms.presence import Presence, together
from sse.chat.rooms.records import Sender, room_topic
from sse.protocol.frame import Frame
from sse.pubsub.broker import MemoryBroker
from sse.pubsub.ephemeral import Ephemeral
from sse.pubsub.hub import Hub
from tests.support.client import wait_until


class Collect:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def push(self, frame: Frame) -> None:
        self.frames.append(frame)

    def presence(self) -> list[tuple[str, str, int]]:
        out = []
        for frame in self.frames:
            assert frame.event is not None
            data = json.loads(frame.event.data)
            out.append((data["action"], data["user"]["id"], data["count"]))
        return out


def _presence(grace_s: float) -> tuple[Presence, Hub]:
    hub = Hub(history_size=10, epoch="e")
    spawned: list[object] = []
    return Presence(Ephemeral(MemoryBroker(hub)), grace_s, spawned.append), hub


async def test_a_person_is_one_presence_however_many_streams() -> None:
    presence, hub = _presence(0.01)
    sink = Collect()
    hub.subscribe(room_topic("lobby"), uuid4(), sink)
    ann = Sender("ann", "Ann")
    first = presence.enter("lobby", "guest:ann", ann)
    second = presence.enter("lobby", "guest:ann", ann)
    assert sink.presence() == [("join", "ann", 1)]
    presence.leave(first)
    presence.leave(first)  # a second leave of one handle counts nothing
    await asyncio.sleep(0.05)
    assert presence.users("lobby") == [ann]
    presence.leave(second)
    await wait_until(lambda: len(sink.frames) == 2, what="the leave after the grace")
    assert sink.presence() == [("join", "ann", 1), ("leave", "ann", 0)]
    assert presence.users("lobby") == []
    assert presence.counts(["lobby"]) == {"lobby": 0}


async def test_hooks_together_enter_and_leave_every_room() -> None:
    presence, _ = _presence(0.01)
    bob = Sender("bob", "Bob")
    hook = together([presence.hook(room, "guest:bob", bob) for room in ("a", "b")])
    close = hook()
    assert presence.counts(["a", "b"]) == {"a": 1, "b": 1}
    close()
    await wait_until(lambda: presence.counts(["a", "b"]) == {"a": 0, "b": 0}, what="leaves")
    assert presence.all_held() == []
