"""The conversation store's interface, and the one `Config` asks for."""

from __future__ import annotations

from typing import Protocol

from sse.config import Config
from sse.store import ConversationSummary, SqliteStore, StoredMessage, Transcript
from sse.store_pg import PostgresStore

__all__ = ["Store", "build_store"]


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

    def health(self) -> dict[str, object]:
        """`{"ok": true}`, or `{"ok": false, "error": ...}`: cheap, for every `/healthz`."""
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

    async def start_reply(
        self, conversation_id: str, content: str, model: str
    ) -> tuple[StoredMessage, StoredMessage] | None:
        """Append the user's message and a "streaming" reply to it, both or neither.

        None if the conversation does not exist.

        Raises:
            ReplyInProgress: the conversation has a streaming reply (nothing is written).
            StoreUnavailable: the database failed; nothing is written.
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


def build_store(config: Config) -> Store:
    """PostgreSQL when `config.db_url` is set, else the SQLite file `config.db_path`."""
    if config.db_url is not None:
        return PostgresStore(config.db_url)
    return SqliteStore(config.db_path)
