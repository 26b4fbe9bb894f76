"""What rooms share: valid names, topics, messages as kept and as sent, the store's interface."""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "LOBBY",
    "ROOM_NAME",
    "RoomMessage",
    "RoomStore",
    "Sender",
    "iso_utc",
    "room_topic",
]

# The seed's room: its plain-text API (GET /events, POST /send-message) is this room.
LOBBY = "lobby"
ROOM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")


def room_topic(name: str) -> str:
    """The hub topic of room `name`: its JSON events (message, presence, typing)."""
    return f"room:{name}"


def iso_utc(at: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC, to the millisecond (`...T12:00:00.000Z`)."""
    moment = datetime.datetime.fromtimestamp(at, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Sender:
    """Who a room message or presence is from, as everyone in the room sees them."""

    id: str
    name: str

    def public(self) -> dict[str, str]:
        """The `from` / `user` object of the room's events."""
        return {"id": self.id, "name": self.name}


@dataclass(frozen=True, slots=True)
class RoomMessage:
    """One message of a room, as the store keeps it; `id` orders a room's messages."""

    id: int
    room: str
    text: str
    sender: Sender
    at: float  # seconds since the epoch

    def public(self) -> dict[str, object]:
        """The data of its `event: message`, and of its entry in a scrollback."""
        return {
            "id": str(self.id),
            "room": self.room,
            "text": self.text,
            "from": self.sender.public(),
            "at": iso_utc(self.at),
        }


class RoomStore(Protocol):
    """Rooms and their messages, in the conversation store's database.

    Rooms are public: no query names an owner. Every method raises
    StoreUnavailable when the database failed.
    """

    async def create_room(self, name: str, created_by: str, max_rooms: int) -> str:
        """Make room `name`: "created", "exists", or "full" (there are `max_rooms` already)."""
        ...

    async def room_names(self, limit: int) -> list[str]:
        """The names of at most `limit` rooms, in name order."""
        ...

    async def room_exists(self, name: str) -> bool:
        """Whether room `name` was made."""
        ...

    async def add_room_message(self, room: str, text: str, sender: Sender) -> RoomMessage | None:
        """Keep a new message of `room`, now; None when there is no such room."""
        ...

    async def add_room_messages(
        self, room: str, messages: Sequence[tuple[str, Sender]]
    ) -> list[RoomMessage | None]:
        """Keep several new messages of `room` at once, in order; None for each if no such room."""
        ...

    async def room_messages(self, room: str, before: int | None, limit: int) -> list[RoomMessage]:
        """The newest `limit` messages of `room` below id `before` (if given), oldest first."""
        ...
