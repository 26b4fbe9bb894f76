"""Who is in a room: per person, not per connection, with a grace before leaving.

A person (an identity's owner) joins a room with their first open stream of it
and leaves `grace_s` after their last one closed: a reload or a dropped network
that reconnects within the grace is not a leave and a join again. Each join and
leave is an ephemeral `event: presence` on the room's topic.

This node's table (`enter`/`leave`) holds one entry per person with a stream
here or in their grace: bounded by the open streams. Alone, the node's table is
the room's presence. With Redis (`sse.chat.rooms.presence_redis`), each node
holds its people there under a lease it renews; the union is the presence, and
a killed node's people leave once its lease lapses.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from sse.chat.rooms.records import Sender, room_topic
from sse.errors import BrokerUnavailable
from sse.pubsub.ephemeral import Ephemeral

__all__ = ["Presence", "PresenceHandle", "SharedPresence", "StreamHook", "quietly", "together"]

log = logging.getLogger("ssechat.rooms")

# Called when a stream is live; what it returns is called once when it closes
# (`OpenStream.on_open`).
StreamHook = Callable[[], Callable[[], None]]
Spawn = Callable[[Coroutine[Any, Any, None]], object]


def together(hooks: list[StreamHook]) -> StreamHook:
    """One hook for a stream carrying several rooms (a multiplexed stream): all enter, all leave."""

    def opened() -> Callable[[], None]:
        closers = [hook() for hook in hooks]

        def closed() -> None:
            for close in closers:
                close()

        return closed

    return opened


class SharedPresence(Protocol):
    """The presence of every node together (Redis), fed by this node's table."""

    def changed(self, room: str, owner: str) -> None:
        """This node's entry for (`room`, `owner`) appeared or went: make Redis agree."""

    async def users(self, room: str) -> list[Sender]:
        """Who is in `room` on any node."""
        ...

    async def counts(self, rooms: list[str]) -> dict[str, int]:
        """How many people are in each of `rooms`, on any node."""
        ...


@dataclass(slots=True)
class _Held:
    sender: Sender
    streams: int
    timer: asyncio.TimerHandle | None = None


class PresenceHandle:
    """One stream's part in its person's presence in a room; `Presence.leave` gives it back."""

    __slots__ = ("_left", "owner", "room")

    def __init__(self, room: str, owner: str) -> None:
        self.room = room
        self.owner = owner
        self._left = False

    def take(self) -> bool:
        """True once: the first `leave` of this handle counts, any other is ignored."""
        if self._left:
            return False
        self._left = True
        return True


class Presence:
    """This node's people in rooms, and (without `shared`) the rooms' presence itself."""

    def __init__(self, ephemeral: Ephemeral, grace_s: float, spawn: Spawn) -> None:
        self._ephemeral = ephemeral
        self._grace_s = grace_s
        self._spawn = spawn
        self._held: dict[tuple[str, str], _Held] = {}
        self._rooms: dict[str, dict[str, Sender]] = {}  # room -> owner -> who, held here
        self.shared: SharedPresence | None = None

    # -- the hook of a room's streams ------------------------------------------

    def hook(self, room: str, owner: str, sender: Sender) -> StreamHook:
        """For `OpenStream.on_open`: enter when the stream is live, leave when it closes."""

        def opened() -> Callable[[], None]:
            handle = self.enter(room, owner, sender)
            return lambda: self.leave(handle)

        return opened

    def enter(self, room: str, owner: str, sender: Sender) -> PresenceHandle:
        """One more stream of `owner` (shown as `sender`) in `room`: joins with the first."""
        key = (room, owner)
        held = self._held.get(key)
        if held is not None:
            held.streams += 1
            if held.timer is not None:  # back within the grace: no leave, no join
                held.timer.cancel()
                held.timer = None
            return PresenceHandle(room, owner)
        self._held[key] = _Held(sender, 1)
        self._rooms.setdefault(room, {})[owner] = sender
        if self.shared is not None:
            self.shared.changed(room, owner)
        else:
            self.announce(room, "join", sender, len(self._rooms[room]))
        return PresenceHandle(room, owner)

    def leave(self, handle: PresenceHandle) -> None:
        """One stream fewer (once per handle); the last one starts the grace."""
        if not handle.take():
            return
        key = (handle.room, handle.owner)
        held = self._held.get(key)
        if held is None:
            return
        held.streams -= 1
        if held.streams <= 0:
            loop = asyncio.get_running_loop()
            held.timer = loop.call_later(self._grace_s, self._expire, key)

    def _expire(self, key: tuple[str, str]) -> None:
        held = self._held.pop(key, None)
        if held is None:
            return
        room, owner = key
        people = self._rooms.get(room, {})
        people.pop(owner, None)
        if not people:
            self._rooms.pop(room, None)
        if self.shared is not None:
            self.shared.changed(room, owner)
        else:
            self.announce(room, "leave", held.sender, len(people))

    # -- what this node holds, for the shared presence --------------------------

    def held_here(self, room: str, owner: str) -> Sender | None:
        """Who (`room`, `owner`) is, while this node holds them (streams or grace)."""
        held = self._held.get((room, owner))
        return None if held is None else held.sender

    def all_held(self) -> list[tuple[str, str, Sender]]:
        """Every (room, owner, who) this node holds, for renewing its lease."""
        return [(room, owner, held.sender) for (room, owner), held in self._held.items()]

    # -- reading -----------------------------------------------------------------

    def users(self, room: str) -> list[Sender] | Awaitable[list[Sender]]:
        """Who is in `room` now."""
        if self.shared is not None:
            return self.shared.users(room)
        return sorted(self._rooms.get(room, {}).values(), key=lambda s: (s.name, s.id))

    def counts(self, rooms: list[str]) -> dict[str, int] | Awaitable[dict[str, int]]:
        """How many people are in each of `rooms`."""
        if self.shared is not None:
            return self.shared.counts(rooms)
        return {room: len(self._rooms.get(room, ())) for room in rooms}

    # -- events --------------------------------------------------------------------

    def announce(self, room: str, action: str, sender: Sender, count: int) -> None:
        """`publish`, without waiting (a failure is logged)."""
        sent = self.publish(room, action, sender, count)
        if sent is not None:
            self._spawn(quietly(sent, room))

    def publish(self, room: str, action: str, sender: Sender, count: int) -> Awaitable[None] | None:
        """Publish `event: presence` (no id, no history) to every stream of `room`, on every node.

        Raises:
            BrokerUnavailable: (from the awaitable) the broker did not take it.
        """
        data = json.dumps({"room": room, "action": action, "user": sender.public(), "count": count})
        return self._ephemeral.publish(room_topic(room), data, event="presence")

    def close(self) -> None:
        """Stop every grace timer: a stopping node announces no more leaves of its own."""
        for held in self._held.values():
            if held.timer is not None:
                held.timer.cancel()
                held.timer = None


async def quietly(sent: Awaitable[None], room: str) -> None:
    """Wait for a presence event to be published; a failure is logged, not raised."""
    try:
        await sent
    except BrokerUnavailable as exc:
        log.warning("a presence event of room %s was not published: %s", room, exc)
