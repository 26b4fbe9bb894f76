"""Named rooms: making and listing them, their messages kept and published, scrollback.

A message is kept in the store first and published after: what the poster is
told was sent is in the database (scrollback and restarts keep it), and a
message that could not be kept is published nowhere. The event id of a
message on the room's stream is the broker's (for Last-Event-ID); the `id` in
its data is the store's (for `?before=` scrollback).

The lobby is also the seed's plain-text room (topic `room`): a message posted
to it here reaches the seed's streams too, as plain text, as the seed's own
posts reach this room's streams with their sender.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from sse.chat.rooms.presence import Presence
from sse.chat.rooms.records import LOBBY, ROOM_NAME, RoomMessage, RoomStore, Sender, room_topic
from sse.chat.rooms.typing import Typing
from sse.errors import BrokerUnavailable, ClientError, EncodeError
from sse.pubsub.broker import Broker, settle

__all__ = ["SEED_TOPIC", "RoomService"]

log = logging.getLogger("ssechat.rooms")

# The seed's plain-text topic (sse.app.room.ROOM): the lobby's other face.
SEED_TOPIC = "room"
# Names known to exist are remembered (rooms are never deleted): a post pays no lookup.
_KNOWN_MAX = 100_000


class RoomService:
    """Rooms, their messages, presence and typing."""

    def __init__(
        self,
        store: RoomStore,
        broker: Broker,
        presence: Presence,
        typing: Typing,
        *,
        max_rooms: int,
        spawn: Callable[[Coroutine[Any, Any, None]], object],
    ) -> None:
        self.store = store
        self.presence = presence
        self.typing = typing
        self._broker = broker
        self._max_rooms = max_rooms
        self._spawn = spawn
        self._known: set[str] = {LOBBY}

    @staticmethod
    def check_name(name: str) -> str:
        """`name` if it is a room name (`[a-z0-9][a-z0-9_-]{0,63}`).

        Raises:
            ClientError: 400 otherwise.
        """
        if not ROOM_NAME.match(name):
            raise ClientError(
                400, "a room name is 1 to 64 of a-z, 0-9, _ and -, starting with a letter or digit"
            )
        return name

    async def exists(self, name: str) -> bool:
        """Whether room `name` was made (remembered once seen)."""
        if name in self._known:
            return True
        if not ROOM_NAME.match(name) or not await self.store.room_exists(name):
            return False
        if len(self._known) < _KNOWN_MAX:
            self._known.add(name)
        return True

    async def create(self, name: str, created_by: str) -> bool:
        """Make room `name`; False when it existed already.

        Raises:
            ClientError: 400 for a bad name, 409 when there are `max_rooms` rooms.
        """
        self.check_name(name)
        made = await self.store.create_room(name, created_by, self._max_rooms)
        if made == "full":
            raise ClientError(
                409, f"there are {self._max_rooms} rooms already; no more can be made"
            )
        self._known.add(name)
        return made == "created"

    async def listing(self) -> list[dict[str, object]]:
        """Every room (up to the cap) with how many people are in it now."""
        names = await self.store.room_names(self._max_rooms)
        counts = await settle(self.presence.counts(names))
        return [{"name": name, "members": counts.get(name, 0)} for name in names]

    async def post(self, room: str, text: str, sender: Sender) -> RoomMessage:
        """Keep `text` as `sender`'s message of `room`, then publish it to the room.

        Raises:
            ClientError: 404 for no such room; 503 when it was kept but could
                not be published (it is in the scrollback; do not post it again).
            StoreUnavailable: the store could not keep it; it went nowhere.
        """
        message = await self.store.add_room_message(room, text, sender)
        if message is None:
            raise ClientError(404, f"no such room: {room}")
        try:
            await settle(self._broker.publish(room_topic(room), _data(message), event="message"))
        except (BrokerUnavailable, EncodeError) as exc:
            raise ClientError(
                503, f"the message was kept (id {message.id}) but not delivered live: {exc}"
            ) from None
        if room == LOBBY:
            await self._to_seed(message.text)
        return message

    async def keep_seed_post(self, text: str, sender: Sender) -> RoomMessage | None:
        """Keep a post of the seed API (already published to its topic) in the lobby.

        Raises:
            StoreUnavailable: the store could not keep it.
        """
        return await self.store.add_room_message(LOBBY, text, sender)

    def publish_seed_post(self, message: RoomMessage) -> None:
        """Publish a kept seed post to the lobby's JSON stream, without waiting.

        The seed's own streams have it already and the store keeps it, so the
        seed's poster is not kept waiting for this, nor told of a failure here
        (it must not post again): a failure is logged.
        """
        try:
            published = self._broker.publish(room_topic(LOBBY), _data(message), event="message")
        except EncodeError as exc:  # the seed's topic took the same text
            log.warning("lobby message %d not published to room:lobby: %s", message.id, exc)
            return
        if not isinstance(published, str):
            self._spawn(_logged(published, message.id))

    async def _to_seed(self, text: str) -> None:
        try:
            await settle(self._broker.publish(SEED_TOPIC, text))
        except (BrokerUnavailable, EncodeError) as exc:
            log.warning("a lobby message did not reach the seed's streams: %s", exc)

    async def scrollback(self, room: str, before: int | None, limit: int) -> list[RoomMessage]:
        """The `limit` messages of `room` before id `before`, oldest first.

        Raises:
            ClientError: 404 for no such room.
        """
        if not await self.exists(room):
            raise ClientError(404, f"no such room: {room}")
        return await self.store.room_messages(room, before, limit)


async def _logged(published: Awaitable[str], message_id: int) -> None:
    try:
        await published
    except (BrokerUnavailable, EncodeError) as exc:
        log.warning("lobby message %d not published to room:lobby: %s", message_id, exc)


def _data(message: RoomMessage) -> str:
    return json.dumps(message.public())
