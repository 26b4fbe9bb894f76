"""Conversations with an assistant: a user message in, a reply streamed out as events.

Each conversation is a hub topic. Posting a message publishes a `user` event
and starts a reply task that publishes `start`, a `delta` per piece, and
`done` (or `error`). The store keeps every message; a reply is saved as it
grows, so a crash or shutdown loses at most the last second of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from sse.errors import ClientError
from sse.hub import Hub
from sse.models import ChatTurn, Finish, Model, ModelError
from sse.store import ConversationSummary, SqliteStore, StoredMessage

__all__ = ["ChatService", "topic_of"]

log = logging.getLogger("ssechat.chat")

# How often a growing reply is written to the store while it streams.
_SAVE_EVERY_S = 1.0
# Statuses of replies whose text the model should see again as context.
_CONTEXT_STATUSES = frozenset({"complete", "cancelled", "interrupted"})


def topic_of(conversation_id: str) -> str:
    """The hub topic carrying a conversation's events."""
    return f"conversation:{conversation_id}"


@dataclass(slots=True)
class _Reply:
    message_id: str
    task: asyncio.Task[None] | None = None
    parts: list[str] = field(default_factory=list)


class ChatService:
    """Creates conversations, accepts messages, runs and stops replies."""

    def __init__(
        self,
        hub: Hub,
        store: SqliteStore,
        model: Model,
        *,
        context_messages: int,
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
    ) -> None:
        self._hub = hub
        self._store = store
        self._model = model
        self._context_messages = context_messages
        self._spawn = spawn
        self._replies: dict[str, _Reply] = {}
        self._shutting_down = False

    @property
    def model(self) -> Model:
        """The model that writes the replies."""
        return self._model

    @property
    def store(self) -> SqliteStore:
        """Where conversations are kept."""
        return self._store

    def live(self, conversation_id: str) -> tuple[str, str] | None:
        """The streaming reply's id and its text so far, if one streams now.

        Read together with the topic's last event id in the same step of the
        loop, this is exact: the text holds every delta up to that id.
        """
        reply = self._replies.get(conversation_id)
        if reply is None or not reply.message_id:
            return None
        return reply.message_id, "".join(reply.parts)

    def last_event_id(self, conversation_id: str) -> str:
        """The id of the conversation's newest event, for a client to resume after."""
        return self._hub.last_id(topic_of(conversation_id))

    async def create(self) -> ConversationSummary:
        """A new conversation."""
        return await self._store.create_conversation()

    async def post(self, conversation_id: str, content: str) -> tuple[StoredMessage, str]:
        """Append the user's message, announce it, and start the reply.

        Returns the stored user message and the id the reply will have.

        Raises:
            ClientError: 404 for an unknown conversation, 409 while a reply streams,
                503 while the server shuts down.
        """
        if self._shutting_down:
            raise ClientError(503, "the server is shutting down")
        if conversation_id in self._replies:
            raise ClientError(409, "a reply is still streaming; stop it or wait for it")
        # Claim the slot before the first await, so a second message racing this
        # one sees it and gets 409 instead of starting a second reply.
        reply = self._replies[conversation_id] = _Reply(message_id="")
        try:
            user = await self._store.add_message(conversation_id, "user", content, "complete")
            if user is None:
                raise ClientError(404, f"no conversation {conversation_id}")
            transcript = await self._store.transcript(conversation_id)
            assert transcript is not None, "the conversation was just written to"
            answer = await self._store.add_message(
                conversation_id, "assistant", "", "streaming", model=self._model.name
            )
            assert answer is not None
        except BaseException:
            self._replies.pop(conversation_id, None)
            raise
        reply.message_id = answer.id
        history = [
            ChatTurn("user" if m.role == "user" else "assistant", m.content)
            for m in transcript.messages
            if m.role == "user" or (m.status in _CONTEXT_STATUSES and m.content)
        ][-self._context_messages :]
        topic = topic_of(conversation_id)
        self._publish(
            topic,
            "user",
            {
                "message_id": user.id,
                "role": "user",
                "content": content,
                "created_at": user.created_at,
            },
        )
        reply.task = self._spawn(self._run(conversation_id, reply, history))
        return user, answer.id

    async def stop(self, conversation_id: str) -> str | None:
        """Cancel the reply in progress and wait until it is saved; its id, or None."""
        reply = self._replies.get(conversation_id)
        if reply is None or reply.task is None:
            return None
        reply.task.cancel()
        # Shielded: a client that hangs up must not leave the reply half-stopped.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(reply.task)
        return reply.message_id

    async def shutdown(self) -> None:
        """Cut every reply short, saving each as far as it got."""
        self._shutting_down = True
        tasks = [r.task for r in self._replies.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _publish(self, topic: str, event: str, payload: dict[str, object]) -> None:
        self._hub.publish(topic, json.dumps(payload, ensure_ascii=False), event=event)

    async def _run(self, conversation_id: str, reply: _Reply, history: list[ChatTurn]) -> None:
        topic = topic_of(conversation_id)
        model = self._model
        started = time.monotonic()
        first_at: float | None = None
        saved_at = started
        finish = "stop"
        status = "complete"
        error: str | None = None
        self._publish(
            topic,
            "start",
            {"message_id": reply.message_id, "model": model.name, "model_label": model.label},
        )
        try:
            # aclosing: whatever ends the loop, the model's upstream request is closed.
            async with contextlib.aclosing(model.reply(history)) as pieces:
                async for piece in pieces:
                    if isinstance(piece, Finish):
                        finish = piece.reason
                        continue
                    if not piece:
                        continue
                    now = time.monotonic()
                    if first_at is None:
                        first_at = now
                    reply.parts.append(piece)
                    self._publish(topic, "delta", {"message_id": reply.message_id, "text": piece})
                    if now - saved_at >= _SAVE_EVERY_S:
                        saved_at = now
                        await self._store.save_reply(
                            reply.message_id, "".join(reply.parts), "streaming", None
                        )
        except asyncio.CancelledError:
            if self._shutting_down:
                status, finish = "interrupted", "interrupted"
                error = "The server is shutting down; the reply was saved as far as it got."
            else:
                status, finish = "cancelled", "cancelled"
        except ModelError as exc:
            status, finish = "error", "error"
            error = str(exc)
        except Exception as exc:
            # A bug in a model is ours; log it with its traceback, keep the server up.
            log.exception("model %s failed", model.name)
            status, finish = "error", "error"
            error = f"The model failed unexpectedly ({type(exc).__name__})."
        text = "".join(reply.parts)
        try:
            await asyncio.shield(
                self._store.save_reply(
                    reply.message_id, text, status, finish if status != "error" else None, error
                )
            )
        finally:
            self._replies.pop(conversation_id, None)
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        if error is not None:
            self._publish(topic, "error", {"message_id": reply.message_id, "message": error})
            log.info("reply %s ended with an error: %s", reply.message_id, error)
            return
        self._publish(
            topic,
            "done",
            {
                "message_id": reply.message_id,
                "finish_reason": finish,
                "pieces": len(reply.parts),
                "ttft_ms": None if first_at is None else round((first_at - started) * 1000, 1),
                "duration_ms": duration_ms,
            },
        )
