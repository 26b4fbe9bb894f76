"""Ephemeral events (presence, typing): to every node's streams of a topic, never kept.

They carry no id and stay out of every history, so a client resuming by
Last-Event-ID is not replayed who was typing a minute ago. One process hands
them to its hub at once; with a shared broker (Redis) they travel as control
messages, which every node (this one included) hands to its own hub. The
control stream is capped by Redis itself and read from its end by a starting
node, so they are never replayed from there either.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping

from sse.errors import EncodeError
from sse.protocol.sse import Event, encode
from sse.pubsub.broker import Broker

__all__ = ["Ephemeral"]

log = logging.getLogger("ssechat.pubsub")

# The control field that marks an ephemeral event (other control messages have "op").
_TOPIC = "ephemeral"


class Ephemeral:
    """Publishes events without id or history through `broker`, to every node."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        if broker.shared:
            broker.on_control(self._received)

    def publish(self, topic: str, data: str, *, event: str) -> Awaitable[None] | None:
        """Push `event` to every stream of `topic`, on every node.

        Raises:
            EncodeError: the event cannot be carried by the event-stream format.
            BrokerUnavailable: (from the awaitable) the shared broker did not take it.
        """
        if not self._broker.shared:
            self._broker.hub.broadcast(topic, data, event=event)
            return None
        encode(Event(data, event=event))  # refused here, before any node receives it
        return self._broker.send_control({_TOPIC: topic, "e": event, "d": data})

    def _received(self, fields: Mapping[str, str]) -> None:
        topic = fields.get(_TOPIC)
        if topic is None:
            return
        try:
            self._broker.hub.broadcast(topic, fields.get("d", ""), event=fields.get("e", ""))
        except EncodeError:
            log.error("an ephemeral event of %s cannot be sent as an event; skipped", topic)
