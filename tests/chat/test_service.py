"""ChatService without a socket: a real store and the echo model, events caught by a sink."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from sse.chat.models.echo import EchoModel
from sse.chat.service import ChatService, topic_of
from sse.chat.store.sqlite import SqliteStore
from sse.errors import ClientError
from sse.protocol.frame import Frame
from sse.pubsub.broker import MemoryBroker
from sse.pubsub.hub import Hub
from tests.support.client import wait_until

OWNER = "guest:0123456789abcdef0123456789abcdef"


class _Caught:
    """A sink that keeps each event as (name, payload)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def push(self, frame: Frame) -> None:
        for single in frame.singles():
            assert single.event is not None
            self.events.append((single.event.event or "message", json.loads(single.event.data)))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


@pytest.fixture
async def chat(tmp_path: Path) -> AsyncIterator[ChatService]:
    store = SqliteStore(tmp_path / "chat.sqlite3")
    await store.open()
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        return task

    broker = MemoryBroker(Hub(history_size=100, epoch="1"))
    service = ChatService(broker, store, EchoModel(delay_s=0.001), context_messages=10, spawn=spawn)
    _BROKERS[id(service)] = broker
    yield service
    del _BROKERS[id(service)]
    await service.shutdown()
    await asyncio.gather(*tasks, return_exceptions=True)
    await store.close()


_BROKERS: dict[int, MemoryBroker] = {}


def _listen(chat: ChatService, conversation_id: str) -> _Caught:
    """Subscribe a sink to the conversation on the broker the service publishes to."""
    caught = _Caught()
    _BROKERS[id(chat)].attach(topic_of(conversation_id), uuid4(), caught, None)
    return caught


async def test_a_post_streams_user_start_deltas_and_done_and_is_stored(
    chat: ChatService,
) -> None:
    conversation = await chat.create(OWNER)
    caught = _listen(chat, conversation.id)
    user, reply_id = await chat.post(OWNER, conversation.id, "hello there")
    await wait_until(lambda: "done" in caught.names(), what="the reply's done")
    names = caught.names()
    assert names[:2] == ["user", "start"]
    assert names[-1] == "done"
    deltas = [p["text"] for n, p in caught.events if n == "delta"]
    assert "".join(deltas) == "You said: hello there"
    transcript = await chat.store.transcript(OWNER, conversation.id)
    assert transcript is not None
    assert [(m.id, m.role, m.status) for m in transcript.messages] == [
        (user.id, "user", "complete"),
        (reply_id, "assistant", "complete"),
    ]
    assert transcript.messages[1].content == "You said: hello there"


async def test_a_second_post_while_replying_is_refused_with_409(chat: ChatService) -> None:
    conversation = await chat.create(OWNER)
    await chat.post(OWNER, conversation.id, " ".join(["word"] * 500))
    with pytest.raises(ClientError) as refused:
        await chat.post(OWNER, conversation.id, "again")
    assert refused.value.status == 409
    stopped = await chat.stop(OWNER, conversation.id)
    assert stopped is not None


async def test_stop_ends_the_reply_cancelled_and_keeps_what_streamed(chat: ChatService) -> None:
    conversation = await chat.create(OWNER)
    caught = _listen(chat, conversation.id)
    _, reply_id = await chat.post(OWNER, conversation.id, " ".join(["word"] * 500))
    await wait_until(lambda: "delta" in caught.names(), what="a first delta")
    assert await chat.stop(OWNER, conversation.id) == reply_id
    assert caught.names()[-1] == "done"
    assert caught.events[-1][1]["finish_reason"] == "cancelled"
    transcript = await chat.store.transcript(OWNER, conversation.id)
    assert transcript is not None
    reply = transcript.messages[-1]
    assert reply.status == "cancelled"
    assert reply.content.startswith("You said: word")


async def test_a_post_to_an_unknown_conversation_is_404(chat: ChatService) -> None:
    with pytest.raises(ClientError) as refused:
        await chat.post(OWNER, str(uuid4()), "anyone?")
    assert refused.value.status == 404


async def test_someone_elses_conversation_is_404_and_stays_untouched(chat: ChatService) -> None:
    conversation = await chat.create(OWNER)
    stranger = "guest:fedcba9876543210fedcba9876543210"
    with pytest.raises(ClientError) as refused:
        await chat.post(stranger, conversation.id, "mine now")
    assert refused.value.status == 404
    assert await chat.snapshot(stranger, conversation.id) is None
    assert not await chat.delete(stranger, conversation.id)
    assert await chat.rename(stranger, conversation.id, "taken") is None
    transcript = await chat.store.transcript(OWNER, conversation.id)
    assert transcript is not None
    assert transcript.messages == ()
    assert transcript.conversation.title == conversation.title
