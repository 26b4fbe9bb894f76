"""What every conversation store shares: the `Store` interface, its records, and the leases."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "DEFAULT_LEASE_INTERVAL_S",
    "DEFAULT_STALE_AFTER_S",
    "NEW_TITLE",
    "ConversationSummary",
    "Store",
    "StoredMessage",
    "Transcript",
    "check_lease_timing",
    "start_lease_task",
    "stop_lease_task",
    "title_from",
]

log = logging.getLogger("ssechat.store")

NEW_TITLE = "New conversation"
_TITLE_CHARS = 60

# A node renews its lease this often, and recovers other nodes' replies then too.
DEFAULT_LEASE_INTERVAL_S = 5.0
# A lease not renewed for this long belongs to a node taken for dead.
DEFAULT_STALE_AFTER_S = 30.0


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
class Transcript:
    """A conversation with all its messages, oldest first."""

    conversation: ConversationSummary
    messages: tuple[StoredMessage, ...]


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

    def describe(self) -> str:
        """Where the conversations are, for the log; never shows a password."""
        ...

    async def open(self) -> int:
        """Open (creating tables as needed), take the lease; how many replies were recovered."""
        ...

    async def close(self) -> None:
        """Give up the lease and release the connections; idempotent."""
        ...

    async def create_conversation(self) -> ConversationSummary:
        """A new, empty conversation with an unguessable id (UUID4)."""
        ...

    async def list_conversations(self, limit: int) -> list[ConversationSummary]:
        """The most recently updated conversations first."""
        ...

    async def exists(self, conversation_id: str) -> bool:
        """Whether a conversation with this id exists."""
        ...

    async def transcript(self, conversation_id: str) -> Transcript | None:
        """The conversation and its messages, or None if there is no such conversation."""
        ...

    async def add_message(
        self,
        conversation_id: str,
        role: str,
        content: str,
        status: str,
        model: str | None = None,
    ) -> StoredMessage | None:
        """Append a message; None if the conversation does not exist."""
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
