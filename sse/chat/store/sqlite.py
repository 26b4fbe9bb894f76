"""Conversations and their messages in SQLite, kept off the event loop.

One connection lives on one dedicated thread: sqlite3 connections must not be
shared between threads, and a single writer is all SQLite allows anyway.
WAL mode lets readers proceed while a reply is being saved.

Leases. Several processes may share one database (`--workers` on one file,
nodes on one PostgreSQL), so a reply left "streaming" is not proof of a crash:
another live process may be writing it. Each open store is a node (a UUID4
hex id) with a row in `nodes` that it renews every `lease_interval_s`, and a
reply it streams records that id as its `owner`. Recovery, at open and at each
renewal, marks a streaming reply interrupted only when its owner has no lease
or one older than `stale_after_s`; a clean close gives the lease up. Should a
live node be taken for dead (paused for longer than that), its next save of
the reply writes the true status back.

Owners. A conversation's `owner` is who may reach it (a principal such as
"guest:..." or "account:..."), and every query a request makes names it in
its WHERE clause. Not to be mixed up with a message's `owner`, the node that
streams it.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from uuid import uuid4

from sse.chat.rooms.sqlite import ROOMS_SCHEMA, SqliteRooms
from sse.chat.store import sqlite_revisions
from sse.chat.store.base import (
    DEFAULT_LEASE_INTERVAL_S,
    DEFAULT_STALE_AFTER_S,
    NEW_TITLE,
    Account,
    ConversationSettings,
    ConversationSummary,
    Revision,
    StoredMessage,
    StoreHealth,
    Transcript,
    check_lease_timing,
    check_owner,
    check_password_hash,
    check_session_age,
    new_session_id,
    session_key,
    start_lease_task,
    stop_lease_task,
    title_from,
    username_key,
)
from sse.errors import ReplyInProgress, StoreError, StoreUnavailable

__all__ = ["SqliteStore"]

T = TypeVar("T")

log = logging.getLogger("ssechat.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id          TEXT PRIMARY KEY,
    title       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    owner       TEXT,
    model       TEXT,
    system_prompt TEXT
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
    owner           TEXT,
    event_id        TEXT,
    UNIQUE (conversation_id, seq)
);
CREATE INDEX IF NOT EXISTS conversations_by_update ON conversations (updated_at DESC);
CREATE TABLE IF NOT EXISTS nodes (
    node_id     TEXT PRIMARY KEY,
    seen_at     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    id              TEXT PRIMARY KEY,
    username        TEXT NOT NULL,
    username_key    TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    password_hash   TEXT NOT NULL,
    created_at      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_account ON sessions (account_id);
"""
# Columns added after the first release, for files made before them: table ->
# name -> type. A conversation's owner is NULL in files made before owners: no
# owner string matches NULL, so those are kept but reach nobody until an
# operator gives them to someone (UPDATE conversations SET owner = ...).
_ADDED_COLUMNS = {
    "messages": {"error": "TEXT", "owner": "TEXT", "event_id": "TEXT"},
    "conversations": {"owner": "TEXT", "model": "TEXT", "system_prompt": "TEXT"},
}
# Made after the owner column exists: each listing reads one owner's rows in order.
_OWNER_INDEX = (
    "CREATE INDEX IF NOT EXISTS conversations_by_owner ON conversations (owner, updated_at DESC)"
)
# Made after the columns it names exist. Partial: recovery scans only live replies.
_STREAMING_INDEX = (
    "CREATE INDEX IF NOT EXISTS messages_streaming ON messages (owner) WHERE status = 'streaming'"
)
# One reply at a time per conversation, for every process on the file (see
# `ReplyInProgress`). Files made before it may hold two streaming replies of one
# conversation; all but the newest are marked interrupted, as recovery would.
_ONE_REPLY = "messages_one_streaming_reply"
_ONE_REPLY_FIX = (
    "UPDATE messages SET status = 'interrupted' WHERE status = 'streaming' AND seq < "
    "(SELECT MAX(seq) FROM messages AS m WHERE m.conversation_id = messages.conversation_id "
    "AND m.status = 'streaming')"
)
_ONE_REPLY_INDEX = (
    f"CREATE UNIQUE INDEX IF NOT EXISTS {_ONE_REPLY} ON messages (conversation_id) "
    "WHERE status = 'streaming'"
)


_NODE_ID = re.compile(r"[0-9a-f]{32}")
# How long a statement waits for another process's lock before it fails.
_BUSY_TIMEOUT_S = 5.0
# SQLite's result codes for a database failing, not our SQL: https://sqlite.org/rescode.html
_OPERATIONAL_CODES = frozenset(
    {
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOLFS,
        sqlite3.SQLITE_NOTADB,
    }
)


class _NodeLock:
    """A file a live node keeps locked: the OS drops the lock when the process dies.

    The second half of a SQLite node's lease. All processes on one file are on
    one machine (WAL needs shared memory), so each holds an flock(2) on
    `<db>-nodes/<node_id>.lock`. A node whose row is fresh but whose file is no
    longer locked was killed, and its replies are recovered at once rather than
    `stale_after_s` later: a restart right after a crash reports them.
    flock, not fcntl locks: two stores in one process must not share a lock.
    An in-memory database (`:memory:`) has no file and no other process, so
    no lock files either (`folder` None).
    """

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def _path(self, node_id: str) -> Path:
        assert self.folder is not None, "no lock files for an in-memory database"
        return self.folder / f"{node_id}.lock"

    def hold(self, node_id: str) -> int | None:
        """Create and lock this node's file; returns the descriptor to keep open."""
        if self.folder is None:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path(node_id), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def release(self, node_id: str, fd: int | None) -> None:
        """Remove this node's file, then unlock it (a clean exit)."""
        if fd is None:
            return
        self._path(node_id).unlink(missing_ok=True)
        os.close(fd)

    def is_dead(self, node_id: str) -> bool:
        """Whether `node_id`'s process is gone: its file exists and nobody holds it.

        A missing file proves nothing (it may be a node of an older version), so
        only the lease's age decides then. The file of a dead node is removed.
        """
        if self.folder is None or not _NODE_ID.fullmatch(node_id):
            return False
        path = self._path(node_id)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        else:
            path.unlink(missing_ok=True)  # while holding it, so no one probes a new one
            return True
        finally:
            os.close(fd)


class SqliteStore:
    """The conversation store on one SQLite file."""

    def __init__(
        self,
        path: Path,
        *,
        lease_interval_s: float = DEFAULT_LEASE_INTERVAL_S,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
    ) -> None:
        """A store on `path`, opened by `open()`.

        Raises:
            ValueError: the lease timings cannot work (see `check_lease_timing`).
        """
        check_lease_timing(lease_interval_s, stale_after_s)
        self.path = path
        self.node_id = uuid4().hex
        self._lease_interval_s = lease_interval_s
        self._stale_after_s = stale_after_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None
        # Private to its connection: no other process can share it.
        in_memory = str(path) == ":memory:"
        self._locks = _NodeLock(None if in_memory else path.with_name(path.name + "-nodes"))
        self._lock_fd: int | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._health = StoreHealth()
        # (st_dev, st_ino) of the file the connection opened; None in memory.
        self._identity: tuple[int, int] | None = None

    def rooms(self) -> SqliteRooms:
        """The named rooms and their messages, in this file (sse.chat.rooms.sqlite)."""
        return SqliteRooms(self._run)

    def describe(self) -> str:
        """Where the conversations are, for the log."""
        return str(self.path)

    def health(self) -> dict[str, object]:
        """`{"ok": ...}` and what went wrong: one os.stat of the file, no query."""
        self._check_file()
        return self._health.report()

    async def ready(self, timeout_s: float) -> str | None:
        """None if `SELECT 1` answers within `timeout_s` and the file is still ours."""
        db = self._db
        if db is None:
            return "store is not open"
        self._check_file()
        if self._health.fault is not None:
            return self._health.fault
        loop = asyncio.get_running_loop()
        try:
            # Through the one worker thread: a database busy with writes is not ready.
            async with asyncio.timeout(timeout_s):
                await loop.run_in_executor(self._executor, _select_one, db)
        except TimeoutError:
            return f"no answer to SELECT 1 within {timeout_s:g}s"
        except sqlite3.Error as exc:
            return f"SELECT 1 failed: {exc}"
        return None

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        db = self._db
        if db is None:
            raise StoreError("store is not open")
        if write:
            self._check_file()
            if self._health.fault is not None:
                # SQLite would take it and say nothing: the file is unlinked, so
                # what we write is gone at the next restart. The fault is the
                # store's state; refusing adds no failure of its own to it.
                raise StoreUnavailable(self._health.fault)
        with self._health.watch(_sqlite_unavailable, write=write):
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, db)

    def _check_file(self) -> None:
        """Compare the path with the file the connection opened; log a change once."""
        if self._identity is None:
            return
        problem = _file_problem(self.path, self._identity)
        fault = self._health.fault
        if problem is not None and fault is None:
            log.error(
                "conversations are no longer saved: %s; until the server stops, what it "
                "holds can be copied from its open descriptor in /proc/%d/fd",
                problem,
                os.getpid(),
            )
        elif problem is None and fault is not None:
            log.warning("the database file %s is back; saving conversations again", self.path)
        self._health.fault = problem

    async def open(self) -> int:
        """Open (and create or migrate) the database and take this node's lease.

        Returns how many replies were found cut short (their node is gone), now
        marked interrupted. From here until `close()` the lease is renewed, and
        other nodes' replies recovered, every `lease_interval_s`.
        """

        def connect() -> tuple[sqlite3.Connection, int | None, int]:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            try:
                # The busy timeout first: processes opening one new file at once
                # wait for each other's locks instead of failing.
                db.execute(f"PRAGMA busy_timeout={round(_BUSY_TIMEOUT_S * 1000)}")
                _use_wal(db)
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA foreign_keys=ON")
                _migrate(db)
                fd = self._locks.hold(self.node_id)
                try:
                    recovered = self._renew_and_recover(db)
                except BaseException:
                    self._locks.release(self.node_id, fd)
                    raise
            except BaseException:
                db.close()
                raise
            return db, fd, recovered

        loop = asyncio.get_running_loop()
        self._db, self._lock_fd, recovered = await loop.run_in_executor(self._executor, connect)
        if self._locks.folder is not None:
            # Right after the connect: nothing can have replaced the file in between
            # but an operator racing our start.
            found = os.stat(self.path)
            self._identity = (found.st_dev, found.st_ino)
        self._lease_task = start_lease_task(self._keep_lease(), f"lease of node {self.node_id}")
        return recovered

    def _renew_and_recover(self, db: sqlite3.Connection) -> int:
        """Renew this node's lease; mark replies of dead nodes interrupted; how many."""
        now = time.time()
        with db:  # one transaction: no node renews between our check and our update
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO nodes (node_id, seen_at) VALUES (?, ?) "
                "ON CONFLICT (node_id) DO UPDATE SET seen_at = excluded.seen_at",
                (self.node_id, now),
            )
            others = [
                row[0]
                for row in db.execute(
                    "SELECT node_id FROM nodes WHERE node_id != ?", (self.node_id,)
                )
            ]
            dead = [(node_id,) for node_id in others if self._locks.is_dead(node_id)]
            db.executemany("DELETE FROM nodes WHERE node_id = ?", dead)
            db.execute("DELETE FROM nodes WHERE seen_at < ?", (now - self._stale_after_s,))
            # Same as the recovery before leases: the status alone says a crash cut it.
            cur = db.execute(
                "UPDATE messages SET status = 'interrupted' WHERE status = 'streaming' "
                "AND (owner IS NULL OR owner NOT IN (SELECT node_id FROM nodes))"
            )
            return cur.rowcount

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(self._lease_interval_s)
            try:
                recovered = await self._run(self._renew_and_recover, write=True)
            except StoreUnavailable:
                # Locked for longer than the busy timeout, or a full disk: the
                # lease is still fresh enough for several more tries. A file
                # removed was logged as an error when it was noticed.
                if self._health.fault is None:
                    log.warning("could not renew the lease of node %s", self.node_id, exc_info=True)
                continue
            if recovered:
                log.warning("%d replies of nodes gone silent were marked interrupted", recovered)

    async def close(self) -> None:
        """Give up this node's lease, close the database and its thread."""
        task, self._lease_task = self._lease_task, None
        if task is not None:
            await stop_lease_task(task)
        db, self._db = self._db, None
        fd, self._lock_fd = self._lock_fd, None

        def leave(db: sqlite3.Connection) -> None:
            try:
                db.execute("DELETE FROM nodes WHERE node_id = ?", (self.node_id,))
            except sqlite3.Error:
                # The lease then goes stale by itself; nothing of ours still streams.
                log.warning("could not give up the lease of node %s", self.node_id, exc_info=True)
            finally:
                self._locks.release(self.node_id, fd)
                db.close()

        try:
            if db is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, leave, db)
        finally:
            self._executor.shutdown(wait=True)

    async def create_conversation(self, owner: str) -> ConversationSummary:
        """A new, empty conversation of `owner`, with an unguessable id (UUID4).

        Raises:
            ValueError: `owner` is empty.
            StoreUnavailable: the database failed; nothing is written.
        """
        check_owner(owner)
        now = time.time()
        summary = ConversationSummary(str(uuid4()), NEW_TITLE, now, now)

        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO conversations (id, title, created_at, updated_at, owner) "
                "VALUES (?, ?, ?, ?, ?)",
                (summary.id, summary.title, now, now, owner),
            )

        await self._run(insert, write=True)
        return summary

    async def list_conversations(self, owner: str, limit: int) -> list[ConversationSummary]:
        """At most `limit` of `owner`'s conversations, the most recently updated first."""

        def select(db: sqlite3.Connection) -> list[ConversationSummary]:
            rows = db.execute(
                "SELECT id, title, created_at, updated_at FROM conversations WHERE owner = ? "
                "ORDER BY updated_at DESC, id LIMIT ?",
                (owner, limit),
            ).fetchall()
            return [ConversationSummary(*row) for row in rows]

        return await self._run(select)

    async def exists(self, owner: str, conversation_id: str) -> bool:
        """Whether `owner` has a conversation with this id (False for someone else's)."""

        def select(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT 1 FROM conversations WHERE id = ? AND owner = ?", (conversation_id, owner)
            ).fetchone()
            return row is not None

        return await self._run(select)

    async def transcript(self, owner: str, conversation_id: str) -> Transcript | None:
        """`owner`'s conversation and its messages; None if missing or someone else's."""

        def select(db: sqlite3.Connection) -> Transcript | None:
            with db:  # one snapshot for both reads: another process may be appending
                db.execute("BEGIN")
                row = db.execute(
                    "SELECT id, title, created_at, updated_at, model, system_prompt "
                    "FROM conversations WHERE id = ? AND owner = ?",
                    (conversation_id, owner),
                ).fetchone()
                if row is None:
                    return None
                rows = db.execute(
                    "SELECT m.id, m.role, m.content, m.status, m.finish_reason, m.model, "
                    "m.created_at, m.error, m.event_id FROM messages AS m "
                    "JOIN conversations AS c ON c.id = m.conversation_id "
                    "WHERE c.id = ? AND c.owner = ? ORDER BY m.seq",
                    (conversation_id, owner),
                ).fetchall()
            return Transcript(
                ConversationSummary(*row[:4]),
                tuple(StoredMessage(*r) for r in rows),
                ConversationSettings(row[4], row[5] or ""),
            )

        return await self._run(select)

    async def add_message(
        self,
        owner: str,
        conversation_id: str,
        role: str,
        content: str,
        status: str,
        model: str | None = None,
    ) -> StoredMessage | None:
        """Append a message to `owner`'s conversation; None (nothing written) if not theirs.

        The first user message also becomes the conversation's title. A message
        added as "streaming" is owned by this node until it is saved otherwise.

        Raises:
            ReplyInProgress: a "streaming" message while the conversation has one.
            StoreUnavailable: the database failed; nothing is written.
        """
        message = StoredMessage(str(uuid4()), role, content, status, None, model, time.time())

        def insert(db: sqlite3.Connection) -> StoredMessage | None:
            with db:  # one transaction: the seq read and the insert belong together
                db.execute("BEGIN IMMEDIATE")
                return message if self._insert(db, owner, conversation_id, message) else None

        return await self._run(_one_reply(insert), write=True)

    async def start_reply(
        self, owner: str, conversation_id: str, content: str, model: str
    ) -> tuple[StoredMessage, StoredMessage] | None:
        """Append the user's message and a "streaming" reply to it, both or neither.

        None, with nothing written, if the conversation is missing or not `owner`'s.

        Raises:
            ReplyInProgress: the conversation has a streaming reply (nothing is written).
            StoreUnavailable: the database failed; nothing is written.
        """
        now = time.time()
        user = StoredMessage(str(uuid4()), "user", content, "complete", None, None, now)
        answer = StoredMessage(str(uuid4()), "assistant", "", "streaming", None, model, now)

        def insert(db: sqlite3.Connection) -> tuple[StoredMessage, StoredMessage] | None:
            with db:  # one transaction: a refused reply takes its user message with it
                db.execute("BEGIN IMMEDIATE")
                if not self._insert(db, owner, conversation_id, user):
                    return None
                self._insert(db, owner, conversation_id, answer)
            return user, answer

        return await self._run(_one_reply(insert), write=True)

    def _insert(
        self, db: sqlite3.Connection, owner: str, conversation_id: str, message: StoredMessage
    ) -> bool:
        """Insert `message` inside the caller's transaction; False if not `owner`'s conversation."""
        row = db.execute(
            "SELECT title FROM conversations WHERE id = ? AND owner = ?", (conversation_id, owner)
        ).fetchone()
        if row is None:
            return False
        seq = db.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE conversation_id = ?",
            (conversation_id,),
        ).fetchone()[0]
        db.execute(
            "INSERT INTO messages (id, conversation_id, seq, role, content, status, "
            "model, created_at, updated_at, owner) VALUES (:id, :conversation_id, :seq, "
            ":role, :content, :status, :model, :now, :now, :owner)",
            {
                "id": message.id,
                "conversation_id": conversation_id,
                "seq": seq,
                "role": message.role,
                "content": message.content,
                "status": message.status,
                "model": message.model,
                "now": message.created_at,
                # The node streaming it (see the module's leases), not the conversation's owner.
                "owner": self.node_id if message.status == "streaming" else None,
            },
        )
        title = row[0]
        if message.role == "user" and title == NEW_TITLE and message.content.strip():
            title = title_from(message.content)
        db.execute(
            "UPDATE conversations SET updated_at = ?, title = ? WHERE id = ?",
            (message.created_at, title, conversation_id),
        )
        return True

    async def rename_conversation(
        self, owner: str, conversation_id: str, title: str
    ) -> ConversationSummary | None:
        """Set the title of `owner`'s conversation (and its update time); None if not theirs.

        Raises:
            StoreUnavailable: the database failed; nothing is written.
        """
        now = time.time()

        def update(db: sqlite3.Connection) -> ConversationSummary | None:
            row = db.execute(
                "UPDATE conversations SET title = ?, updated_at = ? WHERE id = ? AND owner = ? "
                "RETURNING id, title, created_at, updated_at",
                (title, now, conversation_id, owner),
            ).fetchone()
            return None if row is None else ConversationSummary(*row)

        return await self._run(update, write=True)

    async def conversation_settings(
        self, owner: str, conversation_id: str
    ) -> ConversationSettings | None:
        """The model and system prompt of `owner`'s conversation; None if not theirs."""

        def select(db: sqlite3.Connection) -> ConversationSettings | None:
            return sqlite_revisions.read_settings(db, owner, conversation_id)

        return await self._run(select)

    async def update_settings(
        self,
        owner: str,
        conversation_id: str,
        *,
        model: str | None = None,
        system: str | None = None,
    ) -> tuple[ConversationSummary, ConversationSettings] | None:
        """Set what is given (None: unchanged); the result, or None if not `owner`'s."""

        def update(
            db: sqlite3.Connection,
        ) -> tuple[ConversationSummary, ConversationSettings] | None:
            return sqlite_revisions.write_settings(db, owner, conversation_id, model, system)

        return await self._run(update, write=True)

    async def restart_reply(self, owner: str, conversation_id: str, model: str) -> Revision | None:
        """Regenerate: the last reply deleted, a "streaming" one added (see `Store`)."""
        answer = StoredMessage(str(uuid4()), "assistant", "", "streaming", None, model, time.time())

        def revise(db: sqlite3.Connection) -> Revision | None:
            return sqlite_revisions.revise(db, self._insert, owner, conversation_id, answer)

        return await self._run(_one_reply(revise), write=True)

    async def edit_reply(
        self, owner: str, conversation_id: str, message_id: str, content: str, model: str
    ) -> Revision | None:
        """Edit a user message, drop what followed, add a "streaming" reply (see `Store`)."""
        answer = StoredMessage(str(uuid4()), "assistant", "", "streaming", None, model, time.time())
        edit = (message_id, content)

        def revise(db: sqlite3.Connection) -> Revision | None:
            return sqlite_revisions.revise(db, self._insert, owner, conversation_id, answer, edit)

        return await self._run(_one_reply(revise), write=True)

    async def delete_conversation(self, owner: str, conversation_id: str) -> bool:
        """Delete `owner`'s conversation and all its messages, in one transaction.

        False, with nothing deleted, if it is missing or someone else's.

        Raises:
            StoreUnavailable: the database failed; nothing is deleted.
        """

        def delete(db: sqlite3.Connection) -> bool:
            with db:  # one transaction: never a conversation without the messages it had
                db.execute("BEGIN IMMEDIATE")
                # Messages first: they reference the conversation.
                db.execute(
                    "DELETE FROM messages WHERE conversation_id IN "
                    "(SELECT id FROM conversations WHERE id = ? AND owner = ?)",
                    (conversation_id, owner),
                )
                cur = db.execute(
                    "DELETE FROM conversations WHERE id = ? AND owner = ?",
                    (conversation_id, owner),
                )
                return cur.rowcount == 1

        return await self._run(delete, write=True)

    async def transfer_conversations(self, from_owner: str, to_owner: str) -> int:
        """Give all of `from_owner`'s conversations to `to_owner` (a guest signing in); how many.

        Raises:
            ValueError: an owner is empty.
            StoreUnavailable: the database failed; nothing is moved.
        """
        check_owner(from_owner)
        check_owner(to_owner)

        def update(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "UPDATE conversations SET owner = ? WHERE owner = ?", (to_owner, from_owner)
            )
            return cur.rowcount

        return await self._run(update, write=True)

    async def save_reply(
        self,
        message_id: str,
        content: str,
        status: str,
        finish_reason: str | None,
        error: str | None = None,
        *,
        event_id: str | None = None,
    ) -> None:
        """Store a reply's text so far and its status (called while and after it streams).

        `event_id` is the id of the last event whose text `content` includes.
        """
        now = time.time()

        def update(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE messages SET content = ?, status = ?, finish_reason = ?, error = ?, "
                "event_id = ?, updated_at = ? WHERE id = ?",
                (content, status, finish_reason, error, event_id, now, message_id),
            )

        await self._run(update, write=True)

    async def create_account(self, username: str, password_hash: str, name: str) -> Account | None:
        """A new account; None if the username is taken, compared case-insensitively.

        Raises:
            ValueError: `password_hash` is not an argon2 encoded hash.
            StoreUnavailable: the database failed; nothing is written.
        """
        check_password_hash(password_hash)
        account = Account(uuid4().hex, username, name, password_hash, time.time())

        def insert(db: sqlite3.Connection) -> Account | None:
            # DO NOTHING rather than catching the constraint: a taken name is an answer.
            cur = db.execute(
                "INSERT INTO accounts (id, username, username_key, name, password_hash, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (username_key) DO NOTHING",
                (
                    account.id,
                    username,
                    username_key(username),
                    name,
                    password_hash,
                    account.created_at,
                ),
            )
            return account if cur.rowcount == 1 else None

        return await self._run(insert, write=True)

    async def account_by_username(self, username: str) -> Account | None:
        """The account with this username, compared case-insensitively; None if there is none."""

        def select(db: sqlite3.Connection) -> Account | None:
            return _account(
                db.execute(
                    "SELECT id, username, name, password_hash, created_at FROM accounts "
                    "WHERE username_key = ?",
                    (username_key(username),),
                ).fetchone()
            )

        return await self._run(select)

    async def set_account_name(self, account_id: str, name: str) -> bool:
        """Change an account's display name; False if there is no such account.

        Raises:
            StoreUnavailable: the database failed; nothing is written.
        """

        def update(db: sqlite3.Connection) -> bool:
            cur = db.execute("UPDATE accounts SET name = ? WHERE id = ?", (name, account_id))
            return cur.rowcount == 1

        return await self._run(update, write=True)

    async def create_session(self, account_id: str, max_age_s: float) -> str:
        """A new session of the account, live for `max_age_s`: its id, for the cookie.

        Also deletes the account's expired sessions, so an account's rows are
        at most its live sessions. The table keeps only the id's hash.

        Raises:
            ValueError: `max_age_s` is not positive.
            StoreError: there is no such account (nothing is written).
            StoreUnavailable: the database failed; nothing is written.
        """
        check_session_age(max_age_s)
        session_id = new_session_id()
        now = time.time()

        def insert(db: sqlite3.Connection) -> bool:
            with db:  # one transaction: the clean-up and the new session
                db.execute("BEGIN IMMEDIATE")
                db.execute(
                    "DELETE FROM sessions WHERE account_id = ? AND expires_at <= ?",
                    (account_id, now),
                )
                # From the account's row: an unknown account inserts nothing.
                cur = db.execute(
                    "INSERT INTO sessions (id, account_id, created_at, expires_at) "
                    "SELECT ?, id, ?, ? FROM accounts WHERE id = ?",
                    (session_key(session_id), now, now + max_age_s, account_id),
                )
                return cur.rowcount == 1

        if not await self._run(insert, write=True):
            raise StoreError(f"no account {account_id!r} to start a session of")
        return session_id

    async def session_account(self, session_id: str) -> Account | None:
        """The account of a live session; None if the session is unknown, expired or deleted."""
        now = time.time()

        def select(db: sqlite3.Connection) -> Account | None:
            return _account(
                db.execute(
                    "SELECT a.id, a.username, a.name, a.password_hash, a.created_at "
                    "FROM sessions AS s JOIN accounts AS a ON a.id = s.account_id "
                    "WHERE s.id = ? AND s.expires_at > ?",
                    (session_key(session_id), now),
                ).fetchone()
            )

        return await self._run(select)

    async def delete_session(self, session_id: str) -> None:
        """Sign out: the session stops working at once, for every process on the file.

        Raises:
            StoreUnavailable: the database failed; the session may still work.
        """

        def delete(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM sessions WHERE id = ?", (session_key(session_id),))

        await self._run(delete, write=True)


def _sqlite_unavailable(exc: BaseException) -> str | None:
    """What went wrong, when `exc` is the database failing rather than our bug."""
    # By SQLite's primary result code, not the class: sqlite3 raises
    # OperationalError for a syntax error too (SQLITE_ERROR), which is our bug,
    # as are constraint failures (IntegrityError) and misuse.
    if isinstance(exc, sqlite3.Error) and exc.sqlite_errorcode & 0xFF in _OPERATIONAL_CODES:
        return str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return None


def _file_problem(path: Path, identity: tuple[int, int]) -> str | None:
    """Why `path` is no longer the database file of `identity` (st_dev, st_ino), or None."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return f"the database file {path} was removed while the server runs"
    except OSError as exc:
        return f"the database file {path} cannot be checked: {exc.strerror}"
    if (found.st_dev, found.st_ino) != identity:
        return f"the database file {path} was replaced by another file while the server runs"
    return None


def _one_reply(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """`fn`, with a second streaming reply of a conversation raised as `ReplyInProgress`."""

    def guarded(db: sqlite3.Connection) -> T:
        try:
            return fn(db)
        except sqlite3.IntegrityError as exc:
            # SQLite names the index's column, not the index, in its message.
            if str(exc) != "UNIQUE constraint failed: messages.conversation_id":
                raise
            raise ReplyInProgress("a reply of this conversation is streaming") from None

    return guarded


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch the file to WAL mode (it stays so), waiting for others doing the same.

    Raises:
        sqlite3.OperationalError: still locked after the busy timeout.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            # The switch needs the file to itself and, unlike a write, reports
            # SQLITE_BUSY at once rather than through the busy timeout.
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(0.01)  # on the store's own thread, never the event loop's


def _migrate(db: sqlite3.Connection) -> None:
    """Create the tables, and add the columns older files lack, in one transaction.

    One transaction, so that two processes opening one old file at once do not
    both see a column missing and both add it.
    """
    with db:
        db.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        for table, added in _ADDED_COLUMNS.items():
            columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            for name, kind in added.items():
                if name not in columns:  # a file made before this column
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        for statement in ROOMS_SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(_STREAMING_INDEX)
        db.execute(_OWNER_INDEX)
        found = db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (_ONE_REPLY,))
        if found.fetchone() is None:
            db.execute(_ONE_REPLY_FIX)
            db.execute(_ONE_REPLY_INDEX)


def _account(row: tuple[str, str, str, str, float] | None) -> Account | None:
    return None if row is None else Account(*row)


def _select_one(db: sqlite3.Connection) -> None:
    db.execute("SELECT 1").fetchone()
