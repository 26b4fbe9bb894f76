"""What every conversation store shares: the `Store` interface, its records, and the leases."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from sse.chat.rooms.records import RoomStore
from sse.errors import StoreUnavailable

__all__ = [
    "DEFAULT_LEASE_INTERVAL_S",
    "DEFAULT_STALE_AFTER_S",
    "NEW_TITLE",
    "Account",
    "ConversationSettings",
    "ConversationSummary",
    "Revision",
    "Store",
    "StoreHealth",
    "StoredMessage",
    "Transcript",
    "check_lease_timing",
    "check_owner",
    "check_password_hash",
    "check_session_age",
    "new_session_id",
    "session_key",
    "start_lease_task",
    "stop_lease_task",
    "title_from",
    "username_key",
]

log = logging.getLogger("ssechat.store")

NEW_TITLE = "New conversation"
_TITLE_CHARS = 60

# A node renews its lease this often, and recovers other nodes' replies then too.
DEFAULT_LEASE_INTERVAL_S = 5.0
# A lease not renewed for this long belongs to a node taken for dead.
DEFAULT_STALE_AFTER_S = 30.0


# How long a failed write keeps a store reported not ok, though writes since went
# through: under a full disk small writes in freed space succeed between failures.
_FAILURE_HOLD_S = 30.0


class StoreHealth:
    """The outcome of a store's recent operations, for `/healthz`; no I/O of its own.

    Updated on the event loop as operations finish. A store is not ok while its
    last write failed, for `_FAILURE_HOLD_S` after any failure, and while a
    lasting `fault` (its file removed) stands.
    """

    __slots__ = ("_error", "_error_at", "_failing", "fault")

    def __init__(self) -> None:
        self._error: str | None = None
        self._error_at = 0.0  # time.time() of the last failure
        self._failing = False
        self.fault: str | None = None

    def succeeded(self) -> None:
        """A write went through."""
        self._failing = False

    def failed(self, cause: str) -> None:
        """An operation failed for reasons outside our code."""
        self._error = cause
        self._error_at = time.time()
        self._failing = True

    def report(self) -> dict[str, object]:
        """`{"ok": true}`, or `{"ok": false, "error": ...}`, with the last failure and when."""
        if self.fault is not None:
            return {"ok": False, "error": self.fault}
        if self._error is None:
            return {"ok": True}
        at = round(self._error_at, 3)
        if self._failing or time.time() - self._error_at < _FAILURE_HOLD_S:
            return {"ok": False, "error": self._error, "error_at": at}
        return {"ok": True, "last_error": self._error, "last_error_at": at}

    @contextlib.contextmanager
    def watch(
        self, unavailable: Callable[[BaseException], str | None], *, write: bool
    ) -> Iterator[None]:
        """Record the outcome of the operation inside; a database failure becomes StoreUnavailable.

        `unavailable` says what went wrong when an exception is the database's
        failure rather than our bug (None for a bug: it propagates as it is).

        Raises:
            StoreUnavailable: the operation failed for reasons outside our code.
        """
        try:
            yield
        except StoreUnavailable as exc:
            self.failed(str(exc))
            raise
        except Exception as exc:
            cause = unavailable(exc)
            if cause is None:
                raise
            self.failed(cause)
            raise StoreUnavailable(cause) from exc
        if write:
            self.succeeded()


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
    `event_id` is the id of the last event whose text `content` includes, when
    the reply was saved with one.
    """

    id: str
    role: str
    content: str
    status: str
    finish_reason: str | None
    model: str | None
    created_at: float
    error: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ConversationSettings:
    """How a conversation's replies are written: which model, and its system prompt.

    `model` is None until someone picks one (the server's default model then);
    `system` is "" when there is no system prompt.
    """

    model: str | None = None
    system: str = ""


@dataclass(frozen=True, slots=True)
class Transcript:
    """A conversation with all its messages, oldest first, and its settings."""

    conversation: ConversationSummary
    messages: tuple[StoredMessage, ...]
    settings: ConversationSettings = ConversationSettings()


@dataclass(frozen=True, slots=True)
class Revision:
    """A reply started again: the user message it answers and the new "streaming" reply.

    `truncated_from` is the first message removed from the transcript (the old
    reply of a regenerate, the edited message itself for an edit, which comes
    back with its new content), or None when nothing was removed.
    """

    user: StoredMessage
    answer: StoredMessage
    truncated_from: str | None


@dataclass(frozen=True, slots=True)
class Account:
    """Someone who signed up: the store keeps only an argon2 hash, never a password.

    `username` is unique compared case-insensitively (see `username_key`) and
    kept as it was typed; `name` is the display name; `created_at` is seconds
    since the epoch.
    """

    id: str  # UUID4 hex
    username: str
    name: str
    password_hash: str  # argon2's encoded form: "$argon2id$v=19$..."
    created_at: float


def check_owner(owner: str) -> None:
    """Refuse an owner no request can be: the empty string.

    An owner is opaque ("guest:...", "account:...", "jwt:..."); only the empty
    string is refused, since it is what a missing principal looks like.

    Raises:
        ValueError: `owner` is empty.
    """
    if not owner:
        raise ValueError("a conversation's owner must be a non-empty string")


def username_key(username: str) -> str:
    """The form of `username` that is unique: case-folded, so "Alice" and "ALICE" are one.

    Computed here rather than by each database's lower(), so that SQLite and
    PostgreSQL (whose lower() follows the database's locale) agree on every name.
    """
    return username.casefold()


def check_password_hash(password_hash: str) -> None:
    """Refuse anything but an argon2 encoded hash, so a password cannot be stored by mistake.

    Raises:
        ValueError: `password_hash` is not in argon2's encoded form.
    """
    if not password_hash.startswith("$argon2"):
        raise ValueError("password_hash must be an argon2 encoded hash ($argon2...)")


def check_session_age(max_age_s: float) -> None:
    """Refuse a session that would be born expired.

    Raises:
        ValueError: `max_age_s` is not positive.
    """
    if not max_age_s > 0:
        raise ValueError(f"max_age_s must be positive, got {max_age_s}")


def new_session_id() -> str:
    """A new session id: 32 random bytes, URL-safe base64, for the cookie."""
    return secrets.token_urlsafe(32)


def session_key(session_id: str) -> str:
    """What the sessions table keeps for `session_id`: its SHA-256, hex.

    A copy of the database (a backup, a dump) then holds no session that works:
    the id is 256 random bits, so an unsalted fast hash is enough to make it
    one-way, and a lookup stays one indexed equality.
    """
    return hashlib.sha256(session_id.encode()).hexdigest()


def title_from(content: str) -> str:
    """A conversation's title made of its first user message: one line, shortened."""
    line = " ".join(content.split())
    return line if len(line) <= _TITLE_CHARS else line[: _TITLE_CHARS - 1] + "…"


def check_lease_timing(lease_interval_s: float, stale_after_s: float) -> None:
    """Refuse lease timings under which a live node could be taken for dead.

    Raises:
        ValueError: an interval is not positive, or a lease would go stale before
            its next renewal (at least two renewals must fit in `stale_after_s`).
    """
    if lease_interval_s <= 0:
        raise ValueError(f"lease_interval_s must be positive, got {lease_interval_s}")
    if stale_after_s < 2 * lease_interval_s:
        raise ValueError(
            f"stale_after_s ({stale_after_s}) must be at least twice "
            f"lease_interval_s ({lease_interval_s})"
        )


def start_lease_task(renewals: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """Run a store's lease renewals as a task; its failure is logged once, when it happens.

    The renewals catch what they expect (a database away for a while), so a
    failure is a bug of ours: the lease then goes stale and other nodes take
    this one for dead.
    """
    task = asyncio.get_running_loop().create_task(renewals, name=name)
    task.add_done_callback(_log_failure)
    return task


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("%s failed", task.get_name(), exc_info=exc)


async def stop_lease_task(task: asyncio.Task[None]) -> None:
    """Cancel a store's lease renewals and wait until they have stopped."""
    task.cancel()
    # return_exceptions: a failure was logged when it happened.
    await asyncio.gather(task, return_exceptions=True)


class Store(Protocol):
    """Where conversations are kept: SQLite on one machine, PostgreSQL for several.

    Each open store is a node with a lease: its "streaming" replies are marked
    interrupted by another node only once its lease is gone or stale.
    """

    @property
    def node_id(self) -> str:
        """This store's node id (UUID4 hex), the owner of the replies it streams."""
        ...

    def rooms(self) -> RoomStore:
        """The named rooms and their messages, in the same database."""
        ...

    def describe(self) -> str:
        """Where the conversations are, for the log; never shows a password."""
        ...

    def health(self) -> dict[str, object]:
        """`{"ok": true}`, or `{"ok": false, "error": ...}`: cheap, for every `/healthz`."""
        ...

    async def ready(self, timeout_s: float) -> str | None:
        """None if a trivial query (`SELECT 1`) answers within `timeout_s`, else why not."""
        ...

    async def open(self) -> int:
        """Open (creating tables as needed), take the lease; how many replies were recovered."""
        ...

    async def close(self) -> None:
        """Give up the lease and release the connections; idempotent."""
        ...

    # Conversations. Every method a request reaches takes the owner (see
    # `check_owner`), and the owner is part of each query: someone else's
    # conversation answers exactly like one that does not exist. Conversations
    # made before owners existed have none, and no owner reaches them.

    async def create_conversation(self, owner: str) -> ConversationSummary:
        """A new, empty conversation of `owner`, with an unguessable id (UUID4).

        Raises:
            ValueError: `owner` is empty.
            StoreUnavailable: the database failed; nothing is written.
        """
        ...

    async def list_conversations(self, owner: str, limit: int) -> list[ConversationSummary]:
        """At most `limit` of `owner`'s conversations, the most recently updated first.

        Equal update times order by id, compared bytewise.
        """
        ...

    async def exists(self, owner: str, conversation_id: str) -> bool:
        """Whether `owner` has a conversation with this id (False for someone else's)."""
        ...

    async def transcript(self, owner: str, conversation_id: str) -> Transcript | None:
        """`owner`'s conversation and its messages; None if missing or someone else's."""
        ...

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

        Raises:
            ReplyInProgress: a "streaming" message while the conversation has one.
            StoreUnavailable: the database failed; nothing is written.
        """
        ...

    async def start_reply(
        self, owner: str, conversation_id: str, content: str, model: str
    ) -> tuple[StoredMessage, StoredMessage] | None:
        """Append the user's message and a "streaming" reply to it, both or neither.

        None, with nothing written, if the conversation is missing or not `owner`'s.

        Raises:
            ReplyInProgress: the conversation has a streaming reply (nothing is written).
            StoreUnavailable: the database failed; nothing is written.
        """
        ...

    async def rename_conversation(
        self, owner: str, conversation_id: str, title: str
    ) -> ConversationSummary | None:
        """Set the title of `owner`'s conversation (and its update time); None if not theirs.

        Raises:
            StoreUnavailable: the database failed; nothing is written.
        """
        ...

    async def conversation_settings(
        self, owner: str, conversation_id: str
    ) -> ConversationSettings | None:
        """The model and system prompt of `owner`'s conversation; None if not theirs."""
        ...

    async def update_settings(
        self,
        owner: str,
        conversation_id: str,
        *,
        model: str | None = None,
        system: str | None = None,
    ) -> tuple[ConversationSummary, ConversationSettings] | None:
        """Set what is given (None: unchanged) of `owner`'s conversation; what it is now.

        The update time moves. None, with nothing written, if the conversation is
        missing or not `owner`'s.

        Raises:
            StoreUnavailable: the database failed; nothing is written.
        """
        ...

    async def restart_reply(self, owner: str, conversation_id: str, model: str) -> Revision | None:
        """Regenerate: delete the last reply and add a "streaming" one, in one transaction.

        None, with nothing written, if the conversation is missing or not `owner`'s.

        Raises:
            ReplyInProgress: the conversation has a streaming reply (nothing is written).
            NothingToRevise: the conversation has no user message to answer again.
            StoreUnavailable: the database failed; nothing is written.
        """
        ...

    async def edit_reply(
        self, owner: str, conversation_id: str, message_id: str, content: str, model: str
    ) -> Revision | None:
        """Edit a user message: replace its content, delete every later message, add a
        "streaming" reply, all in one transaction.

        None, with nothing written, if the conversation is missing or not `owner`'s.

        Raises:
            ReplyInProgress: the conversation has a streaming reply (nothing is written).
            NothingToRevise: no user message `message_id` in this conversation.
            StoreUnavailable: the database failed; nothing is written.
        """
        ...

    async def delete_conversation(self, owner: str, conversation_id: str) -> bool:
        """Delete `owner`'s conversation and all its messages, in one transaction.

        False, with nothing deleted, if it is missing or someone else's. A reply
        still streaming in it is deleted too; its later saves change nothing.

        Raises:
            StoreUnavailable: the database failed; nothing is deleted.
        """
        ...

    async def transfer_conversations(self, from_owner: str, to_owner: str) -> int:
        """Give all of `from_owner`'s conversations to `to_owner` (a guest signing in); how many.

        Raises:
            ValueError: an owner is empty.
            StoreUnavailable: the database failed; nothing is moved.
        """
        ...

    # Accounts and sessions.

    async def create_account(self, username: str, password_hash: str, name: str) -> Account | None:
        """A new account; None if the username is taken, compared case-insensitively.

        Raises:
            ValueError: `password_hash` is not an argon2 encoded hash.
            StoreUnavailable: the database failed; nothing is written.
        """
        ...

    async def account_by_username(self, username: str) -> Account | None:
        """The account with this username, compared case-insensitively; None if there is none."""
        ...

    async def set_account_name(self, account_id: str, name: str) -> bool:
        """Change an account's display name; False if there is no such account.

        Raises:
            StoreUnavailable: the database failed; nothing is written.
        """
        ...

    async def create_session(self, account_id: str, max_age_s: float) -> str:
        """A new session of the account, live for `max_age_s`: its id, for the cookie.

        Also deletes the account's expired sessions. The id is
        `secrets.token_urlsafe(32)`; the table keeps only its hash.

        Raises:
            ValueError: `max_age_s` is not positive.
            StoreError: there is no such account (nothing is written).
            StoreUnavailable: the database failed; nothing is written.
        """
        ...

    async def session_account(self, session_id: str) -> Account | None:
        """The account of a live session; None if the session is unknown, expired or deleted."""
        ...

    async def delete_session(self, session_id: str) -> None:
        """Sign out: the session stops working at once, for every node on the database.

        Raises:
            StoreUnavailable: the database failed; the session may still work.
        """
        ...

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
        """Store a reply's text so far, its status, and the last event id its text includes."""
        ...
