"""The seed's room: `GET /events`, `POST /send-message`, and its WebSocket `GET /ws`.

Plain `data:` text events, a join announcement for each new stream, and an
acknowledgement only once the broker has the message.

This room is the named room `lobby` (sse.chat.rooms): a message sent here is
kept in the lobby's messages first, then published to the seed's streams, and
then to `room:lobby` as JSON with its sender. The acknowledgement waits for the
store and the seed's broker (nothing acknowledged can be lost, and a message
that could not be kept is sent nowhere); the `room:lobby` publish follows,
not waited for, and cannot fail the post (the message is kept and was sent): a
failure there is logged. The
sender is the request's identity when the route resolved one, else who the
session cookie names (`Gate.peek`: no store, no new guest), else anonymous.
GET /events pays nothing for any of it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping

from sse.app.commands import room_commands
from sse.app.handshake import check_handshake
from sse.app.inputs import last_event_id, parse_json_object, require_text
from sse.app.origins import CookieOrigins
from sse.app.values import OpenSocket, OpenStream, Reply, Request, Route
from sse.auth.gate import Gate
from sse.auth.identity import GUEST, Identity
from sse.chat.rooms.records import Sender
from sse.chat.rooms.service import RoomService
from sse.config import Config
from sse.errors import BrokerUnavailable, ClientError, EncodeError, OverLimit
from sse.limits.policy import Limits
from sse.pubsub.broker import Broker, settle

__all__ = ["ANONYMOUS", "JOIN_ANNOUNCEMENT", "ROOM", "SENT_REPLY", "Room"]

ROOM = "room"
JOIN_ANNOUNCEMENT = "A new user joined!"
SENT_REPLY = b"Message sent successfully!"
_TEXT = "text/plain; charset=utf-8"
# Who a seed post is from when it names nobody (no cookie, or one that is not valid).
ANONYMOUS = Sender("anonymous", "Anonymous")


class Room:
    """The one room every visitor shares, over an event stream or a WebSocket."""

    def __init__(
        self,
        config: Config,
        broker: Broker,
        limits: Limits | None = None,
        gate: Gate | None = None,
        rooms: RoomService | None = None,
    ) -> None:
        self._config = config
        self._rooms = rooms
        self._broker = broker
        self._origins = CookieOrigins.from_config(config)
        self._limits = limits if limits is not None and limits.enabled else None
        self._gate = gate

    def routes(self) -> list[Route]:
        """The room's routes, for `App`.

        Open to anyone, as the seed's were, except in jwt mode without
        --public-room: then a valid token (or ticket) is needed. Identity is
        never resolved otherwise, so the seed API's hot path pays nothing for it.
        """
        private = self._config.auth == "jwt" and not self._config.public_room
        return [
            Route("/events", {"GET": self._events}, identity=private),
            Route("/send-message", {"POST": self._send_message}, identity=private),
            Route("/ws", {"GET": self._socket}, identity=private),
        ]

    def send(self, message: str) -> str | Awaitable[str]:
        """Publish `message` to the room; its event id, once the broker has it.

        Raises:
            ClientError: 400 for text the event stream cannot carry; from the
                awaitable also 503 when the broker could not take it.
        """
        try:
            published = self._broker.publish(ROOM, message)
        except EncodeError as exc:  # require_text should make this unreachable
            raise ClientError(400, f'"message" cannot be sent: {exc}') from None
        return published if isinstance(published, str) else _published(published)

    def _counted(self, req: Request) -> list[tuple[str, float]] | None:
        """Whom `req`'s room posts count against; None with the limits off."""
        limits = self._limits
        if limits is None:
            return None
        who = req.identity
        if who is None and self._gate is not None:
            who = self._gate.peek(req.headers)  # the room needs no identity, but counts one
        return limits.clients(who, req.client_ip)

    def _send_counted(self, clients: list[tuple[str, float]], message: str) -> str | Awaitable[str]:
        """`send`, once the room-post limit of `clients` lets it through."""
        limits = self._limits
        assert limits is not None
        refused = limits.hit(limits.room_posts, clients)
        if refused is None:
            return self.send(message)
        if isinstance(refused, OverLimit):
            raise refused
        return self._send_unless(refused, message)

    async def _send_unless(self, refused: Awaitable[OverLimit | None], message: str) -> str:
        over = await refused
        if over is not None:
            raise over
        return await settle(self.send(message))

    async def _keep_and_send(
        self, req: Request, clients: list[tuple[str, float]] | None, message: str
    ) -> str:
        """Count, keep in the lobby, publish to the seed's streams, then to `room:lobby`.

        Raises:
            OverLimit: over the room-post limit; nothing is kept or sent.
            StoreUnavailable: the lobby could not keep it; nothing is sent.
            ClientError: 503 when the broker did not take it.
        """
        rooms = self._rooms
        assert rooms is not None
        limits = self._limits
        if clients is not None and limits is not None:
            refused = await settle(limits.hit(limits.room_posts, clients))
            if refused is not None:
                raise refused
        kept = await rooms.keep_seed_post(message, await self._sender(req))
        published = await settle(self.send(message))
        if kept is not None:
            rooms.publish_seed_post(kept)
        return published

    async def _sender(self, req: Request) -> Sender:
        who: Identity | None = req.identity
        gate = self._gate
        if who is None and gate is not None:
            peeked = gate.peek(req.headers)
            if peeked is not None and peeked.kind == GUEST:
                who = peeked
            elif peeked is not None:
                # An account's cookie: its name is in the store (peek names it by
                # its sign-in, which must never be shown to the room).
                verdict = await settle(gate.resolve(req.headers, {}, stream=False))
                who = verdict.identity
        return ANONYMOUS if who is None else Sender(who.id, who.name)

    def _announce(self, last_id: str | None) -> str | None:
        # A stream that resumes is a returning user, not a new one: announcing it
        # would fill the room with joins after every restart or dropped network.
        return JOIN_ANNOUNCEMENT if self._config.join_announcement and not last_id else None

    def _events(self, req: Request, body: bytes, params: Mapping[str, str]) -> OpenStream:
        last_id = last_event_id(req)
        expires_at = req.identity.expires_at if req.identity is not None else None
        return OpenStream(ROOM, last_id, self._announce(last_id), expires_at=expires_at)

    def _send_message(
        self, req: Request, body: bytes, params: Mapping[str, str]
    ) -> Reply | Awaitable[Reply]:
        message = require_text(parse_json_object(req, body), "message")
        clients = self._counted(req)
        if self._rooms is not None:
            return _sent_reply(self._keep_and_send(req, clients, message))
        sent = self.send(message) if clients is None else self._send_counted(clients, message)
        if isinstance(sent, str):
            return Reply(200, SENT_REPLY, _TEXT)
        return _sent_reply(sent)

    def _socket(self, req: Request, body: bytes, params: Mapping[str, str]) -> Reply | OpenSocket:
        refused = check_handshake(req, self._config.cors_origins, self._origins)
        if refused is not None:
            return refused
        last_id = last_event_id(req)
        expires_at = req.identity.expires_at if req.identity is not None else None
        clients = self._counted(req)
        send: Callable[[str], str | Awaitable[str]]
        if self._rooms is not None:
            send = functools.partial(self._keep_and_send, req, clients)
        elif clients is None:
            send = self.send
        else:
            send = functools.partial(self._send_counted, clients)
        commands = room_commands(send)
        return OpenSocket(ROOM, last_id, commands, self._announce(last_id), expires_at=expires_at)


async def _published(published: Awaitable[str]) -> str:
    # What we acknowledge is never lost: the id comes only once the broker has the event.
    try:
        return await published
    except EncodeError as exc:
        raise ClientError(400, f'"message" cannot be sent: {exc}') from None
    except BrokerUnavailable as exc:
        raise ClientError(503, f"the message was not sent: {exc}; try again") from None


async def _sent_reply(sent: Awaitable[str]) -> Reply:
    await sent
    return Reply(200, SENT_REPLY, _TEXT)
