"""Conversations and their messages in PostgreSQL, shared by several nodes.

The same contract as `SqliteStore`, value for value: ids are UUID4 text,
times are seconds since the epoch from this node's clock (DOUBLE PRECISION,
so they round-trip exactly), listings order by `updated_at DESC, id` with ids
compared bytewise (COLLATE "C", as SQLite compares text).

Tables are made on start by numbered migrations, run under an advisory lock
so that nodes starting together apply each one once. Crash recovery uses
leases (see `open`), timed by the database's clock so node clocks may differ.
A conversation's `owner` (who may reach it) is in every query a request
makes; a message's `owner` is the node streaming it, as in `SqliteStore`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import asyncpg  # type: ignore[import-untyped]  # asyncpg 0.32 ships no type hints

from sse.chat.rooms.postgres import ROOMS_MIGRATION, PostgresRooms
from sse.chat.store import postgres_revisions
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

__all__ = ["PostgresStore", "redact_url"]

log = logging.getLogger("ssechat.store")

# Each entry is one schema version, applied once, in order; the number of the
# last one applied is kept in schema_version. Only ever append: nodes of an
# older release may still run against a newer schema during a rolling upgrade,
# so a migration adds and never changes what is there.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS conversations (
        id          TEXT PRIMARY KEY,
        title       TEXT NOT NULL,
        created_at  DOUBLE PRECISION NOT NULL,
        updated_at  DOUBLE PRECISION NOT NULL
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
        created_at      DOUBLE PRECISION NOT NULL,
        updated_at      DOUBLE PRECISION NOT NULL,
        error           TEXT,
        owner           TEXT,
        event_id        TEXT,
        UNIQUE (conversation_id, seq)
    );
    CREATE INDEX IF NOT EXISTS conversations_by_update ON conversations (updated_at DESC);
    CREATE INDEX IF NOT EXISTS messages_streaming ON messages (owner)
        WHERE status = 'streaming';
    CREATE TABLE IF NOT EXISTS nodes (
        node_id     TEXT PRIMARY KEY,
        seen_at     TIMESTAMPTZ NOT NULL
    );
    """,
    # One reply at a time per conversation, across nodes (see `ReplyInProgress`).
    # Older databases may hold two streaming replies of one conversation: all
    # but the newest are marked interrupted first, as recovery would.
    """
    UPDATE messages SET status = 'interrupted' WHERE status = 'streaming' AND seq <
        (SELECT MAX(seq) FROM messages AS m WHERE m.conversation_id = messages.conversation_id
         AND m.status = 'streaming');
    CREATE UNIQUE INDEX IF NOT EXISTS messages_one_streaming_reply ON messages (conversation_id)
        WHERE status = 'streaming';
    """,
    # Conversations belong to an owner ("guest:...", "account:..."). Those made
    # before keep owner NULL: no owner matches NULL, so they are kept but reach
    # nobody until an operator gives them to someone (UPDATE ... SET owner).
    # Accounts' usernames are unique by `username_key` (see base.username_key),
    # computed by the node so that SQLite and PostgreSQL agree; a session's id
    # is kept as its hash (see base.session_key). Times are seconds since the
    # epoch from the node's clock, like every other time here.
    """
    ALTER TABLE conversations ADD COLUMN IF NOT EXISTS owner TEXT;
    CREATE INDEX IF NOT EXISTS conversations_by_owner ON conversations (owner, updated_at DESC);
    CREATE TABLE IF NOT EXISTS accounts (
        id              TEXT PRIMARY KEY,
        username        TEXT NOT NULL,
        username_key    TEXT NOT NULL UNIQUE,
        name            TEXT NOT NULL,
        password_hash   TEXT NOT NULL,
        created_at      DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE IF NOT EXISTS sessions (
        id          TEXT PRIMARY KEY,
        account_id  TEXT NOT NULL REFERENCES accounts(id),
        created_at  DOUBLE PRECISION NOT NULL,
        expires_at  DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS sessions_by_account ON sessions (account_id);
    """,
    # 4: a conversation remembers its model (NULL: the server's default) and
    # its system prompt (NULL or '': none), for regenerate, edit and PATCH.
    """
    ALTER TABLE conversations ADD COLUMN IF NOT EXISTS model TEXT;
    ALTER TABLE conversations ADD COLUMN IF NOT EXISTS system_prompt TEXT;
    """,
    # Named rooms and their messages (sse.chat.rooms.postgres). Number 5: this
    # tuple's order is the numbering.
    ROOMS_MIGRATION,
)
_ONE_REPLY = "messages_one_streaming_reply"
# Keys of pg_advisory_xact_lock: any bigint, the same on every node ("ssechat" + n).
_MIGRATION_LOCK = int.from_bytes(b"ssechat1", "big")
_RECOVERY_LOCK = int.from_bytes(b"ssechat2", "big")
# What the lease task survives: the database or the network away for a while.
_UNAVAILABLE = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
_SECRET_PARAMS = frozenset({"password", "sslpassword"})
# Server errors that are the database failing, not our SQL: the connection
# (class 08), resources such as a full disk (53), an operator or failover
# (57), I/O (58), internal errors (XX), and a standby that cannot write.
_OPERATIONAL = (
    asyncpg.PostgresConnectionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
    asyncpg.PostgresSystemError,
    asyncpg.InternalServerError,
    asyncpg.ReadOnlySQLTransactionError,
)


def redact_url(url: str) -> str:
    """`url` with its password (in the user part or the query) shown as ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hosts}" if colon else netloc
    query = "&".join(
        f"{pair.partition('=')[0]}=***" if pair.partition("=")[0] in _SECRET_PARAMS else pair
        for pair in parts.query.split("&")
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _pg_unavailable(exc: BaseException) -> str | None:
    """What went wrong, when `exc` is the database failing rather than our bug."""
    if isinstance(exc, _OPERATIONAL):
        return str(exc) or type(exc).__name__
    if isinstance(exc, asyncpg.InternalClientError):
        # asyncpg's reaction to a backend terminated mid-statement ("cannot switch
        # to state 12", MagicStack/asyncpg#1069). Our connections come from the
        # pool one task at a time, so it is the cut, not two users of one.
        return f"the connection to the database was cut ({exc})"
    if isinstance(exc, TimeoutError):
        return "the database did not answer in time"
    if isinstance(exc, OSError):
        return f"cannot reach the database: {exc.strerror or exc}"
    return None


def _text(value: str) -> str:
    # Deliberate deviation from SqliteStore: PostgreSQL's text cannot hold NUL
    # (U+0000), and JSON can carry one. Refusing it would fail the request, or
    # worse a reply half-way; U+FFFD shows where it was instead.
    return value.replace("\0", "\ufffd")


class PostgresStore:
    """The conversation store in one PostgreSQL database, through a small pool."""

    def __init__(
        self,
        url: str,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        command_timeout_s: float = 30.0,
        lease_interval_s: float = DEFAULT_LEASE_INTERVAL_S,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
    ) -> None:
        """A store on the database at `url` (postgresql://...), opened by `open()`.

        Raises:
            ValueError: the lease timings cannot work (see `check_lease_timing`).
        """
        check_lease_timing(lease_interval_s, stale_after_s)
        self._url = url
        self.node_id = uuid4().hex
        self._min_connections = min_connections
        self._max_connections = max_connections
        self._command_timeout_s = command_timeout_s
        self._lease_interval_s = lease_interval_s
        self._stale_after_s = stale_after_s
        self._pool: asyncpg.Pool | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._health = StoreHealth()

    def describe(self) -> str:
        """Where the conversations are, for the log: the URL without its password."""
        return redact_url(self._url)

    def health(self) -> dict[str, object]:
        """`{"ok": ...}` and what went wrong, from the recent operations: no query."""
        return self._health.report()

    async def ready(self, timeout_s: float) -> str | None:
        """None if `SELECT 1` answers within `timeout_s` (waiting for a pooled connection too)."""
        pool = self._pool
        if pool is None:
            return "store is not open"
        try:
            async with asyncio.timeout(timeout_s):
                await pool.fetchval("SELECT 1")
        except TimeoutError:
            return f"no answer to SELECT 1 within {timeout_s:g}s"
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return f"SELECT 1 failed: {exc}"
        return None

    def rooms(self) -> PostgresRooms:
        """The named rooms and their messages, in this database (sse.chat.rooms.postgres)."""
        return PostgresRooms(self._open_pool, self._health, _pg_unavailable)

    def _open_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("store is not open")
        return self._pool

    async def open(self) -> int:
        """Connect, migrate the schema, take this node's lease, recover dead nodes' replies.

        Returns how many replies were found cut short, now marked interrupted:
        "streaming" replies whose owner node has no lease, or one not renewed
        for `stale_after_s`. A live node renews its lease every
        `lease_interval_s` until `close()`, and recovers other nodes' replies
        then too; so a crashed node's replies are marked within about
        `stale_after_s + lease_interval_s`, by whichever node notices first.
        """
        pool = await asyncpg.create_pool(
            self._url,
            min_size=self._min_connections,
            max_size=self._max_connections,
            command_timeout=self._command_timeout_s,
        )
        try:
            async with pool.acquire() as conn:
                await _migrate(conn)
                recovered = await self._renew_and_recover(conn)
        except BaseException:
            pool.terminate()
            raise
        self._pool = pool
        self._lease_task = start_lease_task(self._keep_lease(), f"lease of node {self.node_id}")
        return recovered

    async def _renew_and_recover(self, conn: asyncpg.Connection) -> int:
        """Renew this node's lease; mark replies of dead nodes interrupted; how many."""
        # The renewal commits on its own, before the recovery's transaction: a
        # node renewing never waits on another node's recovery.
        await conn.execute(
            "INSERT INTO nodes (node_id, seen_at) VALUES ($1, clock_timestamp()) "
            "ON CONFLICT (node_id) DO UPDATE SET seen_at = excluded.seen_at",
            self.node_id,
        )
        async with conn.transaction():
            # One recovery at a time across nodes: no two delete the same rows in
            # different orders (a deadlock), nor count the same reply twice.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _RECOVERY_LOCK)
            await conn.execute(
                "DELETE FROM nodes WHERE node_id <> $1 "
                "AND seen_at < clock_timestamp() - make_interval(secs => $2)",
                self.node_id,
                self._stale_after_s,
            )
            # Same as SqliteStore's recovery: the status alone says a crash cut it.
            status: str = await conn.execute(
                "UPDATE messages SET status = 'interrupted' WHERE status = 'streaming' "
                "AND (owner IS NULL OR owner NOT IN (SELECT node_id FROM nodes))"
            )
        return _count(status)

    async def _keep_lease(self) -> None:
        pool = self._open_pool()
        while True:
            await asyncio.sleep(self._lease_interval_s)
            try:
                with self._health.watch(_pg_unavailable, write=True):
                    async with pool.acquire() as conn:
                        recovered = await self._renew_and_recover(conn)
            except (StoreUnavailable, *_UNAVAILABLE):
                # The database may be restarting: the lease stays fresh for
                # several more tries, and replies are not lost meanwhile.
                log.warning("could not renew the lease of node %s", self.node_id, exc_info=True)
                continue
            if recovered:
                log.warning("%d replies of nodes gone silent were marked interrupted", recovered)

    async def close(self) -> None:
        """Give up this node's lease and close the pool."""
        task, self._lease_task = self._lease_task, None
        if task is not None:
            await stop_lease_task(task)
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await pool.execute("DELETE FROM nodes WHERE node_id = $1", self.node_id)
        except _UNAVAILABLE:
            # The lease then goes stale by itself; nothing of ours still streams.
            log.warning("could not give up the lease of node %s", self.node_id, exc_info=True)
        try:
            await asyncio.wait_for(pool.close(), self._command_timeout_s)
        except TimeoutError:
            pool.terminate()

    async def create_conversation(self, owner: str) -> ConversationSummary:
        """A new, empty conversation of `owner`, with an unguessable id (UUID4).

        Raises:
            ValueError: `owner` is empty.
            StoreUnavailable: the database failed; nothing is written.
        """
        check_owner(owner)
        now = time.time()
        summary = ConversationSummary(str(uuid4()), NEW_TITLE, now, now)
        pool = self._open_pool()
        with self._health.watch(_pg_unavailable, write=True):
            await pool.execute(
                "INSERT INTO conversations (id, title, created_at, updated_at, owner) "
                "VALUES ($1, $2, $3, $4, $5)",
                summary.id,
                summary.title,
                now,
                now,
                owner,
            )
        return summary

    async def list_conversations(self, owner: str, limit: int) -> list[ConversationSummary]:
        """At most `limit` of `owner`'s conversations, the most recently updated first."""
        pool = self._open_pool()
        with self._health.watch(_pg_unavailable, write=False):
            rows = await pool.fetch(
                "SELECT id, title, created_at, updated_at FROM conversations WHERE owner = $1 "
                'ORDER BY updated_at DESC, id COLLATE "C" LIMIT $2',
                owner,
                limit,
            )
        return [ConversationSummary(*row) for row in rows]

    async def exists(self, owner: str, conversation_id: str) -> bool:
        """Whether `owner` has a conversation with this id (False for someone else's)."""
        pool = self._open_pool()
        with self._health.watch(_pg_unavailable, write=False):
            row = await pool.fetchrow(
                "SELECT 1 FROM conversations WHERE id = $1 AND owner = $2", conversation_id, owner
            )
        return row is not None

    async def transcript(self, owner: str, conversation_id: str) -> Transcript | None:
        """`owner`'s conversation and its messages; None if missing or someone else's."""
        pool = self._open_pool()
        # One snapshot for both reads: another node may be appending.
        with self._health.watch(_pg_unavailable, write=False):
            return await self._read_transcript(pool, owner, conversation_id)

    async def _read_transcript(
        self, pool: asyncpg.Pool, owner: str, conversation_id: str
    ) -> Transcript | None:
        async with (
            pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            row = await conn.fetchrow(
                "SELECT id, title, created_at, updated_at, model, system_prompt "
                "FROM conversations WHERE id = $1 AND owner = $2",
                conversation_id,
                owner,
            )
            if row is None:
                return None
            rows = await conn.fetch(
                "SELECT m.id, m.role, m.content, m.status, m.finish_reason, m.model, "
                "m.created_at, m.error, m.event_id FROM messages AS m "
                "JOIN conversations AS c ON c.id = m.conversation_id "
                "WHERE c.id = $1 AND c.owner = $2 ORDER BY m.seq",
                conversation_id,
                owner,
            )
        return Transcript(
            ConversationSummary(*tuple(row)[:4]),
            tuple(StoredMessage(*r) for r in rows),
            ConversationSettings(row[4], row[5] or ""),
        )

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
        message = StoredMessage(
            str(uuid4()), role, _text(content), status, None, model, time.time()
        )
        pool = self._open_pool()
        with self._health.watch(_pg_unavailable, write=True):
            async with pool.acquire() as conn, _one_reply(), conn.transaction():
                inserted = await self._insert(conn, owner, conversation_id, message)
                return message if inserted else None

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
        user = StoredMessage(str(uuid4()), "user", _text(content), "complete", None, None, now)
        answer = StoredMessage(str(uuid4()), "assistant", "", "streaming", None, model, now)
        pool = self._open_pool()
        # One transaction: a refused or failed reply takes its user message with it.
        with self._health.watch(_pg_unavailable, write=True):
            async with pool.acquire() as conn, _one_reply(), conn.transaction():
                if not await self._insert(conn, owner, conversation_id, user):
                    return None
                await self._insert(conn, owner, conversation_id, answer)
        return user, answer

    async def _insert(
        self, conn: asyncpg.Connection, owner: str, conversation_id: str, message: StoredMessage
    ) -> bool:
        """Insert `message` inside the caller's transaction; False if not `owner`'s conversation."""
        # FOR UPDATE: nodes appending to one conversation take turns, so
        # each reads the seq the previous one wrote.
        title: str | None = await conn.fetchval(
            "SELECT title FROM conversations WHERE id = $1 AND owner = $2 FOR UPDATE",
            conversation_id,
            owner,
        )
        if title is None:
            return False
        seq: int = await conn.fetchval(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE conversation_id = $1",
            conversation_id,
        )
        await conn.execute(
            "INSERT INTO messages (id, conversation_id, seq, role, content, status, model, "
            "created_at, updated_at, owner) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)",
            message.id,
            conversation_id,
            seq,
            message.role,
            message.content,
            message.status,
            message.model,
            message.created_at,
            # The node streaming it (see `open`'s leases), not the conversation's owner.
            self.node_id if message.status == "streaming" else None,
        )
        if message.role == "user" and title == NEW_TITLE and message.content.strip():
            title = title_from(message.content)
        await conn.execute(
            "UPDATE conversations SET updated_at = $1, title = $2 WHERE id = $3",
            message.created_at,
            title,
            conversation_id,
        )
        return True

    async def rename_conversation(
        self, owner: str, conversation_id: str, title: str
    ) -> ConversationSummary | None:
        """Set the title of `owner`'s conversation (and its update time); None if not theirs.

        Raises:
            StoreUnavailable: the database failed; nothing is written.
        """
        pool = self._open_pool()
        with self._health.watch(_pg_unavailable, write=True):
            row = await pool.fetchrow(
                "UPDATE conversations SET title = $1, updated_at = $2 "
                "WHERE id = $3 AND owner = $4 RETURNING id, title, created_at, updated_at",
                _text(title),
                time.time(),
                conversation_id,
                owner,
            )
        return None if row is None else ConversationSummary(*row)

    async def conversation_settings(
        self, owner: str, conversation_id: str
    ) -> ConversationSettings | None:
        """The model and system prompt of `owner`'s conversation; None if not theirs."""
        pool = self._open_pool()
        with self._health.watch(_pg_unavailable, write=False):
            return await postgres_revisions.read_settings(pool, owner, conversation_id)

    async def update_settings(
        self,
        owner: str,
        conversation_id: str,
        *,
        model: str | None = None,
        system: str | None = None,
    ) -> tuple[ConversationSummary, ConversationSettings] | None:
        """Set what is given (None: unchanged); the result, or None if not `owner`'s."""
        pool = self._open_pool()
        system = None if system is None else _text(system)
        with self._health.watch(_pg_unavailable, write=True):
            return await postgres_revisions.write_settings(
                pool, owner, conversation_id, model, system
            )

    async def restart_reply(self, owner: str, conversation_id: str, model: str) -> Revision | None:
        """Regenerate: the last reply deleted, a "streaming" one added (see `Store`)."""
        return await self._revise(owner, conversation_id, model, None)

    async def edit_reply(
        self, owner: str, conversation_id: str, message_id: str, content: str, model: str
    ) -> Revision | None:
        """Edit a user message, drop what followed, add a "streaming" reply (see `Store`)."""
        return await self._revise(owner, conversation_id, model, (message_id, _text(content)))

    async def _revise(
        self, owner: str, conversation_id: str, model: str, edit: tuple[str, str] | None
    ) -> Revision | None:
        answer = StoredMessage(str(uuid4()), "assistant", "", "streaming", None, model, time.time())
        pool = self._open_pool()
        with self._health.watch(_pg_unavailable, write=True):
            async with pool.acquire() as conn, _one_reply(), conn.transaction():
                return await postgres_revisions.revise(
                    conn, self._insert, owner, conversation_id, answer, edit
                )

    async def delete_conversation(self, owner: str, conversation_id: str) -> bool:
        """Delete `owner`'s conversation and all its messages, in one transaction.

        False, with nothing deleted, if it is missing or someone else's.

        Raises:
            StoreUnavailable: the database failed; nothing is deleted.
        """
        pool = self._open_pool()
        with self._health.watch(_pg_unavailable, write=True):
            async with pool.acquire() as conn, conn.transaction():
                # The row lock first, as `_insert` takes it: a message another node
                # is adding commits before we delete the messages, or finds the
                # conversation gone; never one left pointing at a deleted row.
                found = await conn.fetchval(
                    "SELECT 1 FROM conversations WHERE id = $1 AND owner = $2 FOR UPDATE",
                    conversation_id,
                    owner,
                )
                if found is None:
                    return False
                # Messages first: they reference the conversation.
                await conn.execute(
                    "DELETE FROM messages WHERE conversation_id IN "
                    "(SELECT id FROM conversations WHERE id = $1 AND owner = $2)",
                    conversation_id,
                    owner,
                )
                status: str = await conn.execute(
                    "DELETE FROM conversations WHERE id = $1 AND owner = $2",
                    conversation_id,
                    owner,
                )
        return _count(status) == 1

    async def transfer_conversations(self, from_owner: str, to_owner: str) -> int:
        """Give all of `from_owner`'s conversations to `to_owner` (a guest signing in); how many.

        Raises:
            ValueError: an owner is empty.
            StoreUnavailable: the database failed; nothing is moved.
        """
        check_owner(from_owner)
        check_owner(to_owner)
        pool = self._open_pool()
        with self._health.watch(_pg_unavailable, write=True):
            status: str = await pool.execute(
                "UPDATE conversations SET owner = $1 WHERE owner = $2", to_owner, from_owner
            )
        return _count(status)

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
        pool = self._open_pool()
        with self._health.watch(_pg_unavailable, write=True):
            await pool.execute(
                "UPDATE messages SET content = $1, status = $2, finish_reason = $3, error = $4, "
                "event_id = $5, updated_at = $6 WHERE id = $7",
                _text(content),
                status,
                finish_reason,
                None if error is None else _text(error),
                event_id,
                time.time(),
                message_id,
            )

    async def create_account(self, username: str, password_hash: str, name: str) -> Account | None:
        """A new account; None if the username is taken, compared case-insensitively.

        Raises:
            ValueError: `password_hash` is not an argon2 encoded hash.
            StoreUnavailable: the database failed; nothing is written.
        """
        check_password_hash(password_hash)
        account = Account(uuid4().hex, _text(username), _text(name), password_hash, time.time())
        pool = self._open_pool()
        with self._health.watch(_pg_unavailable, write=True):
            # DO NOTHING rather than catching the violation: a taken name is an answer.
            made = await pool.fetchval(
                "INSERT INTO accounts (id, username, username_key, name, password_hash, "
                "created_at) VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT (username_key) DO NOTHING RETURNING id",
                account.id,
                account.username,
                username_key(account.username),
                account.name,
                password_hash,
                account.created_at,
            )
        return None if made is None else account

    async def account_by_username(self, username: str) -> Account | None:
        """The account with this username, compared case-insensitively; None if there is none."""
        pool = self._open_pool()
        with self._health.watch(_pg_unavailable, write=False):
            row = await pool.fetchrow(
                "SELECT id, username, name, password_hash, created_at FROM accounts "
                "WHERE username_key = $1",
                username_key(_text(username)),
            )
        return None if row is None else Account(*row)

    async def set_account_name(self, account_id: str, name: str) -> bool:
        """Change an account's display name; False if there is no such account.

        Raises:
            StoreUnavailable: the database failed; nothing is written.
        """
        pool = self._open_pool()
        with self._health.watch(_pg_unavailable, write=True):
            status: str = await pool.execute(
                "UPDATE accounts SET name = $1 WHERE id = $2", _text(name), account_id
            )
        return _count(status) == 1

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
        pool = self._open_pool()
        with self._health.watch(_pg_unavailable, write=True):
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "DELETE FROM sessions WHERE account_id = $1 AND expires_at <= $2",
                    account_id,
                    now,
                )
                # From the account's row: an unknown account inserts nothing.
                status: str = await conn.execute(
                    "INSERT INTO sessions (id, account_id, created_at, expires_at) "
                    "SELECT $1, id, $2, $3 FROM accounts WHERE id = $4",
                    session_key(session_id),
                    now,
                    now + max_age_s,
                    account_id,
                )
        if _count(status) != 1:
            raise StoreError(f"no account {account_id!r} to start a session of")
        return session_id

    async def session_account(self, session_id: str) -> Account | None:
        """The account of a live session; None if the session is unknown, expired or deleted."""
        pool = self._open_pool()
        with self._health.watch(_pg_unavailable, write=False):
            row = await pool.fetchrow(
                "SELECT a.id, a.username, a.name, a.password_hash, a.created_at "
                "FROM sessions AS s JOIN accounts AS a ON a.id = s.account_id "
                "WHERE s.id = $1 AND s.expires_at > $2",
                session_key(session_id),
                time.time(),
            )
        return None if row is None else Account(*row)

    async def delete_session(self, session_id: str) -> None:
        """Sign out: the session stops working at once, for every node on the database.

        Raises:
            StoreUnavailable: the database failed; the session may still work.
        """
        pool = self._open_pool()
        with self._health.watch(_pg_unavailable, write=True):
            await pool.execute("DELETE FROM sessions WHERE id = $1", session_key(session_id))


def _count(status: str) -> int:
    """How many rows a statement touched, from its status ("UPDATE 3", "DELETE 1")."""
    return int(status.rsplit(" ", 1)[-1])


@contextlib.asynccontextmanager
async def _one_reply() -> AsyncIterator[None]:
    """A second streaming reply of a conversation, raised as `ReplyInProgress`."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != _ONE_REPLY:
            raise
        raise ReplyInProgress("a reply of this conversation is streaming") from None


async def _migrate(conn: asyncpg.Connection) -> None:
    """Apply the migrations this database lacks, one node at a time."""
    async with conn.transaction():
        # Released at commit. Without it, two nodes creating one table at once
        # can both fail: CREATE ... IF NOT EXISTS is not safe against a race.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        current: int = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        for version, sql in enumerate(_MIGRATIONS[current:], start=current + 1):
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
            log.info("database schema migrated to version %d", version)
        if current > len(_MIGRATIONS):
            log.info(
                "database schema is at version %d, newer than this release's %d",
                current,
                len(_MIGRATIONS),
            )
