"""Regenerate, edit, and a conversation's settings, in SQLite: run on `SqliteStore`'s thread.

Each function takes the store's connection and runs one transaction. Every
statement names the conversation's owner, as everywhere in the store: someone
else's conversation is exactly like one that does not exist.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

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
Insert = Callable[[sqlite3.Connection, str, str, StoredMessage], bool]

_MESSAGE_COLUMNS = (
    "m.id, m.role, m.content, m.status, m.finish_reason, m.model, m.created_at, m.error, "
    "m.event_id, m.seq"
)
_OWNED = "JOIN conversations AS c ON c.id = m.conversation_id WHERE c.id = ? AND c.owner = ?"


def read_settings(
    db: sqlite3.Connection, owner: str, conversation_id: str
) -> ConversationSettings | None:
    """The model and system prompt of `owner`'s conversation; None if not theirs."""
    row = db.execute(
        "SELECT model, system_prompt FROM conversations WHERE id = ? AND owner = ?",
        (conversation_id, owner),
    ).fetchone()
    return None if row is None else ConversationSettings(row[0], row[1] or "")


def write_settings(
    db: sqlite3.Connection,
    owner: str,
    conversation_id: str,
    model: str | None,
    system: str | None,
) -> tuple[ConversationSummary, ConversationSettings] | None:
    """Set the given settings (None: unchanged); the result, or None if not `owner`'s."""
    row = db.execute(
        "UPDATE conversations SET model = COALESCE(?, model), "
        "system_prompt = COALESCE(?, system_prompt), updated_at = ? WHERE id = ? AND owner = ? "
        "RETURNING id, title, created_at, updated_at, model, system_prompt",
        (model, system, time.time(), conversation_id, owner),
    ).fetchone()
    if row is None:
        return None
    return ConversationSummary(*row[:4]), ConversationSettings(row[4], row[5] or "")


def revise(
    db: sqlite3.Connection,
    insert: Insert,
    owner: str,
    conversation_id: str,
    answer: StoredMessage,
    edit: tuple[str, str] | None = None,
) -> Revision | None:
    """Answer a user message again: the last one, or `edit` = (its id, its new content).

    In one transaction: the messages after it are deleted, an edited message's
    content replaced, and `answer` (a "streaming" reply) appended.

    Raises:
        ReplyInProgress: a reply of the conversation is streaming.
        NothingToRevise: no user message to answer (or none with the edit's id).
    """
    with db:
        db.execute("BEGIN IMMEDIATE")
        found = db.execute(
            "SELECT 1 FROM conversations WHERE id = ? AND owner = ?", (conversation_id, owner)
        ).fetchone()
        if found is None:
            return None
        streaming = db.execute(
            f"SELECT 1 FROM messages AS m {_OWNED} AND m.status = 'streaming'",
            (conversation_id, owner),
        ).fetchone()
        if streaming is not None:
            # Deleting it would leave its node saving a reply nobody can see.
            raise ReplyInProgress("a reply of this conversation is streaming")
        if edit is None:
            row = db.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages AS m {_OWNED} AND m.role = 'user' "
                "ORDER BY m.seq DESC LIMIT 1",
                (conversation_id, owner),
            ).fetchone()
            if row is None:
                raise NothingToRevise("the conversation has no message to answer again")
        else:
            row = db.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages AS m {_OWNED} AND m.role = 'user' "
                "AND m.id = ?",
                (conversation_id, owner, edit[0]),
            ).fetchone()
            if row is None:
                raise NothingToRevise(f"no message {edit[0]} of yours to edit here")
        user = StoredMessage(*row[:9])
        seq = row[9]
        after = db.execute(
            f"SELECT m.id FROM messages AS m {_OWNED} AND m.seq > ? ORDER BY m.seq LIMIT 1",
            (conversation_id, owner, seq),
        ).fetchone()
        db.execute(
            "DELETE FROM messages WHERE seq > ? AND conversation_id IN "
            "(SELECT id FROM conversations WHERE id = ? AND owner = ?)",
            (seq, conversation_id, owner),
        )
        truncated_from = None if after is None else str(after[0])
        if edit is not None:
            db.execute(
                "UPDATE messages SET content = ?, updated_at = ? WHERE id = ? AND conversation_id "
                "IN (SELECT id FROM conversations WHERE id = ? AND owner = ?)",
                (edit[1], answer.created_at, user.id, conversation_id, owner),
            )
            # A title made of the old text follows it (one the owner gave stays).
            db.execute(
                "UPDATE conversations SET title = ? WHERE id = ? AND owner = ? AND title = ?",
                (title_from(edit[1]), conversation_id, owner, title_from(user.content)),
            )
            user = StoredMessage(user.id, "user", edit[1], user.status, None, None, user.created_at)
            truncated_from = user.id
        insert(db, owner, conversation_id, answer)
    return Revision(user, answer, truncated_from)
