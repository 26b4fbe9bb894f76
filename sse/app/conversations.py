"""The conversation endpoints: JSON in; JSON, an event stream or a WebSocket out."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping

from sse.app.commands import conversation_commands
from sse.app.export import FORMATS, content_disposition, export_json, export_markdown, media_type
from sse.app.handshake import check_handshake
from sse.app.inputs import last_event_id, parse_json_object, path_conversation_id, require_text
from sse.app.origins import CookieOrigins
from sse.app.replies import ReplyAdmission
from sse.app.values import NOSNIFF, OpenSocket, OpenStream, Reply, Request, Route, json_reply
from sse.chat.service import ChatService, topic_of
from sse.chat.store.base import ConversationSettings, ConversationSummary, StoredMessage
from sse.config import Config
from sse.errors import BrokerUnavailable, ClientError
from sse.limits.policy import Limits

__all__ = ["conversation_routes"]

_LIST_LIMIT_MAX = 200
_TITLE_MAX_CHARS = 200
# A system prompt is instructions, not a document: long enough for a page of them.
_SYSTEM_MAX_CHARS = 4000
_PATCHABLE = frozenset({"title", "model", "system"})
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


def _missing(conversation_id: str) -> ClientError:
    # Someone else's conversation is answered exactly as one that does not exist:
    # its id must not be confirmed to anyone but its owner.
    return ClientError(404, f"no conversation {conversation_id}")


class _ChatApi:
    """Every handler acts for `req.who`, and the store sees only that owner's conversations."""

    def __init__(
        self,
        service: ChatService,
        config: Config,
        origins: CookieOrigins,
        limits: Limits | None,
    ) -> None:
        self._service = service
        self._config = config
        self._origins = origins
        self._limits = limits if limits is not None and limits.enabled else None
        self._replies = ReplyAdmission(service, config, self._limits)

    async def _check_owner(self, req: Request, params: Mapping[str, str]) -> str:
        conversation_id = path_conversation_id(params)
        if not await self._service.store.exists(req.who.owner, conversation_id):
            raise _missing(conversation_id)
        return conversation_id

    async def create(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        limits = self._limits
        if limits is not None:
            await limits.enforce(limits.conversations, req.who, req.client_ip)
        summary = await self._service.create(req.who.owner)
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
        items = await self._service.store.list_conversations(req.who.owner, int(raw))
        return json_reply(200, {"conversations": [_summary(c) for c in items]}, _NO_STORE)

    def _settings(self, settings: ConversationSettings) -> dict[str, object]:
        # The model replies will use: the default for none picked or one no longer offered.
        model = self._service.models.get(settings.model).name
        return {"model": model, "system": settings.system}

    def _content(self, req: Request, body: bytes) -> str:
        content = require_text(parse_json_object(req, body), "content")
        if not content.strip():
            raise ClientError(400, '"content" must not be empty')
        limit = self._config.max_content_chars
        if len(content) > limit:
            raise ClientError(413, f'"content" is longer than the limit of {limit} characters')
        return content

    async def models(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        catalog = self._service.models
        listing = await catalog.listing()
        return json_reply(200, {"models": listing, "default": catalog.default.name}, _NO_STORE)

    async def transcript(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        conversation_id = path_conversation_id(params)
        try:
            snapshot = await self._service.snapshot(req.who.owner, conversation_id)
        except BrokerUnavailable as exc:
            raise ClientError(503, f"the conversation cannot be read now: {exc}") from None
        if snapshot is None:
            raise _missing(conversation_id)
        labels = self._service.models.labels()
        # A client that opens the stream with ?last_event_id=<that id> continues
        # these messages exactly, with no hole.
        payload = _summary(snapshot.transcript.conversation)
        payload["replying"] = snapshot.replying
        payload["last_event_id"] = snapshot.last_event_id
        payload.update(self._settings(snapshot.transcript.settings))
        payload["messages"] = [_message(m, labels) for m in snapshot.transcript.messages]
        return json_reply(200, payload, _NO_STORE)

    async def export(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        conversation_id = path_conversation_id(params)
        fmt = req.query.get("format", "json")
        if fmt not in FORMATS:
            raise ClientError(400, f"format must be one of: {', '.join(sorted(FORMATS))}")
        # As saved: a reply still streaming is exported with the text stored so far.
        transcript = await self._service.store.transcript(req.who.owner, conversation_id)
        if transcript is None:
            raise _missing(conversation_id)
        if fmt == "md":
            data = export_markdown(transcript, self._service.models.labels())
        else:
            data = export_json(transcript)
        disposition = content_disposition(transcript.conversation.title, fmt)
        headers = (NOSNIFF, ("content-disposition", disposition), *_NO_STORE)
        return Reply(200, data, media_type(fmt), headers)

    async def patch(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        """Change the title, the model and the system prompt: any of them, at least one."""
        conversation_id = path_conversation_id(params)
        fields = parse_json_object(req, body)
        unknown = sorted(set(fields) - _PATCHABLE)
        if unknown:
            named = ", ".join(json.dumps(key) for key in unknown)
            raise ClientError(400, f"cannot change {named} of a conversation")
        if not fields:
            raise ClientError(400, 'give any of "title", "model" and "system"')
        title = None
        if "title" in fields:
            title = " ".join(require_text(fields, "title").split())
            if not title:
                raise ClientError(400, '"title" must not be empty')
            if len(title) > _TITLE_MAX_CHARS:
                raise ClientError(413, f'"title" is longer than {_TITLE_MAX_CHARS} characters')
        model = require_text(fields, "model") if "model" in fields else None
        catalog = self._service.models
        if model is not None and not catalog.offers(model):
            raise ClientError(400, f'"model" must be one of: {", ".join(catalog.ids)}')
        system = require_text(fields, "system").strip() if "system" in fields else None
        if system is not None and len(system) > _SYSTEM_MAX_CHARS:
            raise ClientError(413, f'"system" is longer than {_SYSTEM_MAX_CHARS} characters')
        owner, service = req.who.owner, self._service
        if title and await service.rename(owner, conversation_id, title) is None:
            raise _missing(conversation_id)
        # Also what a title-only PATCH answers with: one query reads it all.
        changed = await service.configure(owner, conversation_id, model=model, system=system)
        if changed is None:
            raise _missing(conversation_id)
        summary, settings = changed
        return json_reply(200, {**_summary(summary), **self._settings(settings)}, _NO_STORE)

    async def delete(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        conversation_id = path_conversation_id(params)
        if not await self._service.delete(req.who.owner, conversation_id):
            raise _missing(conversation_id)
        return Reply(204)

    async def events(self, req: Request, body: bytes, params: Mapping[str, str]) -> OpenStream:
        conversation_id = await self._check_owner(req, params)
        return OpenStream(
            topic_of(conversation_id), last_event_id(req), expires_at=req.who.expires_at
        )

    async def post(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        conversation_id = path_conversation_id(params)
        content = self._content(req, body)
        user, reply_id = await self._replies.post(req.who, req.client_ip, conversation_id, content)
        return json_reply(202, {"message_id": user.id, "reply_id": reply_id})

    async def regenerate(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        conversation_id = path_conversation_id(params)
        user, reply_id = await self._replies.regenerate(req.who, req.client_ip, conversation_id)
        return json_reply(202, {"message_id": user.id, "reply_id": reply_id})

    async def edit(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        conversation_id = path_conversation_id(params)
        try:
            message_id = str(uuid.UUID(params["message_id"]))
        except ValueError:
            raise ClientError(404, f"no message {params['message_id']}") from None
        content = self._content(req, body)
        who, ip = req.who, req.client_ip
        user, reply_id = await self._replies.edit(who, ip, conversation_id, message_id, content)
        return json_reply(202, {"message_id": user.id, "reply_id": reply_id})

    async def socket(
        self, req: Request, body: bytes, params: Mapping[str, str]
    ) -> Reply | OpenSocket:
        refused = check_handshake(req, self._config.cors_origins, self._origins)
        if refused is not None:
            return refused
        conversation_id = await self._check_owner(req, params)
        who, ip = req.who, req.client_ip

        async def post(content: str) -> tuple[StoredMessage, str]:
            return await self._replies.post(who, ip, conversation_id, content)

        commands = conversation_commands(post, max_content_chars=self._config.max_content_chars)
        return OpenSocket(
            topic_of(conversation_id), last_event_id(req), commands, expires_at=req.who.expires_at
        )

    async def stop(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        conversation_id = await self._check_owner(req, params)
        stopped = await self._service.stop(req.who.owner, conversation_id)
        return json_reply(200, {"stopped": stopped is not None, "message_id": stopped})


def conversation_routes(
    service: ChatService, config: Config, limits: Limits | None = None
) -> list[Route]:
    """The conversation routes, for `App`: each one private to the conversation's owner."""
    api = _ChatApi(service, config, CookieOrigins.from_config(config), limits)
    return [
        # The offered models are no one's secret: no identity, no cookie minted.
        Route("/models", {"GET": api.models}),
        Route("/conversations", {"GET": api.list, "POST": api.create}, identity=True),
        Route(
            "/conversations/{id}",
            {"GET": api.transcript, "PATCH": api.patch, "DELETE": api.delete},
            identity=True,
        ),
        Route("/conversations/{id}/export", {"GET": api.export}, identity=True),
        Route("/conversations/{id}/events", {"GET": api.events}, identity=True),
        Route("/conversations/{id}/messages", {"POST": api.post}, identity=True),
        Route("/conversations/{id}/messages/{message_id}/edit", {"POST": api.edit}, identity=True),
        Route("/conversations/{id}/regenerate", {"POST": api.regenerate}, identity=True),
        Route("/conversations/{id}/stop", {"POST": api.stop}, identity=True),
        Route("/conversations/{id}/ws", {"GET": api.socket}, identity=True),
    ]
