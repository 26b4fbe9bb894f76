"""Rooms and their messages in the PostgreSQL database of `PostgresStore`, through its pool.

The tables are made by the store's numbered migrations (`ROOMS_MIGRATION`);
the lobby is a row from the start.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg 0.32 ships no type hints

from sse.chat.rooms.records import LOBBY, RoomMessage, Sender
from sse.chat.store.base import StoreHealth

__all__ = ["ROOMS_MIGRATION", "PostgresRooms"]

ROOMS_MIGRATION = f"""
    CREATE TABLE IF NOT EXISTS rooms (
        name        TEXT PRIMARY KEY,
        created_at  DOUBLE PRECISION NOT NULL,
        created_by  TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS room_messages (
        id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        room        TEXT NOT NULL REFERENCES rooms(name),
        text        TEXT NOT NULL,
        from_id     TEXT NOT NULL,
        from_name   TEXT NOT NULL,
        at          DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS room_messages_by_room ON room_messages (room, id);
    INSERT INTO rooms (name, created_at, created_by) VALUES ('{LOBBY}', 0, 'seed')
        ON CONFLICT DO NOTHING;
"""
# Serialises room creations across nodes, so the cap on rooms holds (pg_advisory_xact_lock).
_CREATE_LOCK = int.from_bytes(b"ssechat5", "big")


def _text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; U+FFFD shows where it was.
    return value.replace("\0", "\ufffd")


def _message(row: Any) -> RoomMessage:
    return RoomMessage(
        row["id"], row["room"], row["text"], Sender(row["from_id"], row["from_name"]), row["at"]
    )


class PostgresRooms:
    """The `RoomStore` of one PostgreSQL database, sharing its store's pool and health."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        health: StoreHealth,
        unavailable: Callable[[BaseException], str | None],
    ) -> None:
        self._pool = pool
        self._health = health
        self._unavailable = unavailable

    async def create_room(self, name: str, created_by: str, max_rooms: int) -> str:
        """Make room `name` unless it exists or `max_rooms` do, one node at a time."""
        pool = self._pool()
        with self._health.watch(self._unavailable, write=True):
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _CREATE_LOCK)
                if await conn.fetchval("SELECT 1 FROM rooms WHERE name = $1", name):
                    return "exists"
                if await conn.fetchval("SELECT COUNT(*) FROM rooms") >= max_rooms:
                    return "full"
                await conn.execute(
                    "INSERT INTO rooms (name, created_at, created_by) VALUES ($1, $2, $3)",
                    name,
                    time.time(),
                    created_by,
                )
        return "created"

    async def room_names(self, limit: int) -> list[str]:
        """At most `limit` names, in name order (bytewise, as SQLite orders them)."""
        with self._health.watch(self._unavailable, write=False):
            rows = await self._pool().fetch(
                'SELECT name FROM rooms ORDER BY name COLLATE "C" LIMIT $1', limit
            )
        return [row["name"] for row in rows]

    async def room_exists(self, name: str) -> bool:
        """One indexed lookup."""
        with self._health.watch(self._unavailable, write=False):
            found = await self._pool().fetchval("SELECT 1 FROM rooms WHERE name = $1", name)
        return found is not None

    async def add_room_message(self, room: str, text: str, sender: Sender) -> RoomMessage | None:
        """Insert it if the room exists; its id is the row's."""
        at = time.time()
        text, sender = _text(text), Sender(_text(sender.id), _text(sender.name))
        with self._health.watch(self._unavailable, write=True):
            found = await self._pool().fetchval(
                "INSERT INTO room_messages (room, text, from_id, from_name, at) "
                "SELECT name, $2, $3, $4, $5 FROM rooms WHERE name = $1 RETURNING id",
                room,
                text,
                sender.id,
                sender.name,
                at,
            )
        return None if found is None else RoomMessage(found, room, text, sender, at)

    async def add_room_messages(
        self, room: str, messages: Sequence[tuple[str, Sender]]
    ) -> list[RoomMessage | None]:
        """One transaction for all of them (the seed's posts, kept behind their answers)."""
        at = time.time()
        kept: list[RoomMessage | None] = []
        with self._health.watch(self._unavailable, write=True):
            async with self._pool().acquire() as conn, conn.transaction():
                for text, sender in messages:
                    text, sender = _text(text), Sender(_text(sender.id), _text(sender.name))
                    found = await conn.fetchval(
                        "INSERT INTO room_messages (room, text, from_id, from_name, at) "
                        "SELECT name, $2, $3, $4, $5 FROM rooms WHERE name = $1 RETURNING id",
                        room,
                        text,
                        sender.id,
                        sender.name,
                        at,
                    )
                    kept.append(
                        None if found is None else RoomMessage(found, room, text, sender, at)
                    )
        return kept

    async def room_messages(self, room: str, before: int | None, limit: int) -> list[RoomMessage]:
        """Newest first from the index, then turned oldest first."""
        with self._health.watch(self._unavailable, write=False):
            rows = await self._pool().fetch(
                "SELECT id, room, text, from_id, from_name, at FROM room_messages "
                "WHERE room = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
                room,
                before if before is not None else 2**63 - 1,
                limit,
            )
        return [_message(row) for row in reversed(rows)]
