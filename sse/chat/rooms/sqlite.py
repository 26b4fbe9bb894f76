"""Rooms and their messages in the SQLite file of `SqliteStore`, on its one thread.

The tables are made by the store's `_migrate` (`ROOMS_SCHEMA`), in its
transaction; the lobby is a row from the start, so the seed's messages have a
room to be kept in.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable

from sse.chat.rooms.records import LOBBY, RoomMessage, Sender

__all__ = ["ROOMS_SCHEMA", "SqliteRooms"]

ROOMS_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS rooms (
    name        TEXT PRIMARY KEY,
    created_at  REAL NOT NULL,
    created_by  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS room_messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    room        TEXT NOT NULL REFERENCES rooms(name),
    text        TEXT NOT NULL,
    from_id     TEXT NOT NULL,
    from_name   TEXT NOT NULL,
    at          REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS room_messages_by_room ON room_messages (room, id);
INSERT OR IGNORE INTO rooms (name, created_at, created_by) VALUES ('{LOBBY}', 0, 'seed')
"""

_Row = tuple[int, str, str, str, str, float]


def _message(row: _Row) -> RoomMessage:
    return RoomMessage(row[0], row[1], row[2], Sender(row[3], row[4]), row[5])


class SqliteRooms:
    """The `RoomStore` of one SQLite file, through its store's worker thread."""

    def __init__(self, run: Callable[..., Awaitable[object]]) -> None:
        self._run = run

    async def create_room(self, name: str, created_by: str, max_rooms: int) -> str:
        """Make room `name` unless it exists or `max_rooms` do; one statement, one writer."""

        def insert(db: sqlite3.Connection) -> str:
            with db:
                cur = db.execute(
                    "INSERT OR IGNORE INTO rooms (name, created_at, created_by) "
                    "SELECT ?, ?, ? WHERE (SELECT COUNT(*) FROM rooms) < ?",
                    (name, time.time(), created_by, max_rooms),
                )
                if cur.rowcount == 1:
                    return "created"
                found = db.execute("SELECT 1 FROM rooms WHERE name = ?", (name,)).fetchone()
                return "exists" if found is not None else "full"

        return str(await self._run(insert, write=True))

    async def room_names(self, limit: int) -> list[str]:
        """At most `limit` names, in name order."""

        def select(db: sqlite3.Connection) -> list[str]:
            rows = db.execute("SELECT name FROM rooms ORDER BY name LIMIT ?", (limit,))
            return [row[0] for row in rows]

        names = await self._run(select)
        assert isinstance(names, list)
        return names

    async def room_exists(self, name: str) -> bool:
        """One indexed lookup."""

        def select(db: sqlite3.Connection) -> bool:
            return db.execute("SELECT 1 FROM rooms WHERE name = ?", (name,)).fetchone() is not None

        return bool(await self._run(select))

    async def add_room_message(self, room: str, text: str, sender: Sender) -> RoomMessage | None:
        """Insert it if the room exists; its id is the row's."""
        at = time.time()

        def insert(db: sqlite3.Connection) -> RoomMessage | None:
            with db:
                cur = db.execute(
                    "INSERT INTO room_messages (room, text, from_id, from_name, at) "
                    "SELECT name, ?, ?, ?, ? FROM rooms WHERE name = ?",
                    (text, sender.id, sender.name, at, room),
                )
                if cur.rowcount != 1 or cur.lastrowid is None:
                    return None
                return RoomMessage(cur.lastrowid, room, text, sender, at)

        stored = await self._run(insert, write=True)
        assert stored is None or isinstance(stored, RoomMessage)
        return stored

    async def room_messages(self, room: str, before: int | None, limit: int) -> list[RoomMessage]:
        """Newest first from the index, then turned oldest first."""

        def select(db: sqlite3.Connection) -> list[RoomMessage]:
            rows = db.execute(
                "SELECT id, room, text, from_id, from_name, at FROM room_messages "
                "WHERE room = ? AND id < ? ORDER BY id DESC LIMIT ?",
                (room, before if before is not None else 2**63 - 1, limit),
            )
            return [_message(row) for row in reversed(rows.fetchall())]

        found = await self._run(select)
        assert isinstance(found, list)
        return found
