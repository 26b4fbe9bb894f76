"""What the app and the I/O edge exchange: a parsed request in; a reply, stream or socket out."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from sse.auth.identity import Identity
from sse.limits.policy import Claim

__all__ = [
    "JSON_TYPE",
    "NOSNIFF",
    "PATH_PARAM",
    "Handler",
    "OpenSocket",
    "OpenStream",
    "Reply",
    "Request",
    "Result",
    "Route",
    "SocketCommands",
    "StreamWatch",
    "error_reply",
    "json_reply",
]

JSON_TYPE = "application/json"
# What a socket's text message gets back: an answer now, or once the app has it.
SocketCommands = Callable[[str], "bytes | Awaitable[bytes]"]


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request head; header names are lower case, repeats joined by ', '.

    `identity` is set by `App` for the routes that need one (see `Route.identity`).
    """

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    identity: Identity | None = None
    # The client's address: the peer's, or what a trusted proxy said it was.
    client_ip: str = "-"
    # The query as sent, for a parameter that may repeat (`/stream?ch=...&ch=...`).
    raw_query: str = ""

    @property
    def who(self) -> Identity:
        """The identity `App` resolved for this route's request."""
        assert self.identity is not None, "a route with identity=True always gets one"
        return self.identity


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete response to write: status, body and any extra headers."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


class StreamWatch(Protocol):
    """Told when a stream really opens and when it closes (presence in a room)."""

    def opened(self) -> None:
        """The stream is open: its first bytes are written."""

    def closed(self) -> None:
        """The stream that `opened` has closed, for whatever reason."""


@dataclass(frozen=True, slots=True)
class OpenStream:
    """Answer with an event stream of `topic`, replaying after `last_event_id` if set.

    A stream opened with a credential that expires (a JWT) ends at `expires_at`
    (seconds since the epoch) with an `event: reauth`.

    With `channels` (pairs of channel name and topic; `topic` is then unused)
    it is a multiplexed stream (`GET /stream`): `last_event_id` is a composite
    id (`sse.protocol.multiplex`).
    """

    topic: str
    last_event_id: str | None
    announce: str | None = None
    cors: tuple[tuple[str, str], ...] = field(default=())
    expires_at: float | None = None
    # The stream's slots of the per-client caps, given back when it closes.
    claim: Claim | None = None
    # Called once the stream is live (attached, its replay written); what it
    # returns is called once when the stream closes: a room's presence.
    on_open: Callable[[], Callable[[], None]] | None = None
    channels: tuple[tuple[str, str], ...] = ()
    watch: StreamWatch | None = None


@dataclass(frozen=True, slots=True)
class OpenSocket:
    """Upgrade to a WebSocket carrying `topic` (sse.io.websocket), replaying after `last_event_id`.

    `commands` answers each text message the client sends (`sse.app.commands`):
    the app decides what a socket's messages mean, the edge only carries them.
    """

    topic: str
    last_event_id: str | None
    commands: SocketCommands
    announce: str | None = None
    expires_at: float | None = None
    claim: Claim | None = None
    # Over a cap: accepted, then closed at once with 1013 (try again later) and this reason.
    refused: str | None = None


# A JSON answer must never be sniffed into something a browser would run.
NOSNIFF = ("x-content-type-options", "nosniff")


def json_reply(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """A reply whose body is `payload` as JSON."""
    return Reply(status, json.dumps(payload).encode(), JSON_TYPE, (NOSNIFF, *headers))


def error_reply(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """A JSON reply `{"error": message}`."""
    return json_reply(status, {"error": message}, headers)


Result = Reply | OpenStream | OpenSocket
Handler = Callable[[Request, bytes, Mapping[str, str]], "Result | Awaitable[Result]"]
PATH_PARAM = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True, slots=True)
class Route:
    """A path pattern such as `/conversations/{id}` and its handlers by method.

    With `identity`, `App` resolves who is asking before a handler runs (the
    handler reads `Request.who`), refuses what has no valid identity, and adds
    the cookies a new guest needs to the reply.
    """

    pattern: str
    methods: Mapping[str, Handler]
    identity: bool = False

    def compile(self) -> re.Pattern[str]:
        """The pattern as a regex; each `{name}` matches one path segment."""
        parts = PATH_PARAM.split(self.pattern)
        regex = "".join(
            f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part) for i, part in enumerate(parts)
        )
        return re.compile(regex + r"\Z")
