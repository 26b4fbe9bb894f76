"""Rooms and their messages in the SQLite file of `SqliteStore`, on its one thread.

The tables are made by the store's `_migrate` (`ROOMS_SCHEMA`), in its
transaction; the lobby is a row from the start, so the seed's messages have a
room to be kept in.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence

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


_Queued = tuple[str, str, Sender, float, "asyncio.Future[RoomMessage | None]"]


def _insert_all(
    rows: list[tuple[str, str, Sender, float]], db: sqlite3.Connection
) -> list[RoomMessage | None]:
    """Insert each message whose room exists, in one transaction; None for the others."""
    stored: list[RoomMessage | None] = []
    with db:  # one transaction, one commit (the connection is in autocommit otherwise)
        db.execute("BEGIN IMMEDIATE")
        for room, text, sender, at in rows:
            cur = db.execute(
                "INSERT INTO room_messages (room, text, from_id, from_name, at) "
                "SELECT name, ?, ?, ?, ? FROM rooms WHERE name = ?",
                (text, sender.id, sender.name, at, room),
            )
            row_id = cur.lastrowid if cur.rowcount == 1 else None
            stored.append(None if row_id is None else RoomMessage(row_id, room, text, sender, at))
    return stored


def _message(row: _Row) -> RoomMessage:
    return RoomMessage(row[0], row[1], row[2], Sender(row[3], row[4]), row[5])


class SqliteRooms:
    """The `RoomStore` of one SQLite file, through its store's worker thread."""

    def __init__(self, run: Callable[..., Awaitable[object]]) -> None:
        self._run = run
        self._queued: list[_Queued] = []  # messages waiting for the next batch
        self._writer: asyncio.Task[None] | None = None

    async def create_room(self, name: str, created_by: str, max_rooms: int) -> str:
        """Make room `name` unless it exists or `max_rooms` do; one statement, one writer."""

        def insert(db: sqlite3.Connection) -> str:
            with db:  # one transaction: the count and the insert belong together
                db.execute("BEGIN IMMEDIATE")
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
        """Insert it if the room exists; its id is the row's.

        Messages posted while an earlier batch is written wait and go in the
        next one, in one transaction: under load, one thread hop and one commit
        per batch, not per message (the seed's POST /send-message is a hot path).
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[RoomMessage | None] = loop.create_future()
        self._queued.append((room, text, sender, time.time(), done))
        if self._writer is None:
            self._writer = loop.create_task(self._write_queued())
        return await done

    async def add_room_messages(
        self, room: str, messages: Sequence[tuple[str, Sender]]
    ) -> list[RoomMessage | None]:
        """One transaction for all of them (the seed's posts, kept behind their answers)."""
        at = time.time()
        rows = [(room, text, sender, at) for text, sender in messages]
        stored = await self._run(functools.partial(_insert_all, rows), write=True)
        assert isinstance(stored, list)
        return stored

    async def _write_queued(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                rows = [(room, text, sender, at) for room, text, sender, at, _ in batch]
                try:
                    stored = await self._run(functools.partial(_insert_all, rows), write=True)
                except Exception as exc:
                    for *_, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                assert isinstance(stored, list)
                for (*_, done), message in zip(batch, stored, strict=True):
                    if not done.done():
                        done.set_result(message)
        finally:
            self._writer = None

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
