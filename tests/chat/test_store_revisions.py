"""Regenerate, edit and conversation settings in both stores, on real databases."""

from __future__ import annotations

from pathlib import Path

import pytest

from sse.chat.store.base import ConversationSettings, Store
from sse.errors import NothingToRevise, ReplyInProgress
from tests.chat.test_store import OTHER, OWNER
from tests.support.stores import Backend


async def _answered(store: Store, *turns: str) -> str:
    """A conversation of OWNER where each of `turns` got a complete reply; its id."""
    conversation = await store.create_conversation(OWNER)
    for turn in turns:
        started = await store.start_reply(OWNER, conversation.id, turn, "echo")
        assert started is not None
        await store.save_reply(started[1].id, f"re: {turn}", "complete", "stop")
    return conversation.id


async def _contents(store: Store, conversation_id: str) -> list[tuple[str, str, str]]:
    found = await store.transcript(OWNER, conversation_id)
    assert found is not None
    return [(m.role, m.content, m.status) for m in found.messages]


async def test_restart_replaces_the_last_reply_with_a_streaming_one(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    cid = await _answered(store, "one", "two")
    before = await store.transcript(OWNER, cid)
    assert before is not None
    revision = await store.restart_reply(OWNER, cid, "gpt-b")
    assert revision is not None
    assert revision.truncated_from == before.messages[-1].id
    assert revision.user == before.messages[2]
    assert (revision.answer.status, revision.answer.model) == ("streaming", "gpt-b")
    assert await _contents(store, cid) == [
        ("user", "one", "complete"),
        ("assistant", "re: one", "complete"),
        ("user", "two", "complete"),
        ("assistant", "", "streaming"),
    ]
    # While it streams, neither a regenerate nor an edit may start.
    with pytest.raises(ReplyInProgress):
        await store.restart_reply(OWNER, cid, "echo")
    with pytest.raises(ReplyInProgress):
        await store.edit_reply(OWNER, cid, revision.user.id, "x", "echo")
    await store.save_reply(revision.answer.id, "again", "complete", "stop")
    assert (await _contents(store, cid))[-1] == ("assistant", "again", "complete")


async def test_edit_replaces_the_message_and_drops_what_followed(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    cid = await _answered(store, "one", "two", "three")
    before = await store.transcript(OWNER, cid)
    assert before is not None
    second = before.messages[2]
    revision = await store.edit_reply(OWNER, cid, second.id, "TWO", "echo")
    assert revision is not None
    assert revision.truncated_from == second.id
    assert (revision.user.id, revision.user.content) == (second.id, "TWO")
    assert await _contents(store, cid) == [
        ("user", "one", "complete"),
        ("assistant", "re: one", "complete"),
        ("user", "TWO", "complete"),
        ("assistant", "", "streaming"),
    ]
    after = await store.transcript(OWNER, cid)
    assert after is not None
    assert after.messages[2].id == second.id
    assert after.messages[3].id == revision.answer.id
    # The title was made of the first message: it follows that one's edit, not others'.
    assert after.conversation.title == "one"
    await store.save_reply(revision.answer.id, "x", "complete", "stop")
    await store.edit_reply(OWNER, cid, before.messages[0].id, "ONE", "echo")
    renamed = await store.transcript(OWNER, cid)
    assert renamed is not None
    assert renamed.conversation.title == "ONE"
    await store.save_reply(renamed.messages[-1].id, "x", "complete", "stop")
    await store.rename_conversation(OWNER, cid, "My title")
    await store.edit_reply(OWNER, cid, before.messages[0].id, "uno", "echo")
    kept = await store.transcript(OWNER, cid)
    assert kept is not None
    assert kept.conversation.title == "My title"


async def test_revisions_refuse_what_cannot_be_answered_again(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    empty = await store.create_conversation(OWNER)
    with pytest.raises(NothingToRevise):
        await store.restart_reply(OWNER, empty.id, "echo")
    cid = await _answered(store, "one")
    found = await store.transcript(OWNER, cid)
    assert found is not None
    reply = found.messages[1]
    # A reply is not a message one edits, and an unknown id edits nothing.
    with pytest.raises(NothingToRevise):
        await store.edit_reply(OWNER, cid, reply.id, "x", "echo")
    with pytest.raises(NothingToRevise):
        await store.edit_reply(OWNER, cid, "00000000-0000-4000-8000-000000000000", "x", "echo")
    # A message of another conversation cannot be edited through this one.
    other = await _answered(store, "elsewhere")
    with pytest.raises(NothingToRevise):
        await store.edit_reply(OWNER, other, found.messages[0].id, "x", "echo")
    assert await _contents(store, cid) == [
        ("user", "one", "complete"),
        ("assistant", "re: one", "complete"),
    ]


async def test_revisions_and_settings_are_the_owners_only(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    cid = await _answered(store, "mine")
    found = await store.transcript(OWNER, cid)
    assert found is not None
    assert await store.restart_reply(OTHER, cid, "echo") is None
    assert await store.edit_reply(OTHER, cid, found.messages[0].id, "theirs", "echo") is None
    assert await store.conversation_settings(OTHER, cid) is None
    assert await store.update_settings(OTHER, cid, model="x", system="y") is None
    assert await _contents(store, cid) == [
        ("user", "mine", "complete"),
        ("assistant", "re: mine", "complete"),
    ]
    assert await store.conversation_settings(OWNER, cid) == ConversationSettings()


async def test_settings_are_kept_and_changed_one_at_a_time(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    conversation = await store.create_conversation(OWNER)
    cid = conversation.id
    assert await store.conversation_settings(OWNER, cid) == ConversationSettings(None, "")
    changed = await store.update_settings(OWNER, cid, model="gpt-b")
    assert changed is not None
    summary, settings = changed
    assert (summary.id, summary.title) == (cid, conversation.title)
    assert summary.updated_at >= conversation.updated_at
    assert settings == ConversationSettings("gpt-b", "")
    changed = await store.update_settings(OWNER, cid, system="Be brief.")
    assert changed is not None
    assert changed[1] == ConversationSettings("gpt-b", "Be brief.")
    changed = await store.update_settings(OWNER, cid, system="")
    assert changed is not None
    assert changed[1] == ConversationSettings("gpt-b", "")
    await store.update_settings(OWNER, cid, system="Answer in French.")
    # Another node on the same database reads them, and so does the transcript.
    other = backend.make()
    await other.open()
    assert await other.conversation_settings(OWNER, cid) == ConversationSettings(
        "gpt-b", "Answer in French."
    )
    found = await other.transcript(OWNER, cid)
    assert found is not None
    assert found.settings == ConversationSettings("gpt-b", "Answer in French.")


async def test_a_sqlite_file_from_before_settings_gains_the_columns(tmp_path: Path) -> None:
    import sqlite3

    from sse.chat.store.sqlite import SqliteStore

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE conversations (id TEXT PRIMARY KEY, title TEXT NOT NULL, "
        "created_at REAL NOT NULL, updated_at REAL NOT NULL, owner TEXT)"
    )
    db.execute("INSERT INTO conversations VALUES ('c1', 'old', 1.0, 1.0, ?)", (OWNER,))
    db.commit()
    db.close()
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.conversation_settings(OWNER, "c1") == ConversationSettings()
        changed = await store.update_settings(OWNER, "c1", model="m")
        assert changed is not None
        assert changed[1] == ConversationSettings("m")
    finally:
        await store.close()
