"""Regenerate, edit, and a conversation's settings, in PostgreSQL, for `PostgresStore`.

The same contract as `sqlite_revisions`, statement for statement. Each
function runs inside the caller's transaction; every statement names the
conversation's owner.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import asyncpg  # type: ignore[import-untyped]  # asyncpg 0.32 ships no type hints

from sse.chat.store.base import (
    ConversationSettings,
    ConversationSummary,
    Revision,
    StoredMessage,
    title_from,
)
from sse.errors import NothingToRevise, ReplyInProgress

__all__ = ["read_settings", "revise", "write_settings"]

# Inserts a message inside the caller's transaction; False if not the owner's conversation.
Insert = Callable[[asyncpg.Connection, str, str, StoredMessage], Awaitable[bool]]

_MESSAGE_COLUMNS = (
    "m.id, m.role, m.content, m.status, m.finish_reason, m.model, m.created_at, m.error, "
    "m.event_id, m.seq"
)
_OWNED = "JOIN conversations AS c ON c.id = m.conversation_id WHERE c.id = $1 AND c.owner = $2"


async def read_settings(
    conn: asyncpg.Pool | asyncpg.Connection, owner: str, conversation_id: str
) -> ConversationSettings | None:
    """The model and system prompt of `owner`'s conversation; None if not theirs."""
    row = await conn.fetchrow(
        "SELECT model, system_prompt FROM conversations WHERE id = $1 AND owner = $2",
        conversation_id,
        owner,
    )
    return None if row is None else ConversationSettings(row[0], row[1] or "")


async def write_settings(
    conn: asyncpg.Pool | asyncpg.Connection,
    owner: str,
    conversation_id: str,
    model: str | None,
    system: str | None,
) -> tuple[ConversationSummary, ConversationSettings] | None:
    """Set the given settings (None: unchanged); the result, or None if not `owner`'s."""
    row = await conn.fetchrow(
        "UPDATE conversations SET model = COALESCE($1, model), "
        "system_prompt = COALESCE($2, system_prompt), updated_at = $3 WHERE id = $4 "
        "AND owner = $5 RETURNING id, title, created_at, updated_at, model, system_prompt",
        model,
        system,
        time.time(),
        conversation_id,
        owner,
    )
    if row is None:
        return None
    values = tuple(row)
    return ConversationSummary(*values[:4]), ConversationSettings(values[4], values[5] or "")


async def revise(
    conn: asyncpg.Connection,
    insert: Insert,
    owner: str,
    conversation_id: str,
    answer: StoredMessage,
    edit: tuple[str, str] | None = None,
) -> Revision | None:
    """Answer a user message again: the last one, or `edit` = (its id, its new content).

    Inside the caller's transaction: the messages after it are deleted, an
    edited message's content replaced, and `answer` ("streaming") appended.

    Raises:
        ReplyInProgress: a reply of the conversation is streaming.
        NothingToRevise: no user message to answer (or none with the edit's id).
    """
    # FOR UPDATE, as `_insert` takes it: nodes revising or appending take turns.
    found = await conn.fetchval(
        "SELECT 1 FROM conversations WHERE id = $1 AND owner = $2 FOR UPDATE",
        conversation_id,
        owner,
    )
    if found is None:
        return None
    streaming = await conn.fetchval(
        f"SELECT 1 FROM messages AS m {_OWNED} AND m.status = 'streaming'",
        conversation_id,
        owner,
    )
    if streaming is not None:
        # Deleting it would leave its node saving a reply nobody can see.
        raise ReplyInProgress("a reply of this conversation is streaming")
    if edit is None:
        row = await conn.fetchrow(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages AS m {_OWNED} AND m.role = 'user' "
            "ORDER BY m.seq DESC LIMIT 1",
            conversation_id,
            owner,
        )
        if row is None:
            raise NothingToRevise("the conversation has no message to answer again")
    else:
        row = await conn.fetchrow(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages AS m {_OWNED} AND m.role = 'user' "
            "AND m.id = $3",
            conversation_id,
            owner,
            edit[0],
        )
        if row is None:
            raise NothingToRevise(f"no message {edit[0]} of yours to edit here")
    user = StoredMessage(*tuple(row)[:9])
    seq: int = row[9]
    after = await conn.fetchval(
        f"SELECT m.id FROM messages AS m {_OWNED} AND m.seq > $3 ORDER BY m.seq LIMIT 1",
        conversation_id,
        owner,
        seq,
    )
    await conn.execute(
        "DELETE FROM messages WHERE seq > $1 AND conversation_id IN "
        "(SELECT id FROM conversations WHERE id = $2 AND owner = $3)",
        seq,
        conversation_id,
        owner,
    )
    truncated_from = None if after is None else str(after)
    if edit is not None:
        await conn.execute(
            "UPDATE messages SET content = $1, updated_at = $2 WHERE id = $3 AND conversation_id "
            "IN (SELECT id FROM conversations WHERE id = $4 AND owner = $5)",
            edit[1],
            answer.created_at,
            user.id,
            conversation_id,
            owner,
        )
        # A title made of the old text follows it (one the owner gave stays).
        await conn.execute(
            "UPDATE conversations SET title = $1 WHERE id = $2 AND owner = $3 AND title = $4",
            title_from(edit[1]),
            conversation_id,
            owner,
            title_from(user.content),
        )
        user = StoredMessage(user.id, "user", edit[1], user.status, None, None, user.created_at)
        truncated_from = user.id
    await insert(conn, owner, conversation_id, answer)
    return Revision(user, answer, truncated_from)
