"""Conversations with an assistant: a user message in, a reply streamed out as events.

Each conversation is a hub topic. Posting a message publishes a `user` event
and starts a reply task that publishes `start`, a `delta` per piece, and
`done` (or `error`). A reply started again (regenerate, edit: see
`sse.chat.revisions`) first publishes `truncate`, naming the first message
the transcript no longer has. The store keeps every message; a reply is saved as it
grows, so a crash or shutdown loses at most the last second of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import uuid4

from sse.chat.endings import EndingSaver
from sse.chat.models import ChatTurn, Finish, Model, Usage
from sse.chat.models.catalog import ModelCatalog
from sse.chat.store.base import (
    ConversationSettings,
    ConversationSummary,
    Revision,
    Store,
    StoredMessage,
    Transcript,
)
from sse.errors import BrokerUnavailable, ClientError, ModelError, ReplyInProgress, StoreUnavailable
from sse.metrics import generation_ended
from sse.pubsub.broker import Broker, settle

__all__ = ["ChatService", "ReplyEnded", "Snapshot", "StartWrite", "topic_of"]

# Told once when a reply is over (or never started): the completion tokens it cost,
# from the upstream's usage report or estimated from its text.
ReplyEnded = Callable[[int], "Awaitable[None] | None"]
# Writes what a reply starts from, for the id of the model that will write it: the
# user's new message, or a revision; None when the conversation is not the owner's.
StartWrite = Callable[[str], Awaitable[Revision | None]]
# When the upstream reports no usage: about four characters a token (English text).
_CHARS_PER_TOKEN = 4

log = logging.getLogger("ssechat.chat")

_STILL_STREAMING = "a reply is still streaming; stop it or wait for it"
# How often a growing reply is written to the store while it streams.
_SAVE_EVERY_S = 1.0
# How long a stop waits for the node that generates the reply to confirm.
_REMOTE_STOP_TIMEOUT_S = 5.0
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
    last_event_id: str = ""  # of the newest event this reply published
    tokens: int | None = None  # as the upstream reported them
    ended: ReplyEnded | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A transcript, and the event id after which a stream continues it exactly."""

    transcript: Transcript
    replying: bool
    last_event_id: str


class ChatService:
    """Creates conversations, accepts messages, runs and stops replies."""

    def __init__(
        self,
        broker: Broker,
        store: Store,
        model: Model | ModelCatalog,
        *,
        context_messages: int,
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        end_streams: Callable[[str, str, str], None] = lambda topic, event, data: None,
    ) -> None:
        self._broker = broker
        self._store = store
        self._models = model if isinstance(model, ModelCatalog) else ModelCatalog([model])
        self._context_messages = context_messages
        self._spawn = spawn
        # Ends this node's open streams of a topic with a last named event.
        self._end_streams = end_streams
        self._replies: dict[str, _Reply] = {}
        self._shutting_down = False
        # Stops asked of other nodes, by request id, waiting for their answer.
        self._remote_stops: dict[str, asyncio.Future[str | None]] = {}
        # Saves replies' endings, and retries those the store refused.
        self._endings = EndingSaver(store, spawn)
        broker.on_control(self._control)

    @property
    def model(self) -> Model:
        """The default model: it writes the replies of conversations that picked none."""
        return self._models.default

    @property
    def models(self) -> ModelCatalog:
        """The models a conversation may pick from."""
        return self._models

    def replying(self, conversation_id: str) -> bool:
        """Whether a reply of this conversation is being generated on this node."""
        return conversation_id in self._replies

    @property
    def store(self) -> Store:
        """Where conversations are kept."""
        return self._store

    async def snapshot(self, owner: str, conversation_id: str) -> Snapshot | None:
        """The transcript, with a reply that streams here shown as far as it got.

        `last_event_id` is exact: a stream opened after it continues the
        transcript with no hole. Without a reply streaming here, the id is read
        before the store, so what happens meanwhile is in the stream (perhaps
        also in the transcript; the page removes such doubles by message id).
        A reply streaming on another node is shown as last saved, with the id
        of the last event that saved text holds.

        Raises:
            BrokerUnavailable: the broker cannot say where the stream is.
        """
        topic = topic_of(conversation_id)
        broker = self._broker
        local = not broker.shared
        before = "" if local else await settle(broker.last_id(topic))
        found = await self._store.transcript(owner, conversation_id)
        if found is None:
            return None
        # From here to the return no await: the live text and the id below
        # belong to the same instant.
        reply = self._replies.get(conversation_id)
        if reply is not None and reply.message_id and (local or reply.last_event_id):
            text = "".join(reply.parts)
            messages = tuple(
                replace(m, content=text) if m.id == reply.message_id else m for m in found.messages
            )
            last = broker.last_id(topic) if local else reply.last_event_id
            return Snapshot(replace(found, messages=messages), True, str(last))
        if local:
            return Snapshot(found, False, str(broker.last_id(topic)))
        streaming = [m for m in found.messages if m.status == "streaming" and m.event_id]
        if streaming:
            return Snapshot(found, True, str(streaming[-1].event_id))
        return Snapshot(found, False, before)

    async def create(self, owner: str) -> ConversationSummary:
        """A new conversation of `owner`."""
        return await self._store.create_conversation(owner)

    async def rename(
        self, owner: str, conversation_id: str, title: str
    ) -> ConversationSummary | None:
        """Retitle `owner`'s conversation; None if `owner` has no such conversation."""
        return await self._store.rename_conversation(owner, conversation_id, title)

    async def delete(self, owner: str, conversation_id: str) -> bool:
        """Delete `owner`'s conversation: its reply stops, its streams end, on every node.

        Returns False when `owner` has no such conversation (nothing happens).
        """
        if not await self._store.exists(owner, conversation_id):
            return False
        await self.stop(owner, conversation_id)
        if not await self._store.delete_conversation(owner, conversation_id):
            return False
        self._ended(conversation_id)
        if self._broker.shared:
            try:
                await settle(
                    self._broker.send_control({"op": "deleted", "conversation": conversation_id})
                )
            except BrokerUnavailable as exc:
                # Deleted all the same; streams elsewhere end at their next reconnect (404).
                log.warning("other nodes were not told of a deletion: %s", exc)
        return True

    def _ended(self, conversation_id: str) -> None:
        payload = json.dumps({"conversation_id": conversation_id})
        self._end_streams(topic_of(conversation_id), "deleted", payload)

    def generating(self) -> int:
        """How many replies this node is generating now."""
        return len(self._replies)

    async def announce_error(self, conversation_id: str, message: str) -> None:
        """Tell the conversation's streams why no reply comes (a budget): an `error` event.

        Nothing is stored: the transcript holds messages, not refusals.
        """
        payload = json.dumps({"message_id": None, "message": message}, ensure_ascii=False)
        try:
            await settle(self._broker.publish(topic_of(conversation_id), payload, event="error"))
        except BrokerUnavailable as exc:
            log.warning("a refusal was not announced: %s", exc)

    async def configure(
        self,
        owner: str,
        conversation_id: str,
        *,
        model: str | None = None,
        system: str | None = None,
    ) -> tuple[ConversationSummary, ConversationSettings] | None:
        """Set what is given of the conversation's model and system prompt; what it is now.

        Every stream of the conversation is told: a `settings` event, so other
        tabs show the same. None, changing nothing, if not `owner`'s.
        """
        changed = await self._store.update_settings(
            owner, conversation_id, model=model, system=system
        )
        if changed is None or (model is None and system is None):
            return changed
        settings = changed[1]
        shown = {"model": self._models.get(settings.model).name, "system": settings.system}
        payload = json.dumps(shown, ensure_ascii=False)
        try:
            await settle(self._broker.publish(topic_of(conversation_id), payload, event="settings"))
        except BrokerUnavailable as exc:
            # Saved all the same: other tabs show it at their next transcript fetch.
            log.warning("a change of settings was not announced: %s", exc)
        return changed

    async def post(
        self,
        owner: str,
        conversation_id: str,
        content: str,
        ended: ReplyEnded | None = None,
    ) -> tuple[StoredMessage, str]:
        """Append the user's message, announce it, and start the reply.

        Returns the stored user message and the id the reply will have. `ended`
        is called once, when the reply is over or if none was started.

        Raises:
            ClientError: 404 for an unknown conversation, 409 while a reply streams,
                503 while the server shuts down.
        """

        async def write(model: str) -> Revision | None:
            started = await self._store.start_reply(owner, conversation_id, content, model)
            return None if started is None else Revision(started[0], started[1], None)

        return await self.begin(owner, conversation_id, write, ended)

    async def begin(
        self,
        owner: str,
        conversation_id: str,
        write: StartWrite,
        ended: ReplyEnded | None = None,
    ) -> tuple[StoredMessage, str]:
        """Write what a reply starts from (`write`), announce it, and start the reply.

        The reply is written by the conversation's model, told its system prompt.
        Announced: `truncate` when the revision removed messages, then `user`
        unless the user message is one the transcript kept as it was (a
        regenerate). Returns the user message and the id the reply will have.

        Raises:
            ClientError: 404 for an unknown conversation, 409 while a reply streams,
                503 while the server shuts down; or what `write` raises.
        """
        if self._shutting_down:
            raise ClientError(503, "the server is shutting down")
        if conversation_id in self._replies:
            raise ClientError(409, _STILL_STREAMING)
        # Claim the slot before the first await, so a second message racing this
        # one sees it and gets 409 instead of starting a second reply. Other nodes
        # are kept out by the database (see `ReplyInProgress`).
        reply = self._replies[conversation_id] = _Reply(message_id="", ended=ended)
        try:
            settings = await self._store.conversation_settings(owner, conversation_id)
            if settings is None:
                raise ClientError(404, f"no conversation {conversation_id}")
            model = self._models.get(settings.model)
            revision = await write(model.name)
            if revision is None:
                raise ClientError(404, f"no conversation {conversation_id}")
            transcript = await self._store.transcript(owner, conversation_id)
            assert transcript is not None, "the conversation was just written to"
        except ReplyInProgress:
            self._replies.pop(conversation_id, None)
            await self._tell_ended(reply, 0)
            raise ClientError(409, _STILL_STREAMING) from None
        except BaseException:
            self._replies.pop(conversation_id, None)
            await self._tell_ended(reply, 0)
            raise
        user, answer = revision.user, revision.answer
        reply.message_id = answer.id
        history = self._history(transcript)
        topic = topic_of(conversation_id)
        try:
            if revision.truncated_from is not None:
                payload = {"message_id": revision.truncated_from}
                await self._publish(reply, topic, "truncate", dict(payload))
            # An edited message was truncated too, and comes back with its new content.
            if revision.truncated_from in (None, user.id):
                await self._publish(
                    reply,
                    topic,
                    "user",
                    {
                        "message_id": user.id,
                        "role": "user",
                        "content": user.content,
                        "created_at": user.created_at,
                    },
                )
        except BrokerUnavailable as exc:
            # Kept, but nobody was told and no reply starts: say so, and don't pretend.
            self._replies.pop(conversation_id, None)
            await self._tell_ended(reply, 0)
            why = f"No reply was started: {exc}."
            await self._endings.save(answer.id, "", "error", None, why, None)
            raise ClientError(503, f"the message was saved but not announced: {exc}") from None
        reply.task = self._spawn(self._run(conversation_id, reply, history, model))
        return user, answer.id

    def _history(self, transcript: Transcript) -> list[ChatTurn]:
        """What the model is sent: the system prompt, then the latest turns."""
        turns = [
            ChatTurn("user" if m.role == "user" else "assistant", m.content)
            for m in transcript.messages
            if m.role == "user" or (m.status in _CONTEXT_STATUSES and m.content)
        ][-self._context_messages :]
        system = transcript.settings.system
        return [ChatTurn("system", system), *turns] if system.strip() else turns

    async def stop(self, owner: str, conversation_id: str) -> str | None:
        """Cancel the reply in progress and wait until it is saved; its id, or None.

        A reply generated by another node is stopped there, through the broker.
        The caller has checked that `owner` has this conversation.
        """
        reply = self._replies.get(conversation_id)
        if reply is None or reply.task is None:
            if not self._broker.shared:
                return None
            return await self._stop_elsewhere(owner, conversation_id)
        return await self._stop_here(reply)

    async def _stop_here(self, reply: _Reply) -> str | None:
        assert reply.task is not None
        reply.task.cancel()
        # Shielded: a client that hangs up must not leave the reply half-stopped.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(reply.task)
        return reply.message_id

    async def shutdown(self) -> None:
        """Cut every reply short, saving each as far as it got."""
        self._shutting_down = True
        tasks = [r.task for r in self._replies.values() if r.task is not None]
        # A save still refused now is left to the next start's recovery.
        tasks += self._endings.cancel_retries()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _stop_elsewhere(self, owner: str, conversation_id: str) -> str | None:
        found = await self._store.transcript(owner, conversation_id)
        if found is None or not any(m.status == "streaming" for m in found.messages):
            return None
        request = uuid4().hex
        answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._remote_stops[request] = answer
        try:
            await settle(
                self._broker.send_control(
                    {"op": "stop", "conversation": conversation_id, "request": request}
                )
            )
            return await asyncio.wait_for(answer, _REMOTE_STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning(
                "no node stopped the reply of %s within %.0fs",
                conversation_id,
                _REMOTE_STOP_TIMEOUT_S,
            )
            return None
        finally:
            self._remote_stops.pop(request, None)

    def _control(self, fields: Mapping[str, str]) -> None:
        # Every node sees every control message: the one running the reply
        # stops it and answers; the one that asked wakes on the answer.
        op = fields.get("op")
        if op == "stop":
            reply = self._replies.get(fields.get("conversation", ""))
            if reply is not None and reply.task is not None:
                self._spawn(self._stop_for(fields.get("request", ""), fields["conversation"]))
        elif op == "deleted":
            conversation_id = fields.get("conversation", "")
            reply = self._replies.get(conversation_id)
            if reply is not None and reply.task is not None:
                reply.task.cancel()
            self._ended(conversation_id)
        elif op == "stopped":
            answer = self._remote_stops.get(fields.get("request", ""))
            if answer is not None and not answer.done():
                answer.set_result(fields.get("message_id") or None)

    async def _stop_for(self, request: str, conversation_id: str) -> None:
        reply = self._replies.get(conversation_id)
        message_id = None if reply is None or reply.task is None else await self._stop_here(reply)
        log.info("reply of %s stopped at another node's request", conversation_id)
        try:
            await settle(
                self._broker.send_control(
                    {"op": "stopped", "request": request, "message_id": message_id or ""}
                )
            )
        except BrokerUnavailable as exc:
            log.warning("could not confirm the stop of %s: %s", conversation_id, exc)

    async def _publish(
        self,
        reply: _Reply,
        topic: str,
        event: str,
        payload: dict[str, object],
        piece: str | None = None,
    ) -> None:
        """Publish; then, in one step, note its id and the `piece` of text it carried.

        Text and id move together, so a snapshot taken between them never holds
        a piece whose event a client resuming after the id would get again.
        """
        published = self._broker.publish(
            topic, json.dumps(payload, ensure_ascii=False), event=event
        )
        if isinstance(published, str):
            event_id = published
        else:
            sending = asyncio.ensure_future(published)
            try:
                event_id = await asyncio.shield(sending)
            except asyncio.CancelledError:
                # Stopped while the broker took the event: it may be out, so the
                # saved text must hold its piece too.
                with contextlib.suppress(Exception):
                    self._record(reply, await sending, piece)
                raise
        self._record(reply, event_id, piece)

    @staticmethod
    def _record(reply: _Reply, event_id: str, piece: str | None) -> None:
        reply.last_event_id = event_id
        if piece is not None:
            reply.parts.append(piece)

    async def _run(
        self, conversation_id: str, reply: _Reply, history: list[ChatTurn], model: Model
    ) -> None:
        topic = topic_of(conversation_id)
        label = self._models.label(model.name) or model.label
        started = time.monotonic()
        first_at: float | None = None
        saved_at = started
        finish = "stop"
        status = "complete"
        error: str | None = None
        try:
            await self._publish(
                reply,
                topic,
                "start",
                {"message_id": reply.message_id, "model": model.name, "model_label": label},
            )
            if self._broker.shared:
                # Another node showing this conversation continues from here.
                await self._save_so_far(reply)
            # aclosing: whatever ends the loop, the model's upstream request is closed.
            async with contextlib.aclosing(model.reply(history)) as pieces:
                async for piece in pieces:
                    if isinstance(piece, Finish):
                        finish = piece.reason
                        continue
                    if isinstance(piece, Usage):
                        reply.tokens = piece.completion_tokens
                        continue
                    if not piece:
                        continue
                    now = time.monotonic()
                    if first_at is None:
                        first_at = now
                    await self._publish(
                        reply,
                        topic,
                        "delta",
                        {"message_id": reply.message_id, "text": piece},
                        piece,
                    )
                    if now - saved_at >= _SAVE_EVERY_S:
                        saved_at = now
                        await self._save_so_far(reply)
        except asyncio.CancelledError:
            if self._shutting_down:
                status, finish = "interrupted", "interrupted"
                error = "The server is shutting down; the reply was saved as far as it got."
            else:
                status, finish = "cancelled", "cancelled"
        except ModelError as exc:
            status, finish = "error", "error"
            error = str(exc)
        except BrokerUnavailable as exc:
            log.warning("reply %s cut short: %s", reply.message_id, exc)
            status, finish = "error", "error"
            error = f"The reply could not be delivered: {exc}."
        except StoreUnavailable as exc:
            log.warning("reply %s cut short: %s", reply.message_id, exc)
            status, finish = "error", "error"
            error = f"The reply could not be saved: {exc}."
        except Exception as exc:
            # A bug in a model is ours; log it with its traceback, keep the server up.
            log.exception("model %s failed", model.name)
            status, finish = "error", "error"
            error = f"The model failed unexpectedly ({type(exc).__name__})."
        text = "".join(reply.parts)
        try:
            refused = await self._endings.save(
                reply.message_id,
                text,
                status,
                finish if status != "error" else None,
                error,
                reply.last_event_id or None,
            )
        finally:
            self._replies.pop(conversation_id, None)
            spent = reply.tokens
            if spent is None:
                spent = -(-len(text) // _CHARS_PER_TOKEN)
            took_first = None if first_at is None else first_at - started
            ended_s = time.monotonic() - started
            reported = reply.tokens is not None
            generation_ended(model.name, status, took_first, ended_s, spent, reported)
            await self._tell_ended(reply, spent)
        if refused is not None:
            # Listeners are told what the transcript will say once the store is back.
            error = refused
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        if error is not None:
            log.info("reply %s ended with an error: %s", reply.message_id, error)
            payload: dict[str, object] = {"message_id": reply.message_id, "message": error}
            await self._publish_last(reply, topic, "error", payload)
            return
        payload = {
            "message_id": reply.message_id,
            "finish_reason": finish,
            "pieces": len(reply.parts),
            "ttft_ms": None if first_at is None else round((first_at - started) * 1000, 1),
            "duration_ms": duration_ms,
        }
        await self._publish_last(reply, topic, "done", payload)

    async def _tell_ended(self, reply: _Reply, tokens: int) -> None:
        ended, reply.ended = reply.ended, None
        if ended is None:
            return
        try:
            await settle(ended(tokens))
        except Exception:
            log.exception("counting the end of reply %s failed", reply.message_id or "(none)")

    async def _save_so_far(self, reply: _Reply) -> None:
        """Save a streaming reply's text so far.

        Raises:
            StoreUnavailable: the store refused it.
        """
        await self._store.save_reply(
            reply.message_id,
            "".join(reply.parts),
            "streaming",
            None,
            event_id=reply.last_event_id,
        )

    async def _publish_last(
        self, reply: _Reply, topic: str, event: str, payload: dict[str, object]
    ) -> None:
        # The reply is saved already; a broker that went away only costs the
        # live ending, which the transcript shows.
        try:
            await self._publish(reply, topic, event, payload)
        except BrokerUnavailable as exc:
            log.warning(
                "the %s event of reply %s was not published: %s", event, reply.message_id, exc
            )
