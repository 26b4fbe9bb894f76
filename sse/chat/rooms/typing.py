"""`event: typing`: ephemeral, and at most one per person per room every `interval_s`.

The throttle is this node's own table without Redis; with it, a key that
lapses (SET NX EX), so a person behind a load balancer is throttled once for
all nodes.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Awaitable

from sse.chat.rooms.records import Sender, room_topic
from sse.pubsub.broker import Broker, settle
from sse.pubsub.ephemeral import Ephemeral

__all__ = ["TYPING_INTERVAL_S", "Typing"]

TYPING_INTERVAL_S = 2
# People remembered at most by one node's throttle (those typing in the last interval).
_MAX_TRACKED = 100_000


class Typing:
    """Publishes typing notices, one per person per room per interval."""

    def __init__(self, broker: Broker, ephemeral: Ephemeral) -> None:
        self._broker = broker
        self._ephemeral = ephemeral
        self._last: OrderedDict[tuple[str, str], float] = OrderedDict()  # oldest first

    def notify(self, room: str, owner: str, sender: Sender) -> bool | Awaitable[bool]:
        """Tell `room` that `sender` is typing; False when throttled (nothing published).

        Raises:
            BrokerUnavailable: the throttle or the broker could not be reached.
        """
        if self._broker.shared:
            return self._notify_shared(room, owner, sender)
        now = time.monotonic()
        last = self._last
        while last and (
            next(iter(last.values())) <= now - TYPING_INTERVAL_S or len(last) >= _MAX_TRACKED
        ):
            last.popitem(last=False)
        key = (room, owner)
        if key in last:
            return False
        last[key] = now
        self._publish(room, sender)
        return True

    async def _notify_shared(self, room: str, owner: str, sender: Sender) -> bool:
        claim = self._broker.claim_once(f"typing:{room}:{owner}", TYPING_INTERVAL_S)
        if not await settle(claim):
            return False
        await settle(self._publish(room, sender))
        return True

    def _publish(self, room: str, sender: Sender) -> Awaitable[None] | None:
        data = json.dumps({"room": room, "user": sender.public()})
        return self._ephemeral.publish(room_topic(room), data, event="typing")
