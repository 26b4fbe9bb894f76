"""The conversation endpoints: JSON in; JSON, an event stream or a WebSocket out."""

from __future__ import annotations

from collections.abc import Mapping

from sse.app.commands import conversation_commands
from sse.app.handshake import check_handshake
from sse.app.inputs import last_event_id, parse_json_object, path_conversation_id, require_text
from sse.app.values import OpenSocket, OpenStream, Reply, Request, Route, json_reply
from sse.chat.service import ChatService, topic_of
from sse.chat.store.base import ConversationSummary, StoredMessage
from sse.config import Config
from sse.errors import BrokerUnavailable, ClientError

__all__ = ["conversation_routes"]

_LIST_LIMIT_MAX = 200
_NO_STORE = (("cache-control", "no-store"),)


def _summary(c: ConversationSummary) -> dict[str, object]:
    return {"id": c.id, "title": c.title, "created_at": c.created_at, "updated_at": c.updated_at}


def _message(m: StoredMessage, labels: Mapping[str, str]) -> dict[str, object]:
    return {
        "id": m.id,
        "role": m.role,
        "content": m.content,
        "status": m.status,
        "finish_reason": m.finish_reason,
        "model": m.model,
        "model_label": labels.get(m.model or ""),
        "error": m.error,
        "created_at": m.created_at,
    }


class _ChatApi:
    def __init__(self, service: ChatService, config: Config) -> None:
        self._service = service
        self._config = config

    async def create(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        summary = await self._service.create()
        location = f"/conversations/{summary.id}"
        return json_reply(201, _summary(summary), (("location", location),))

    async def list(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        raw = req.query.get("limit", "50")
        # The length test first: int() raises on more than 4,300 digits.
        if (
            len(raw) > 6
            or not raw.isascii()
            or not raw.isdigit()
            or not 1 <= int(raw) <= _LIST_LIMIT_MAX
        ):
            raise ClientError(400, f"limit must be a whole number from 1 to {_LIST_LIMIT_MAX}")
        items = await self._service.store.list_conversations(int(raw))
        return json_reply(200, {"conversations": [_summary(c) for c in items]}, _NO_STORE)

    async def transcript(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        conversation_id = path_conversation_id(params)
        try:
            snapshot = await self._service.snapshot(conversation_id)
        except BrokerUnavailable as exc:
            raise ClientError(503, f"the conversation cannot be read now: {exc}") from None
        if snapshot is None:
            raise ClientError(404, f"no conversation {conversation_id}")
        model = self._service.model
        labels = {model.name: model.label}
        # A client that opens the stream with ?last_event_id=<that id> continues
        # these messages exactly, with no hole.
        payload = _summary(snapshot.transcript.conversation)
        payload["replying"] = snapshot.replying
        payload["last_event_id"] = snapshot.last_event_id
        payload["messages"] = [_message(m, labels) for m in snapshot.transcript.messages]
        return json_reply(200, payload, _NO_STORE)

    async def events(self, req: Request, body: bytes, params: Mapping[str, str]) -> OpenStream:
        conversation_id = path_conversation_id(params)
        if not await self._service.store.exists(conversation_id):
            raise ClientError(404, f"no conversation {conversation_id}")
        return OpenStream(topic_of(conversation_id), last_event_id(req))

    async def post(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        conversation_id = path_conversation_id(params)
        content = require_text(parse_json_object(req, body), "content")
        if not content.strip():
            raise ClientError(400, '"content" must not be empty')
        limit = self._config.max_content_chars
        if len(content) > limit:
            raise ClientError(413, f'"content" is longer than the limit of {limit} characters')
        user, reply_id = await self._service.post(conversation_id, content)
        return json_reply(202, {"message_id": user.id, "reply_id": reply_id})

    async def socket(
        self, req: Request, body: bytes, params: Mapping[str, str]
    ) -> Reply | OpenSocket:
        refused = check_handshake(req, self._config.cors_origins)
        if refused is not None:
            return refused
        conversation_id = path_conversation_id(params)
        if not await self._service.store.exists(conversation_id):
            raise ClientError(404, f"no conversation {conversation_id}")
        commands = conversation_commands(
            self._service, conversation_id, max_content_chars=self._config.max_content_chars
        )
        return OpenSocket(topic_of(conversation_id), last_event_id(req), commands)

    async def stop(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        conversation_id = path_conversation_id(params)
        if not await self._service.store.exists(conversation_id):
            raise ClientError(404, f"no conversation {conversation_id}")
        stopped = await self._service.stop(conversation_id)
        return json_reply(200, {"stopped": stopped is not None, "message_id": stopped})


def conversation_routes(service: ChatService, config: Config) -> list[Route]:
    """The conversation routes, for `App`."""
    api = _ChatApi(service, config)
    return [
        Route("/conversations", {"GET": api.list, "POST": api.create}),
        Route("/conversations/{id}", {"GET": api.transcript}),
        Route("/conversations/{id}/events", {"GET": api.events}),
        Route("/conversations/{id}/messages", {"POST": api.post}),
        Route("/conversations/{id}/stop", {"POST": api.stop}),
        Route("/conversations/{id}/ws", {"GET": api.socket}),
    ]
