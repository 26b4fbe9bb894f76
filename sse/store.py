"""Conversations and their messages in SQLite, kept off the event loop.

One connection lives on one dedicated thread: sqlite3 connections must not be
shared between threads, and a single writer is all SQLite allows anyway.
WAL mode lets readers proceed while a reply is being saved.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from uuid import uuid4

__all__ = ["ConversationSummary", "SqliteStore", "StoredMessage", "Transcript"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id          TEXT PRIMARY KEY,
    title       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id              TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    seq             INTEGER NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content         TEXT NOT NULL,
    status          TEXT NOT NULL,
    finish_reason   TEXT,
    model           TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    error           TEXT,
    UNIQUE (conversation_id, seq)
);
CREATE INDEX IF NOT EXISTS conversations_by_update ON conversations (updated_at DESC);
"""

NEW_TITLE = "New conversation"
_TITLE_CHARS = 60


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """A conversation as listed: id, title, times (seconds since the epoch)."""

    id: str
    title: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message of a transcript.

    `status` is "complete" for user messages; for replies "streaming" while one
    runs, then "complete", "cancelled", "error", or "interrupted" when a shutdown
    or crash cut it short (its content is what had arrived by then).
    """

    id: str
    role: str
    content: str
    status: str
    finish_reason: str | None
    model: str | None
    created_at: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Transcript:
    """A conversation with all its messages, oldest first."""

    conversation: ConversationSummary
    messages: tuple[StoredMessage, ...]


def _title_from(content: str) -> str:
    line = " ".join(content.split())
    return line if len(line) <= _TITLE_CHARS else line[: _TITLE_CHARS - 1] + "…"


class SqliteStore:
    """The conversation store on one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db
        if db is None:
            raise RuntimeError("store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, db)

    async def open(self) -> int:
        """Open (and create) the database; returns how many replies were found cut short."""

        def connect() -> tuple[sqlite3.Connection, int]:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
            if "error" not in columns:  # a database made before replies kept their error
                db.execute("ALTER TABLE messages ADD COLUMN error TEXT")
            # A reply still "streaming" at start-up was cut short by a crash.
            cur = db.execute(
                "UPDATE messages SET status = 'interrupted' WHERE status = 'streaming'"
            )
            return db, cur.rowcount

        loop = asyncio.get_running_loop()
        self._db, recovered = await loop.run_in_executor(self._executor, connect)
        return recovered

    async def close(self) -> None:
        """Close the database and its thread."""
        db, self._db = self._db, None
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
        self._executor.shutdown(wait=True)

    async def create_conversation(self) -> ConversationSummary:
        """A new, empty conversation with an unguessable id (UUID4)."""
        now = time.time()
        summary = ConversationSummary(str(uuid4()), NEW_TITLE, now, now)

        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO conversations (id, title, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (summary.id, summary.title, now, now),
            )

        await self._run(insert)
        return summary

    async def list_conversations(self, limit: int) -> list[ConversationSummary]:
        """The most recently updated conversations first."""

        def select(db: sqlite3.Connection) -> list[ConversationSummary]:
            rows = db.execute(
                "SELECT id, title, created_at, updated_at FROM conversations "
                "ORDER BY updated_at DESC, id LIMIT ?",
                (limit,),
            ).fetchall()
            return [ConversationSummary(*row) for row in rows]

        return await self._run(select)

    async def exists(self, conversation_id: str) -> bool:
        """Whether a conversation with this id exists."""

        def select(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
            return row is not None

        return await self._run(select)

    async def transcript(self, conversation_id: str) -> Transcript | None:
        """The conversation and its messages, or None if there is no such conversation."""

        def select(db: sqlite3.Connection) -> Transcript | None:
            row = db.execute(
                "SELECT id, title, created_at, updated_at FROM conversations WHERE id = ?",
                (conversation_id,),
            ).fetchone()
            if row is None:
                return None
            rows = db.execute(
                "SELECT id, role, content, status, finish_reason, model, created_at, error "
                "FROM messages WHERE conversation_id = ? ORDER BY seq",
                (conversation_id,),
            ).fetchall()
            return Transcript(ConversationSummary(*row), tuple(StoredMessage(*r) for r in rows))

        return await self._run(select)

    async def add_message(
        self,
        conversation_id: str,
        role: str,
        content: str,
        status: str,
        model: str | None = None,
    ) -> StoredMessage | None:
        """Append a message; None if the conversation does not exist.

        The first user message also becomes the conversation's title.
        """
        now = time.time()
        message = StoredMessage(str(uuid4()), role, content, status, None, model, now)

        def insert(db: sqlite3.Connection) -> StoredMessage | None:
            with db:  # one transaction: the seq read and the insert belong together
                db.execute("BEGIN IMMEDIATE")
                row = db.execute(
                    "SELECT title FROM conversations WHERE id = ?", (conversation_id,)
                ).fetchone()
                if row is None:
                    return None
                seq = db.execute(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE conversation_id = ?",
                    (conversation_id,),
                ).fetchone()[0]
                db.execute(
                    "INSERT INTO messages (id, conversation_id, seq, role, content, status, "
                    "model, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (message.id, conversation_id, seq, role, content, status, model, now, now),
                )
                title = row[0]
                if role == "user" and title == NEW_TITLE and content.strip():
                    title = _title_from(content)
                db.execute(
                    "UPDATE conversations SET updated_at = ?, title = ? WHERE id = ?",
                    (now, title, conversation_id),
                )
            return message

        return await self._run(insert)

    async def save_reply(
        self,
        message_id: str,
        content: str,
        status: str,
        finish_reason: str | None,
        error: str | None = None,
    ) -> None:
        """Store a reply's text so far and its status (called while and after it streams)."""
        now = time.time()

        def update(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE messages SET content = ?, status = ?, finish_reason = ?, error = ?, "
                "updated_at = ? WHERE id = ?",
                (content, status, finish_reason, error, now, message_id),
            )

        await self._run(update)
