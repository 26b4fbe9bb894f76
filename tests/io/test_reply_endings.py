"""Every reply ends, and a conversation has one reply at a time on every node.

The store is made to fail by fault injection into the live store object: its
`save_reply` raises what SQLite raises on a full disk, until the disk is "freed".
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sse.chat.store.postgres import PostgresStore
from sse.chat.store.sqlite import SqliteStore
from sse.errors import ReplyInProgress, StoreUnavailable
from sse.io.server import Server
from sse.protocol.sse import DecodedEvent
from tests.chat.test_store import _CRASHED as CRASHED
from tests.chat.test_store import FAST, _crash
from tests.support.client import (
    EventStream,
    Response,
    events_until,
    json_object,
    request,
    wait_until,
)
from tests.support.redis_server import RedisServer
from tests.support.servers import MakeServer

OWNER = "guest:0123456789abcdef0123456789abcdef"
JSON = [("content-type", "application/json")]


class FullDisk:
    """Makes a live store's `save_reply` fail like a full disk while `full` is set.

    It raises what the stores raise for a database failure, `StoreUnavailable`
    with the database's words (tests/test_health.py checks that translation).
    """

    def __init__(
        self, server: Server, *, only_last: bool = False, cause: str = "database or disk is full"
    ) -> None:
        self.full = True
        fault = StoreUnavailable(cause)
        self.refused = 0
        store = server.chat.store
        real: Callable[..., Awaitable[None]] = store.save_reply

        async def save_reply(*args: Any, **kwargs: Any) -> None:
            status = args[2]
            if self.full and not (only_last and status == "streaming"):
                self.refused += 1
                raise fault
            await real(*args, **kwargs)

        store.save_reply = save_reply  # type: ignore[method-assign]  # fault injection


async def _create(server: Server) -> str:
    response = await request(server.address, "POST", "/conversations")
    assert response.status == 201
    return str(json_object(response)["id"])


async def _post(server: Server, cid: str, content: str) -> Response:
    body = json.dumps({"content": content}).encode()
    return await request(server.address, "POST", f"/conversations/{cid}/messages", JSON, body)


async def _last_message(server: Server, cid: str) -> dict[str, Any]:
    transcript = json_object(await request(server.address, "GET", f"/conversations/{cid}"))
    message: dict[str, Any] = transcript["messages"][-1]
    return message


async def _saved_once_writes_come_back(server: Server, cid: str, disk: FullDisk) -> None:
    assert (await _last_message(server, cid))["status"] == "streaming"
    disk.full = False

    async def not_streaming() -> bool:
        return (await _last_message(server, cid))["status"] != "streaming"

    await wait_until(not_streaming, timeout=10.0, what="the reply saved after all")


def _deltas(events: list[DecodedEvent]) -> int:
    return sum(e.type == "delta" for e in events)


async def test_a_reply_whose_last_save_fails_ends_with_an_error_and_is_saved_later(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    cid = await _create(server)
    stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
    disk = FullDisk(server, only_last=True)
    assert (await _post(server, cid, "hello there")).status == 202
    events = await events_until(stream, "error")
    assert _deltas(events) > 0
    message = json.loads(events[-1].data)["message"]
    assert message == "The reply could not be saved: database or disk is full."
    await _saved_once_writes_come_back(server, cid, disk)
    saved = await _last_message(server, cid)
    assert (saved["status"], saved["error"]) == ("error", message)
    assert saved["content"] == "You said: hello there"
    # The conversation is not stuck: the next message gets a reply.
    assert (await _post(server, cid, "again")).status == 202
    await events_until(stream, "done")
    await stream.close()


async def test_a_reply_whose_save_fails_mid_stream_stops_with_an_error_and_is_saved_later(
    make_server: MakeServer,
) -> None:
    server = await make_server(echo_delay_s=0.005)
    cid = await _create(server)
    stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
    disk = FullDisk(server)
    # Long enough to pass the first periodic save, a second in.
    assert (await _post(server, cid, "word " * 1000)).status == 202
    events = await events_until(stream, "error")
    assert "done" not in [e.type for e in events]
    assert _deltas(events) > 40
    message = json.loads(events[-1].data)["message"]
    assert message == "The reply could not be saved: database or disk is full."
    assert disk.refused >= 2  # the periodic save, then the last one
    await _saved_once_writes_come_back(server, cid, disk)
    saved = await _last_message(server, cid)
    assert saved["status"] == "error"
    assert saved["content"] == "".join(
        json.loads(e.data)["text"] for e in events if e.type == "delta"
    )
    assert (await _post(server, cid, "again")).status == 202
    await events_until(stream, "done")
    await stream.close()


async def test_a_reply_whose_last_save_fails_on_postgres_ends_the_same_way(
    postgres_url: str, make_server: MakeServer
) -> None:
    server = await make_server(db_url=postgres_url)
    cid = await _create(server)
    stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
    disk = FullDisk(server, only_last=True, cause="could not extend file")
    assert (await _post(server, cid, "hello there")).status == 202
    events = await events_until(stream, "error")
    message = json.loads(events[-1].data)["message"]
    assert message == "The reply could not be saved: could not extend file."
    await _saved_once_writes_come_back(server, cid, disk)
    assert (await _last_message(server, cid))["status"] == "error"
    assert (await _post(server, cid, "again")).status == 202
    await events_until(stream, "done")
    await stream.close()


async def test_a_message_to_another_node_while_a_reply_streams_is_409_and_leaves_nothing(
    postgres_url: str, redis_server: RedisServer, make_server: MakeServer
) -> None:
    shared = {"redis_url": redis_server.url, "db_url": postgres_url, "echo_delay_s": 0.02}
    a = await make_server(**shared)
    b = await make_server(**shared)
    cid = await _create(a)
    stream = await EventStream.open(b.address, f"/conversations/{cid}/events")
    assert (await _post(a, cid, "word " * 200)).status == 202
    first = await events_until(stream, "delta")
    refused = await _post(b, cid, "too soon")
    assert refused.status == 409
    assert "still streaming" in json_object(refused)["error"]
    stop = json_object(await request(a.address, "POST", f"/conversations/{cid}/stop"))
    events = [*first, *await events_until(stream, "done")]
    # One reply's deltas only, and the refused message was not kept.
    assert {json.loads(e.data)["message_id"] for e in events if e.type == "delta"} == {
        stop["message_id"]
    }
    transcript = json_object(await request(b.address, "GET", f"/conversations/{cid}"))
    assert [m["role"] for m in transcript["messages"]] == ["user", "assistant"]
    # Once the reply has ended, the other node may start the next one.
    assert (await _post(b, cid, "now")).status == 202
    await events_until(stream, "done")
    await stream.close()


async def test_a_second_streaming_reply_is_refused_by_a_file_made_before_the_guard(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    store = SqliteStore(path)
    await store.open()
    conversation = await store.create_conversation(OWNER)
    await store.close()
    # As an older release could leave it: no guard, two replies streaming at once.
    db = sqlite3.connect(path)
    db.execute("DROP INDEX messages_one_streaming_reply")
    for seq in (1, 2):
        db.execute(
            "INSERT INTO messages (id, conversation_id, seq, role, content, status, "
            "created_at, updated_at) VALUES (?, ?, ?, 'assistant', '', 'streaming', 0, 0)",
            (f"old-{seq}", conversation.id, seq),
        )
    db.commit()
    db.close()
    store = SqliteStore(path)
    await store.open()  # the index can be made: all but the newest were marked first
    try:
        transcript = await store.transcript(OWNER, conversation.id)
        assert transcript is not None
        assert [m.status for m in transcript.messages] == ["interrupted", "interrupted"]
        assert await store.start_reply(OWNER, conversation.id, "hi", "echo") is not None
        with pytest.raises(ReplyInProgress):
            await store.start_reply(OWNER, conversation.id, "too soon", "echo")
        transcript = await store.transcript(OWNER, conversation.id)
        assert transcript is not None
        assert len(transcript.messages) == 4
    finally:
        await store.close()


async def test_a_reply_left_streaming_by_a_killed_node_stops_blocking_once_its_lease_is_stale(
    postgres_url: str,
) -> None:
    conversation_id = await _crash("postgresql", postgres_url)
    store = PostgresStore(postgres_url, **FAST)
    await store.open()
    try:

        async def started() -> bool:
            try:
                return (
                    await store.start_reply(CRASHED, conversation_id, "anyone?", "echo") is not None
                )
            except ReplyInProgress:
                return False

        await wait_until(started, 10, "the dead node's reply to stop blocking")
        transcript = await store.transcript(CRASHED, conversation_id)
        assert transcript is not None
        assert [m.status for m in transcript.messages][-3:] == [
            "interrupted",
            "complete",
            "streaming",
        ]
    finally:
        await store.close()
