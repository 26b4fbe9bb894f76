"""The seed's room: `GET /events`, `POST /send-message`, and its WebSocket `GET /ws`.

Plain `data:` text events, a join announcement for each new stream, and an
acknowledgement only once the broker has the message.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Mapping

from sse.app.commands import room_commands
from sse.app.handshake import check_handshake
from sse.app.inputs import last_event_id, parse_json_object, require_text
from sse.app.origins import CookieOrigins
from sse.app.values import OpenSocket, OpenStream, Reply, Request, Route
from sse.auth.gate import Gate
from sse.config import Config
from sse.errors import BrokerUnavailable, ClientError, EncodeError, OverLimit
from sse.limits.policy import Limits
from sse.pubsub.broker import Broker, settle

__all__ = ["JOIN_ANNOUNCEMENT", "ROOM", "SENT_REPLY", "Room"]

ROOM = "room"
JOIN_ANNOUNCEMENT = "A new user joined!"
SENT_REPLY = b"Message sent successfully!"
_TEXT = "text/plain; charset=utf-8"


class Room:
    """The one room every visitor shares, over an event stream or a WebSocket."""

    def __init__(
        self,
        config: Config,
        broker: Broker,
        limits: Limits | None = None,
        gate: Gate | None = None,
    ) -> None:
        self._config = config
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
        commands = room_commands(
            self.send if clients is None else functools.partial(self._send_counted, clients)
        )
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
