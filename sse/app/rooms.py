"""Named rooms: `/rooms`, and each room's events, messages, presence and typing.

Rooms are public: every identity (guest, account, token) may list, join and
post in every room, and none without an identity. What each route counts
against the limits is at the route.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sse.app.inputs import last_event_id, parse_json_object, require_text
from sse.app.values import OpenStream, Reply, Request, Route, json_reply
from sse.auth.identity import Identity
from sse.chat.rooms.presence import StreamHook
from sse.chat.rooms.records import Sender, room_topic
from sse.chat.rooms.service import RoomService
from sse.config import Config
from sse.errors import BrokerUnavailable, ClientError
from sse.limits.policy import Limits
from sse.pubsub.broker import settle

__all__ = ["RoomChannels", "room_routes", "sender_of", "stream_presence"]

_SCROLLBACK_DEFAULT = 50
_SCROLLBACK_MAX = 200
_NO_STORE = (("cache-control", "no-store"),)


def sender_of(identity: Identity) -> Sender:
    """How `identity` shows in a room: its id and display name."""
    return Sender(identity.id, identity.name)


def stream_presence(service: RoomService, room: str, identity: Identity) -> StreamHook:
    """The `OpenStream.on_open` that makes `identity` present in `room` while the stream is open.

    For every stream carrying a room's events (`/rooms/{name}/events`, and a
    room channel of a multiplexed stream).
    """
    return service.presence.hook(room, identity.owner, sender_of(identity))


class RoomChannels:
    """The room channels of a multiplexed stream (`sse.app.multiplex.RoomAccess`).

    A channel is refused (404) for a room that does not exist, as its own
    `/rooms/{name}/events` is; while the stream is open its person is present
    in each of its rooms.
    """

    def __init__(self, service: RoomService) -> None:
        self._service = service

    async def check(self, who: Identity, rooms: tuple[str, ...]) -> None:
        """Raise `ClientError` 404 for the first room that does not exist."""
        for room in rooms:
            if not await self._service.exists(room):
                raise ClientError(404, f"no such room: {room}")

    def watch(self, who: Identity, rooms: tuple[str, ...]) -> _ChannelPresence:
        """Present in every room of the stream from its opening to its close."""
        return _ChannelPresence([stream_presence(self._service, room, who) for room in rooms])


class _ChannelPresence:
    """A multiplexed stream's presence: one `StreamHook` per room channel."""

    __slots__ = ("_hooks", "_leaves")

    def __init__(self, hooks: list[StreamHook]) -> None:
        self._hooks = hooks
        self._leaves: list[Callable[[], None]] = []

    def opened(self) -> None:
        self._leaves = [hook() for hook in self._hooks]

    def closed(self) -> None:
        leaves, self._leaves = self._leaves, []
        for leave in leaves:
            leave()


def _int_param(req: Request, name: str, low: int, high: int) -> int | None:
    raw = req.query.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise ClientError(400, f'"{name}" must be a whole number')
    value = int(raw)
    if not low <= value <= high:
        raise ClientError(400, f'"{name}" must be {low} to {high}')
    return value


class _RoomsApi:
    def __init__(self, service: RoomService, config: Config, limits: Limits | None) -> None:
        self._service = service
        self._config = config
        self._limits = limits if limits is not None and limits.enabled else None

    async def _room(self, params: Mapping[str, str]) -> str:
        name = params["name"]
        if not await self._service.exists(name):
            raise ClientError(404, f"no such room: {name}")
        return name

    async def listing(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        try:
            rooms = await self._service.listing()
        except BrokerUnavailable as exc:
            raise ClientError(503, f"presence cannot be read now: {exc}") from None
        return json_reply(200, {"rooms": rooms}, _NO_STORE)

    async def create(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        name = self._service.check_name(require_text(parse_json_object(req, body), "name"))
        limits = self._limits
        if limits is not None:
            await limits.enforce(limits.room_creations, req.who, req.client_ip)
        created = await self._service.create(name, req.who.owner)
        return json_reply(
            201 if created else 200,
            {"name": name, "created": created},
            (("location", f"/rooms/{name}"),),
        )

    async def events(self, req: Request, body: bytes, params: Mapping[str, str]) -> OpenStream:
        room = await self._room(params)
        who = req.who
        return OpenStream(
            room_topic(room),
            last_event_id(req),
            expires_at=who.expires_at,
            on_open=stream_presence(self._service, room, who),
        )

    async def post(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        text = require_text(parse_json_object(req, body), "text")
        if not text.strip():
            raise ClientError(400, '"text" is empty')
        if len(text) > self._config.room_message_chars:
            raise ClientError(
                413, f'"text" is longer than {self._config.room_message_chars} characters'
            )
        room = await self._room(params)
        limits = self._limits
        if limits is not None:
            await limits.enforce(limits.room_posts, req.who, req.client_ip)
        message = await self._service.post(room, text, sender_of(req.who))
        return json_reply(201, message.public())

    async def scrollback(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        before = _int_param(req, "before", 1, 2**63 - 1)
        limit = _int_param(req, "limit", 1, _SCROLLBACK_MAX) or _SCROLLBACK_DEFAULT
        room = await self._room(params)
        messages = await self._service.scrollback(room, before, limit)
        payload: dict[str, object] = {"messages": [m.public() for m in messages]}
        # Where the next page (older) starts; absent once the start is reached.
        if len(messages) == limit:
            payload["before"] = str(messages[0].id)
        return json_reply(200, payload, _NO_STORE)

    async def presence(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        room = await self._room(params)
        try:
            users = await settle(self._service.presence.users(room))
        except BrokerUnavailable as exc:
            raise ClientError(503, f"presence cannot be read now: {exc}") from None
        payload = {"users": [u.public() for u in users], "count": len(users)}
        return json_reply(200, payload, _NO_STORE)

    async def typing(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
        room = await self._room(params)
        who = req.who
        try:
            published = await settle(self._service.typing.notify(room, who.owner, sender_of(who)))
        except BrokerUnavailable as exc:
            raise ClientError(503, f"typing was not sent: {exc}") from None
        # 202 either way: a notice is a hint, and one throttled is not an error to show.
        return json_reply(202, {"published": published})


def room_routes(service: RoomService, config: Config, limits: Limits | None) -> list[Route]:
    """The named rooms' routes, for `App`; each needs an identity."""
    api = _RoomsApi(service, config, limits)
    return [
        Route("/rooms", {"GET": api.listing, "POST": api.create}, identity=True),
        Route("/rooms/{name}/events", {"GET": api.events}, identity=True),
        Route("/rooms/{name}/messages", {"GET": api.scrollback, "POST": api.post}, identity=True),
        Route("/rooms/{name}/presence", {"GET": api.presence}, identity=True),
        Route("/rooms/{name}/typing", {"POST": api.typing}, identity=True),
    ]
