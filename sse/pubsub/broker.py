"""Where events are ordered and kept: this process (`MemoryBroker`), or Redis.

Either way the local `Hub` does the fan-out to this process's streams: one
encode, one write per stream. The broker decides the event ids, keeps the
history that `Last-Event-ID` resumes from, and (with Redis) carries every event
to every process. The in-memory broker answers at once, so its methods return
plain values; the Redis one must wait on the network and returns awaitables.
Callers take both through `settle`.
"""

from __future__ import annotations

import inspect
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVar
from uuid import UUID

from sse.metrics import event_published
from sse.pubsub.hub import Hub, Resume, Sink

__all__ = ["Broker", "ControlHandler", "MemoryBroker", "settle"]

T = TypeVar("T")
# One-shot claims remembered at most by a process (tickets minted in the last
# minute); past it the oldest are forgotten, which only shortens their minute.
_MAX_CLAIMS = 100_000
# Receives each control message between nodes (e.g. "stop that reply").
ControlHandler = Callable[[Mapping[str, str]], None]


async def settle(value: T | Awaitable[T]) -> T:
    """The value itself, or what it resolves to."""
    if inspect.isawaitable(value):
        return await value
    return value


class Broker(Protocol):
    """Publishes events, replays history, and feeds the local hub."""

    hub: Hub
    # True when other processes publish and subscribe through the same broker.
    shared: bool

    async def start(self) -> None:
        """Connect and start delivering."""

    async def close(self) -> None:
        """Stop delivering and disconnect."""

    def publish(self, topic: str, data: str, *, event: str | None = None) -> str | Awaitable[str]:
        """Append an event to `topic`; the id it got once the broker has it.

        Raises:
            EncodeError: the event cannot be carried by the event-stream format.
            BrokerUnavailable: the broker could not take it; nothing was published.
        """
        ...

    def attach(
        self, topic: str, key: UUID, sink: Sink, last_event_id: str | None
    ) -> Resume | Awaitable[Resume]:
        """Subscribe `sink`; what it must receive first (after `last_event_id`).

        The replay and the live events that follow it neither overlap nor
        leave a hole. Raises BrokerUnavailable when the history cannot be read.
        """
        ...

    def detach(self, topic: str, key: UUID) -> None:
        """Unsubscribe the sink under `key`, attached or still attaching."""

    def last_id(self, topic: str) -> str | Awaitable[str]:
        """The id of `topic`'s newest event, for a client to resume after."""
        ...

    def health(self) -> Mapping[str, object]:
        """What `/healthz` reports about the broker."""
        ...

    async def ready(self, timeout_s: float) -> str | None:
        """None if the broker answers within `timeout_s`, else why not (for `/readyz`)."""
        ...

    def on_control(self, handler: ControlHandler) -> None:
        """Have `handler` called with every control message any node sends."""

    def claim_once(self, key: str, ttl_s: int) -> bool | Awaitable[bool]:
        """True the first time `key` is claimed within `ttl_s` seconds, on any node.

        What makes a stream ticket single-use across nodes.

        Raises:
            BrokerUnavailable: it could not be checked.
        """
        ...

    def send_control(self, fields: Mapping[str, str]) -> Awaitable[None] | None:
        """Send a control message to every node, this one included.

        Raises:
            BrokerUnavailable: it could not be sent.
        """


class MemoryBroker:
    """One process: the hub itself orders, keeps and delivers every event."""

    name = "memory"
    shared = False

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._claims: OrderedDict[str, float] = OrderedDict()  # key -> when it lapses

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to disconnect from."""

    def publish(self, topic: str, data: str, *, event: str | None = None) -> str:
        """Publish now; the id is `<epoch>-<seq>`."""
        published = self.hub.publish(topic, data, event=event).id
        event_published(event)
        return published

    def attach(self, topic: str, key: UUID, sink: Sink, last_event_id: str | None) -> Resume:
        """Read the history and subscribe in one step: no event can fall between."""
        resume = Resume(()) if last_event_id is None else self.hub.resume(topic, last_event_id)
        self.hub.subscribe(topic, key, sink)
        return resume

    def detach(self, topic: str, key: UUID) -> None:
        """Unsubscribe at once."""
        self.hub.unsubscribe(topic, key)

    def last_id(self, topic: str) -> str:
        """The hub knows it."""
        return self.hub.last_id(topic)

    def health(self) -> Mapping[str, object]:
        """Always up."""
        return {"broker": self.name}

    async def ready(self, timeout_s: float) -> str | None:
        """Always ready: the hub is in this process."""
        return None

    def on_control(self, handler: ControlHandler) -> None:
        """No other node can send any."""

    def claim_once(self, key: str, ttl_s: int) -> bool:
        """True the first time `key` is claimed within `ttl_s` seconds."""
        now = time.monotonic()
        claims = self._claims
        while claims and (next(iter(claims.values())) <= now or len(claims) >= _MAX_CLAIMS):
            claims.popitem(last=False)
        lapses = claims.get(key)
        if lapses is not None and lapses > now:
            return False
        claims[key] = now + ttl_s
        return True

    def send_control(self, fields: Mapping[str, str]) -> None:
        """There is no other node to tell."""
