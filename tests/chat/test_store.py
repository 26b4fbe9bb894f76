"""The conversation stores, SQLite and PostgreSQL, held to one contract on real databases."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sse.chat.store.base import NEW_TITLE, Account, Store, StoredMessage
from sse.chat.store.factory import build_store
from sse.chat.store.postgres import _MIGRATIONS, PostgresStore
from sse.chat.store.sqlite import SqliteStore
from sse.config import Config
from sse.errors import StoreError
from tests.support.client import Response, request, wait_until
from tests.support.servers import ROOT, ServerProcess
from tests.support.stores import Backend

JSON = [("content-type", "application/json")]
# Every migration this release has, as schema_version rows.
_ALL_VERSIONS = [(v,) for v in range(1, len(_MIGRATIONS) + 1)]
# Fast leases for the tests that wait for one to go stale.
FAST = {"lease_interval_s": 0.05, "stale_after_s": 0.5}
# A lease that is taken at open and not renewed during a test.
SILENT = {"lease_interval_s": 60.0, "stale_after_s": 120.0}
# Owners, as the app's principals name them: opaque to the store.
OWNER = "guest:3f2a"
OTHER = "account:ab12"


def _files(folder: Path) -> list[str]:
    """The names in `folder`."""
    return sorted(p.name for p in folder.iterdir())


def _lock_files(db: Path) -> list[str]:
    """The lock files of SQLite nodes on `db` (one per live node)."""
    return _files(db.with_name(db.name + "-nodes"))


async def _transcript_message(
    store: Store, conversation_id: str, owner: str = OWNER
) -> StoredMessage:
    found = await store.transcript(owner, conversation_id)
    assert found is not None
    return found.messages[-1]


async def _streaming_reply(store: Store, text: str = "half a") -> tuple[str, str]:
    """A conversation whose reply is still streaming; (conversation id, reply id)."""
    conversation = await store.create_conversation(OWNER)
    await store.add_message(OWNER, conversation.id, "user", "hi", "complete")
    reply = await store.add_message(
        OWNER, conversation.id, "assistant", "", "streaming", model="echo"
    )
    assert reply is not None
    await store.save_reply(reply.id, text, "streaming", None)
    return conversation.id, reply.id


# The contract


async def test_new_conversation_exists_and_is_listed_as_created(backend: Backend) -> None:
    store = backend.make()
    assert await store.open() == 0
    created = await store.create_conversation(OWNER)
    assert uuid.UUID(created.id).version == 4
    assert created.title == NEW_TITLE
    assert created.created_at == created.updated_at
    assert await store.exists(OWNER, created.id)
    assert not await store.exists(OWNER, str(uuid.uuid4()))
    # The times come back as the very floats they were made with.
    assert await store.list_conversations(OWNER, 10) == [created]


async def test_list_puts_the_latest_update_first_and_honours_the_limit(
    backend: Backend,
) -> None:
    store = backend.make()
    await store.open()
    first = await store.create_conversation(OWNER)
    second = await store.create_conversation(OWNER)
    third = await store.create_conversation(OWNER)
    message = await store.add_message(OWNER, first.id, "user", "bump", "complete")
    assert message is not None
    listed = await store.list_conversations(OWNER, 10)
    assert [c.id for c in listed] == [first.id, third.id, second.id]
    assert listed[0].updated_at == message.created_at
    assert listed[0].created_at == first.created_at
    assert [c.id for c in await store.list_conversations(OWNER, 2)] == [first.id, third.id]


async def test_equal_update_times_list_in_bytewise_id_order(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    await store.close()
    # Bytewise, as SQLite compares text: "B" before "a" before "b" (a locale would say a, B, b).
    for name in ("b", "B", "a"):
        await backend.rows(
            f"INSERT INTO conversations (id, title, created_at, updated_at, owner) "
            f"VALUES ('{name}', 't', 1.5, 1.5, '{OWNER}')"
        )
    again = backend.make()
    await again.open()
    assert [c.id for c in await again.list_conversations(OWNER, 10)] == ["B", "a", "b"]


async def test_transcript_keeps_the_order_and_the_first_user_message_titles_it(
    backend: Backend,
) -> None:
    store = backend.make()
    await store.open()
    conversation = await store.create_conversation(OWNER)
    user = await store.add_message(
        OWNER, conversation.id, "user", "  Hello\n   world  ", "complete"
    )
    reply = await store.add_message(
        OWNER, conversation.id, "assistant", "", "streaming", model="echo"
    )
    assert user is not None
    assert reply is not None
    await store.save_reply(reply.id, "You said: Hello world", "complete", "stop")
    later = await store.add_message(OWNER, conversation.id, "user", "x" * 100, "complete")
    assert later is not None
    found = await store.transcript(OWNER, conversation.id)
    assert found is not None
    assert found.conversation.id == conversation.id
    assert found.conversation.title == "Hello world"
    assert found.conversation.created_at == conversation.created_at
    assert found.conversation.updated_at == later.created_at
    assert found.messages == (
        user,
        StoredMessage(
            reply.id, "assistant", "You said: Hello world", "complete", "stop", "echo",
            reply.created_at,
        ),
        later,
    )  # fmt: skip
    assert user == StoredMessage(
        user.id, "user", "  Hello\n   world  ", "complete", None, None, user.created_at
    )


async def test_nodes_appending_to_one_conversation_at_once_keep_every_message(
    backend: Backend,
) -> None:
    first, second = backend.make(), backend.make()
    await first.open()
    await second.open()
    conversation = await first.create_conversation(OWNER)
    texts = [f"message {n}" for n in range(20)]
    added = await asyncio.gather(
        *(
            (first if n % 2 else second).add_message(
                OWNER, conversation.id, "user", text, "complete"
            )
            for n, text in enumerate(texts)
        )
    )
    found = await first.transcript(OWNER, conversation.id)
    assert found is not None
    assert sorted(m.content for m in found.messages) == sorted(texts)
    assert {m.id for m in found.messages} == {m.id for m in added if m is not None}


async def test_a_long_first_message_makes_a_shortened_title(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    conversation = await store.create_conversation(OWNER)
    await store.add_message(OWNER, conversation.id, "user", "word " * 40, "complete")
    found = await store.transcript(OWNER, conversation.id)
    assert found is not None
    assert found.conversation.title == ("word " * 12)[:59] + "…"


async def test_unknown_conversation_gets_none_and_nothing_is_written(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    unknown = str(uuid.uuid4())
    assert await store.add_message(OWNER, unknown, "user", "hello?", "complete") is None
    assert await store.transcript(OWNER, unknown) is None
    assert not await store.exists(OWNER, unknown)
    assert await store.list_conversations(OWNER, 10) == []
    assert await backend.rows("SELECT id FROM messages") == []


async def test_save_reply_keeps_text_status_reason_error_and_event_id(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    conversation = await store.create_conversation(OWNER)
    reply = await store.add_message(
        OWNER, conversation.id, "assistant", "", "streaming", model="echo"
    )
    assert reply is not None
    assert reply.event_id is None
    await store.save_reply(reply.id, "Hi", "streaming", None, event_id="1795538481868-7")
    saved = await _transcript_message(store, conversation.id)
    assert (saved.content, saved.status, saved.event_id) == ("Hi", "streaming", "1795538481868-7")
    await store.save_reply(reply.id, "Hi there", "complete", "stop", event_id="1795538481868-9")
    saved = await _transcript_message(store, conversation.id)
    assert saved == StoredMessage(
        reply.id,
        "assistant",
        "Hi there",
        "complete",
        "stop",
        "echo",
        reply.created_at,
        error=None,
        event_id="1795538481868-9",
    )
    await store.save_reply(reply.id, "Hi there", "error", None, "The model failed.")
    saved = await _transcript_message(store, conversation.id)
    assert (saved.status, saved.finish_reason, saved.error, saved.event_id) == (
        "error",
        None,
        "The model failed.",
        None,
    )


async def test_text_round_trips_exactly(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    conversation = await store.create_conversation(OWNER)
    text = "ünïcødé 🎉 \u2028 line\r\nbreaks \t and 'quotes' \"too\" -- ; DROP TABLE messages"
    user = await store.add_message(OWNER, conversation.id, "user", text, "complete")
    assert user is not None
    assert (await _transcript_message(store, conversation.id)).content == text


async def test_a_store_not_open_refuses_to_work(backend: Backend) -> None:
    store = backend.make()
    with pytest.raises(StoreError, match="not open"):
        await store.create_conversation(OWNER)
    await store.open()
    await store.close()
    with pytest.raises(StoreError, match="not open"):
        await store.list_conversations(OWNER, 1)
    await store.close()  # twice: idempotent


# Owners


async def _rows_of_conversations(backend: Backend) -> list[tuple[Any, ...]]:
    """Every conversation and message row, in a stable order: what a refusal must not change."""
    conversations = await backend.rows(
        "SELECT id, title, created_at, updated_at, owner FROM conversations ORDER BY id"
    )
    messages = await backend.rows(
        "SELECT id, conversation_id, seq, content, status, updated_at FROM messages ORDER BY id"
    )
    return conversations + messages


async def test_another_owner_cannot_see_read_append_rename_or_delete(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    mine = await store.create_conversation(OWNER)
    await store.add_message(OWNER, mine.id, "user", "mine", "complete")
    # A reply streaming: the other owner's start_reply must not learn of it (no ReplyInProgress).
    await store.add_message(OWNER, mine.id, "assistant", "", "streaming", model="echo")
    theirs = await store.create_conversation(OTHER)
    before = await _rows_of_conversations(backend)
    transcript = await store.transcript(OWNER, mine.id)

    assert [c.id for c in await store.list_conversations(OTHER, 10)] == [theirs.id]
    assert not await store.exists(OTHER, mine.id)
    assert await store.transcript(OTHER, mine.id) is None
    assert await store.add_message(OTHER, mine.id, "user", "intruder", "complete") is None
    assert await store.add_message(OTHER, mine.id, "assistant", "", "streaming") is None
    assert await store.start_reply(OTHER, mine.id, "intruder", "echo") is None
    assert await store.rename_conversation(OTHER, mine.id, "taken over") is None
    assert not await store.delete_conversation(OTHER, mine.id)

    assert await _rows_of_conversations(backend) == before
    assert await store.transcript(OWNER, mine.id) == transcript
    assert [c.id for c in await store.list_conversations(OWNER, 10)] == [mine.id]


async def test_someone_elses_conversation_answers_like_a_missing_one(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    mine = await store.create_conversation(OWNER)
    missing = str(uuid.uuid4())
    for conversation_id in (mine.id, missing):
        assert not await store.exists(OTHER, conversation_id)
        assert await store.transcript(OTHER, conversation_id) is None
        assert await store.start_reply(OTHER, conversation_id, "hi", "echo") is None
        assert await store.rename_conversation(OTHER, conversation_id, "x") is None
        assert not await store.delete_conversation(OTHER, conversation_id)


async def test_an_empty_owner_is_refused(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    with pytest.raises(ValueError, match="owner"):
        await store.create_conversation("")
    with pytest.raises(ValueError, match="owner"):
        await store.transfer_conversations("", OWNER)
    with pytest.raises(ValueError, match="owner"):
        await store.transfer_conversations(OWNER, "")
    assert await backend.rows("SELECT id FROM conversations") == []


async def test_rename_sets_the_title_and_the_update_time(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    renamed_one = await store.create_conversation(OWNER)
    later = await store.create_conversation(OWNER)
    renamed = await store.rename_conversation(OWNER, renamed_one.id, "Plans for Tuesday")
    assert renamed is not None
    assert (renamed.id, renamed.title, renamed.created_at) == (
        renamed_one.id,
        "Plans for Tuesday",
        renamed_one.created_at,
    )
    assert renamed.updated_at >= later.updated_at
    assert await store.list_conversations(OWNER, 10) == [renamed, later]
    # A title given by hand is not replaced by the first message's.
    await store.add_message(OWNER, renamed.id, "user", "first words", "complete")
    found = await store.transcript(OWNER, renamed.id)
    assert found is not None
    assert found.conversation.title == "Plans for Tuesday"


async def test_delete_removes_the_conversation_and_only_its_messages(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    doomed, doomed_reply = await _streaming_reply(store)
    kept, _ = await _streaming_reply(store)
    kept_rows = await backend.rows(f"SELECT id FROM messages WHERE conversation_id = '{kept}'")
    assert await store.delete_conversation(OWNER, doomed)
    assert not await store.exists(OWNER, doomed)
    assert await store.transcript(OWNER, doomed) is None
    assert await backend.rows(f"SELECT id FROM conversations WHERE id = '{doomed}'") == []
    assert sorted(await backend.rows("SELECT id FROM messages")) == sorted(kept_rows)
    assert [c.id for c in await store.list_conversations(OWNER, 10)] == [kept]
    # Twice: nothing left to delete. The deleted reply's late save writes nothing.
    assert not await store.delete_conversation(OWNER, doomed)
    await store.save_reply(doomed_reply, "too late", "complete", "stop")
    assert sorted(await backend.rows("SELECT id FROM messages")) == sorted(kept_rows)
    # The conversation kept has its streaming reply still: the delete freed only its own.
    assert (await _transcript_message(store, kept)).status == "streaming"


async def test_transfer_moves_exactly_the_from_owners_conversations(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    guest = "guest:signing-in"
    bystander = "jwt:carol"
    guests = [await store.create_conversation(guest) for _ in range(2)]
    accounts = [await store.create_conversation(OTHER)]
    carols = [await store.create_conversation(bystander)]
    assert await store.transfer_conversations(guest, OTHER) == 2
    assert await store.list_conversations(guest, 10) == []
    assert await store.list_conversations(OTHER, 10) == sorted(
        guests + accounts, key=lambda c: (-c.updated_at, c.id)
    )
    assert await store.list_conversations(bystander, 10) == carols
    # Their messages go with them, readable by the new owner only.
    moved = await store.add_message(OTHER, guests[0].id, "user", "signed in now", "complete")
    assert moved is not None
    assert await store.transcript(guest, guests[0].id) is None
    assert await store.transfer_conversations(guest, OTHER) == 0


async def test_owners_reach_the_same_conversations_from_every_node(backend: Backend) -> None:
    first, second = backend.make(), backend.make()
    await first.open()
    await second.open()
    mine = await first.create_conversation(OWNER)
    assert await second.exists(OWNER, mine.id)
    assert not await second.exists(OTHER, mine.id)
    assert await second.delete_conversation(OWNER, mine.id)
    assert not await first.exists(OWNER, mine.id)


# Accounts and sessions

# An argon2 encoded hash; the store checks the form, never the hash itself.
HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"


async def test_an_account_is_made_once_per_username_whatever_its_case(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    alice = await store.create_account("Alice", HASH, "Alice Liddell")
    assert alice is not None
    assert uuid.UUID(hex=alice.id).version == 4
    assert len(alice.id) == 32
    assert (alice.username, alice.name, alice.password_hash) == ("Alice", "Alice Liddell", HASH)
    for taken in ("Alice", "alice", "ALICE"):
        assert await store.create_account(taken, HASH, "someone else") is None
    assert await backend.rows("SELECT username FROM accounts") == [("Alice",)]
    for spelled in ("alice", "ALICE", "Alice"):
        assert await store.account_by_username(spelled) == alice
    assert await store.account_by_username("bob") is None
    bob = await store.create_account("bob", HASH, "Bob")
    assert bob is not None
    assert bob.id != alice.id


async def test_accounts_made_at_once_on_two_nodes_share_no_username(backend: Backend) -> None:
    first, second = backend.make(), backend.make()
    await first.open()
    await second.open()
    made = await asyncio.gather(
        *((first if n % 2 else second).create_account("Dora", HASH, f"d{n}") for n in range(6)),
        *((first if n % 2 else second).create_account("DORA", HASH, f"D{n}") for n in range(6)),
    )
    assert len([m for m in made if m is not None]) == 1
    assert len(await backend.rows("SELECT id FROM accounts")) == 1


async def test_a_password_is_never_stored_in_place_of_its_hash(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    with pytest.raises(ValueError, match="argon2"):
        await store.create_account("alice", "hunter2", "Alice")
    assert await backend.rows("SELECT id FROM accounts") == []


async def test_set_account_name_changes_only_the_display_name(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    alice = await store.create_account("alice", HASH, "Alice")
    assert alice is not None
    assert await store.set_account_name(alice.id, "Alice L.")
    assert await store.account_by_username("alice") == Account(
        alice.id, "alice", "Alice L.", HASH, alice.created_at
    )
    assert not await store.set_account_name(uuid.uuid4().hex, "nobody")


async def test_a_session_works_until_it_is_deleted_on_every_node(backend: Backend) -> None:
    first, second = backend.make(), backend.make()
    await first.open()
    await second.open()
    alice = await first.create_account("alice", HASH, "Alice")
    assert alice is not None
    session = await first.create_session(alice.id, 3600)
    assert len(session) == 43  # 32 random bytes, URL-safe base64 without padding
    other = await first.create_session(alice.id, 3600)
    assert other != session
    assert await second.session_account(session) == alice
    # The table keeps a hash: a copy of the database holds no working session id.
    kept = await backend.rows("SELECT id, account_id FROM sessions")
    assert len(kept) == 2
    assert all(session not in row and other not in row for row in kept)
    await second.delete_session(session)
    assert await first.session_account(session) is None
    assert await first.session_account(other) == alice
    await first.delete_session(session)  # twice: nothing to do
    assert await first.session_account("no-such-session") is None


async def test_an_expired_session_stops_working_and_is_cleared_at_the_next_one(
    backend: Backend,
) -> None:
    store = backend.make()
    await store.open()
    alice = await store.create_account("alice", HASH, "Alice")
    bob = await store.create_account("bob", HASH, "Bob")
    assert alice is not None
    assert bob is not None
    short = await store.create_session(alice.id, 0.2)
    bobs_short = await store.create_session(bob.id, 0.2)
    assert await store.session_account(short) == alice

    async def expired() -> bool:
        found = [await store.session_account(s) for s in (short, bobs_short)]
        return found == [None, None]

    await wait_until(expired, 10, "the short sessions to expire")
    assert len(await backend.rows("SELECT id FROM sessions")) == 2
    fresh = await store.create_session(alice.id, 3600)
    # Alice's expired session is gone; Bob's waits for Bob's next sign-in.
    owners = await backend.rows("SELECT account_id FROM sessions ORDER BY account_id")
    assert sorted(owners) == sorted([(alice.id,), (bob.id,)])
    assert await store.session_account(fresh) == alice


async def test_a_session_needs_an_account_and_a_positive_age(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    with pytest.raises(StoreError, match="no account"):
        await store.create_session(uuid.uuid4().hex, 60)
    alice = await store.create_account("alice", HASH, "Alice")
    assert alice is not None
    for age in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="max_age_s"):
            await store.create_session(alice.id, age)
    assert await backend.rows("SELECT id FROM sessions") == []


# Migrations


async def test_reopening_keeps_everything_and_migrates_once(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    conversation = await store.create_conversation(OWNER)
    await store.add_message(OWNER, conversation.id, "user", "keep me", "complete")
    before = await store.transcript(OWNER, conversation.id)
    await store.close()
    for _ in range(2):
        again = backend.make()
        assert await again.open() == 0
        assert await again.transcript(OWNER, conversation.id) == before
        await again.close()
    if backend.kind == "postgresql":
        assert await backend.rows("SELECT version FROM schema_version") == _ALL_VERSIONS


async def test_stores_opening_together_on_a_new_database_all_work(backend: Backend) -> None:
    stores = [backend.make() for _ in range(4)]
    assert await asyncio.gather(*(s.open() for s in stores)) == [0, 0, 0, 0]
    made = await asyncio.gather(*(s.create_conversation(OWNER) for s in stores))
    assert len(await stores[0].list_conversations(OWNER, 10)) == len(made)
    nodes = await backend.rows("SELECT node_id FROM nodes")
    assert sorted(n for (n,) in nodes) == sorted(s.node_id for s in stores)
    if backend.kind == "postgresql":
        assert await backend.rows("SELECT version FROM schema_version") == _ALL_VERSIONS


async def test_a_file_from_before_leases_gains_the_columns_and_is_recovered(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    # The schema as first released: no error, owner or event_id column, no nodes.
    db.executescript(
        """
        CREATE TABLE conversations (id TEXT PRIMARY KEY, title TEXT NOT NULL,
            created_at REAL NOT NULL, updated_at REAL NOT NULL);
        CREATE TABLE messages (id TEXT PRIMARY KEY,
            conversation_id TEXT NOT NULL REFERENCES conversations(id),
            seq INTEGER NOT NULL, role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            content TEXT NOT NULL, status TEXT NOT NULL, finish_reason TEXT, model TEXT,
            created_at REAL NOT NULL, updated_at REAL NOT NULL, UNIQUE (conversation_id, seq));
        INSERT INTO conversations VALUES ('c', 'old', 1.0, 2.0);
        INSERT INTO messages VALUES ('m', 'c', 1, 'assistant', 'cut', 'streaming',
            NULL, 'echo', 2.0, 2.0);
        """
    )
    db.close()
    store = SqliteStore(path)
    try:
        # Two at once: the columns are added once, not twice.
        other = SqliteStore(path)
        recovered = await asyncio.gather(store.open(), other.open())
        await other.close()
        assert sorted(recovered) == [0, 1]
        # Kept, with no owner: no owner string reaches it.
        rows = await _sqlite_rows(path, "SELECT id, title, owner FROM conversations")
        assert rows == [("c", "old", None)]
        assert await _sqlite_rows(path, "SELECT id, status FROM messages") == [("m", "interrupted")]
        assert not await store.exists(OWNER, "c")
    finally:
        await store.close()


# The schema of the release before owners: conversations have no owner column.
_BEFORE_OWNERS = """
CREATE TABLE conversations (id TEXT PRIMARY KEY, title TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE messages (id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    seq INTEGER NOT NULL, role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL, status TEXT NOT NULL, finish_reason TEXT, model TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, error TEXT, owner TEXT,
    event_id TEXT, UNIQUE (conversation_id, seq));
CREATE INDEX conversations_by_update ON conversations (updated_at DESC);
CREATE TABLE nodes (node_id TEXT PRIMARY KEY, seen_at REAL NOT NULL);
CREATE INDEX messages_streaming ON messages (owner) WHERE status = 'streaming';
CREATE UNIQUE INDEX messages_one_streaming_reply ON messages (conversation_id)
    WHERE status = 'streaming';
INSERT INTO conversations VALUES ('old', 'From last year', 1.0, 2.0);
INSERT INTO messages VALUES ('m', 'old', 1, 'user', 'hello', 'complete',
    NULL, NULL, 2.0, 2.0, NULL, NULL, NULL);
"""


async def test_a_file_from_before_owners_keeps_its_conversations_for_nobody(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(_BEFORE_OWNERS)
    db.close()
    stores = [SqliteStore(path) for _ in range(3)]
    try:
        # Several at once: the column is added once, not twice.
        assert await asyncio.gather(*(s.open() for s in stores)) == [0, 0, 0]
        store = stores[0]
        rows = await _sqlite_rows(path, "SELECT id, title, owner FROM conversations")
        assert rows == [("old", "From last year", None)]
        for owner in (OWNER, OTHER, "None", "NULL", "null"):
            assert await store.list_conversations(owner, 10) == []
            assert not await store.exists(owner, "old")
            assert await store.transcript(owner, "old") is None
            assert await store.add_message(owner, "old", "user", "hi", "complete") is None
            assert not await store.delete_conversation(owner, "old")
        indexes = await _sqlite_rows(path, "SELECT name FROM sqlite_master WHERE type = 'index'")
        assert ("conversations_by_owner",) in indexes
        # The new tables are there, and new conversations have owners.
        assert await store.create_account("alice", HASH, "Alice") is not None
        mine = await store.create_conversation(OWNER)
        assert await store.list_conversations(OWNER, 10) == [mine]
        # An operator hands the old conversation to someone.
        await _sqlite_rows(path, f"UPDATE conversations SET owner = '{OWNER}' WHERE id = 'old'")
        found = await store.transcript(OWNER, "old")
        assert found is not None
        assert [m.content for m in found.messages] == ["hello"]
    finally:
        for store in stores:
            await store.close()


async def test_a_postgres_database_from_before_owners_migrates_once_with_nodes_together(
    postgres_url: str,
) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        # The database as the release before owners left it: migrations 1 and 2.
        await conn.execute(
            "CREATE TABLE schema_version ("
            "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for version, sql in enumerate(_MIGRATIONS[:2], start=1):
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
        await conn.execute(
            "INSERT INTO conversations (id, title, created_at, updated_at) "
            "VALUES ('old', 'From last year', 1.0, 2.0)"
        )
    finally:
        await conn.close()
    stores = [PostgresStore(postgres_url) for _ in range(4)]
    try:
        assert await asyncio.gather(*(s.open() for s in stores)) == [0, 0, 0, 0]
        conn = await asyncpg.connect(postgres_url)
        try:
            versions = await conn.fetch("SELECT version FROM schema_version ORDER BY version")
            assert [(v,) for (v,) in versions] == _ALL_VERSIONS
            old = await conn.fetch("SELECT id, owner FROM conversations")
            assert [tuple(r) for r in old] == [("old", None)]
        finally:
            await conn.close()
        for owner in (OWNER, OTHER):
            assert await stores[1].list_conversations(owner, 10) == []
            assert not await stores[2].exists(owner, "old")
        made = await asyncio.gather(*(s.create_conversation(OWNER) for s in stores))
        assert sorted(await stores[0].list_conversations(OWNER, 10), key=lambda c: c.id) == sorted(
            made, key=lambda c: c.id
        )
        assert await stores[3].create_account("alice", HASH, "Alice") is not None
    finally:
        for store in stores:
            await store.close()


async def _sqlite_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Run `sql` on the SQLite file at `path` directly; the rows."""
    return await Backend("sqlite", str(path), []).rows(sql)


# Leases


async def test_a_silent_nodes_reply_is_interrupted_and_a_live_ones_is_left_alone(
    backend: Backend,
) -> None:
    silent = backend.make(**SILENT)
    live = backend.make(**FAST)
    watcher = backend.make(**FAST)
    await silent.open()
    await live.open()
    silent_conversation, _ = await _streaming_reply(silent, "cut short")
    live_conversation, _ = await _streaming_reply(live, "going on")
    # Both leases are fresh now.
    assert await watcher.open() == 0

    async def silent_reply_interrupted() -> bool:
        return (await _transcript_message(watcher, silent_conversation)).status == "interrupted"

    await wait_until(silent_reply_interrupted, 10, "the silent node's reply to be recovered")
    cut = await _transcript_message(watcher, silent_conversation)
    assert (cut.content, cut.error) == ("cut short", None)
    going_on = await _transcript_message(watcher, live_conversation)
    assert (going_on.content, going_on.status) == ("going on", "streaming")


async def test_a_reply_left_by_a_cleanly_closed_store_is_recovered_at_the_next_open(
    backend: Backend,
) -> None:
    store = backend.make()
    await store.open()
    conversation_id, _ = await _streaming_reply(store)
    await store.close()
    # A clean close gives up the lease (and, for SQLite, its lock file).
    assert await backend.rows("SELECT node_id FROM nodes") == []
    if backend.kind == "sqlite":
        assert _lock_files(Path(backend.target)) == []
    again = backend.make()
    assert await again.open() == 1
    assert (await _transcript_message(again, conversation_id)).status == "interrupted"


# A child process that leaves a reply streaming, then dies by SIGKILL.
_CRASH = """
import asyncio, os, signal, sys
from pathlib import Path
from sse.chat.store.sqlite import SqliteStore
from sse.chat.store.postgres import _MIGRATIONS, PostgresStore

async def main() -> None:
    kind, target = sys.argv[1:]
    store = SqliteStore(Path(target)) if kind == "sqlite" else PostgresStore(target)
    await store.open()
    conversation = await store.create_conversation("guest:crashed")
    reply = await store.add_message("guest:crashed", conversation.id, "assistant", "", "streaming")
    await store.save_reply(reply.id, "half a", "streaming", None)
    print(conversation.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


_CRASHED = "guest:crashed"  # the owner of the conversation `_CRASH` makes


async def _crash(kind: str, target: str) -> str:
    """Run `_CRASH`; the id of the conversation whose reply it left streaming."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CRASH,
        kind,
        target,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 30)
    assert child.returncode == -9, err.decode()
    return out.decode().strip()


async def test_sqlite_reply_of_a_killed_process_is_recovered_at_the_next_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crash.sqlite3"
    conversation_id = await _crash("sqlite", str(path))
    # Its lease is seconds old, but the OS released its lock file when it died.
    store = SqliteStore(path)
    try:
        assert await store.open() == 1
        reply = await _transcript_message(store, conversation_id, _CRASHED)
        assert (reply.status, reply.content) == ("interrupted", "half a")
    finally:
        await store.close()
    assert _lock_files(path) == []


async def test_postgres_reply_of_a_killed_node_is_recovered_once_its_lease_is_stale(
    postgres_url: str,
) -> None:
    conversation_id = await _crash("postgresql", postgres_url)
    store = PostgresStore(postgres_url, **FAST)
    try:
        await store.open()

        async def interrupted() -> bool:
            reply = await _transcript_message(store, conversation_id, _CRASHED)
            return reply.status == "interrupted"

        await wait_until(interrupted, 10, "the dead node's reply to be recovered")
        assert (await _transcript_message(store, conversation_id, _CRASHED)).content == "half a"
    finally:
        await store.close()


async def test_an_in_memory_database_leaves_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = SqliteStore(Path(":memory:"))
    try:
        assert await store.open() == 0
        await _streaming_reply(store)
    finally:
        await store.close()
    assert _files(tmp_path) == []


def test_lease_timings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least twice"):
        SqliteStore(tmp_path / "x.sqlite3", lease_interval_s=5, stale_after_s=5)
    with pytest.raises(ValueError, match="positive"):
        PostgresStore("postgresql://db/x", lease_interval_s=0)


# PostgreSQL only


async def test_postgres_keeps_nul_as_the_replacement_character(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    try:
        await store.open()
        conversation = await store.create_conversation(OWNER)
        user = await store.add_message(OWNER, conversation.id, "user", "a\0b", "complete")
        assert user is not None
        assert user.content == "a\ufffdb"
        assert (await _transcript_message(store, conversation.id)).content == "a\ufffdb"
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://chat:s3cret@db:5432/chat", "postgresql://chat:***@db:5432/chat"),
        ("postgres://chat@db/chat", "postgres://chat@db/chat"),
        ("postgresql://db/chat?password=s3cret&sslmode=require",
         "postgresql://db/chat?password=***&sslmode=require"),
        ("postgresql://u:p%40ss@h1:5432,h2:5433/chat", "postgresql://u:***@h1:5432,h2:5433/chat"),
    ],
)  # fmt: skip
def test_the_store_describes_itself_without_the_password(url: str, shown: str) -> None:
    assert PostgresStore(url).describe() == shown


def test_config_picks_the_store() -> None:
    assert isinstance(build_store(Config(db_url="postgresql://db/chat")), PostgresStore)
    sqlite = build_store(Config(db_path=Path("here.sqlite3")))
    assert isinstance(sqlite, SqliteStore)
    assert sqlite.describe() == "here.sqlite3"


# End to end


def _obj(response: Response) -> dict[str, Any]:
    payload = response.json()
    assert isinstance(payload, dict)
    return payload


async def test_server_keeps_conversations_in_postgresql(
    spawn: Callable[..., ServerProcess], postgres_url: str
) -> None:
    password = "pa55-w0rd-not-for-logs"
    with_password = postgres_url.replace(
        "postgresql://postgres@", f"postgresql://postgres:{password}@"
    )
    proc = spawn("--db", with_password, "--echo-delay", "0.001")
    proc.wait_for_log("conversations in postgresql://postgres:***@127.0.0.1:")
    created = await request(proc.address, "POST", "/conversations")
    assert created.status == 201
    cid = _obj(created)["id"]
    body = json.dumps({"content": "hello postgres"}).encode()
    posted = await request(proc.address, "POST", f"/conversations/{cid}/messages", JSON, body)
    assert posted.status == 202

    async def reply_complete() -> bool:
        transcript = _obj(await request(proc.address, "GET", f"/conversations/{cid}"))
        messages = transcript["messages"]
        return len(messages) == 2 and messages[-1]["status"] == "complete"

    await wait_until(reply_complete, 10, "the reply to finish")
    transcript = _obj(await request(proc.address, "GET", f"/conversations/{cid}"))
    conn = await asyncpg.connect(postgres_url)
    try:
        rows = await conn.fetch(
            "SELECT id, role, content, status, created_at FROM messages "
            "WHERE conversation_id = $1 ORDER BY seq",
            cid,
        )
        title = await conn.fetchval("SELECT title FROM conversations WHERE id = $1", cid)
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [
        (m["id"], m["role"], m["content"], m["status"], m["created_at"])
        for m in transcript["messages"]
    ]
    assert [r["content"] for r in rows] == ["hello postgres", "You said: hello postgres"]
    assert title == transcript["title"] == "hello postgres"
    assert proc.terminate() == 0
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetch("SELECT node_id FROM nodes") == []
    finally:
        await conn.close()
    assert password not in proc.log
