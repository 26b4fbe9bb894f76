"""What a connection may ask of the server: a narrow interface, not the server itself.

`HttpConnection` and `WebSocket` hold a `ServerState` (as uvicorn's protocols
hold theirs): the settings, the app, the registries of open connections and
streams, and a few services. `sse.io.server.Server` implements it; nothing
else of the server is reachable from a connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine
from typing import Any, Protocol
from uuid import UUID

from sse.app.router import App
from sse.config import Config
from sse.protocol.forwarded import Networks
from sse.pubsub.hub import Resume, Sink

__all__ = ["Collector", "Connection", "OpenSink", "ServerState", "WritesOut"]


class WritesOut(Protocol):
    """A stream that collects frames during a loop iteration and writes them after it."""

    def write_out(self) -> None:
        """Write what was collected, as one chunk."""


class Collector(Protocol):
    """Calls `write_out` of each stream marked, once, after the current callback."""

    def mark(self, stream: WritesOut) -> None:
        """Have `stream` write what it collected."""


class Connection(Protocol):
    """An open client connection, as the server sees it when it shuts down."""

    def shutdown(self) -> None:
        """The server is draining: end what can end cleanly."""

    def abort_stream(self, reason: str) -> None:
        """Drop the connection at once."""


class OpenSink(Sink, Protocol):
    """An open stream or WebSocket: a sink with its subscription key and topic."""

    key: UUID
    opened_at: float
    replayed: int

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic it is subscribed to (one, but for a multiplexed stream)."""
        ...

    def heartbeat(self) -> None:
        """Show an idle proxy that the connection lives, if the client is not behind."""

    def end(self, event: str, data: str) -> None:
        """Close for the app's reason: `reauth`, or the topic `deleted`, told to the client."""


class ServerState(Protocol):
    """The part of the server a connection may use."""

    @property
    def config(self) -> Config:
        """The server's settings."""
        ...

    @property
    def trusted_proxies(self) -> Networks:
        """The --trusted-proxy networks: only their X-Forwarded-For is believed."""
        ...

    @property
    def app(self) -> App:
        """What each request means."""
        ...

    @property
    def draining(self) -> bool:
        """Whether the server is shutting down."""
        ...

    @property
    def connections(self) -> set[Connection]:
        """Every open connection; a connection adds itself and leaves by `connection_closed`."""
        ...

    def connection_closed(self, conn: Connection) -> None:
        """Forget a connection."""

    def attach(
        self, topic: str, key: UUID, sink: Sink, last_event_id: str | None
    ) -> Resume | Awaitable[Resume]:
        """Subscribe `sink` to `topic`: what it must receive first (see `Broker.attach`)."""
        ...

    def last_id(self, topic: str) -> str | Awaitable[str]:
        """The id of `topic`'s newest event (see `Broker.last_id`)."""
        ...

    def detach(self, topic: str, key: UUID) -> None:
        """Unsubscribe the sink under `key` at once (no more frames for it)."""

    @property
    def mux_writer(self) -> Collector:
        """What writes the multiplexed streams' collected frames once an iteration."""
        ...

    def add_stream(self, stream: OpenSink) -> None:
        """Register an open event stream (it gets heartbeats)."""

    def drop_stream(self, stream: OpenSink, peer: str, reason: str) -> None:
        """Unsubscribe and forget a closed event stream."""

    def add_socket(self, sock: OpenSink) -> None:
        """Register an open WebSocket."""

    def drop_socket(self, sock: OpenSink, reason: str) -> None:
        """Unsubscribe and forget a closed WebSocket."""

    def publish_soon(self, topic: str, data: str) -> None:
        """Publish without waiting for the broker (an announcement)."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> object:
        """Run `coro` as a task the server keeps and waits for when it stops."""
        ...

    def request_id(self) -> str:
        """A new id for a request that brought none: unique across nodes, cheap to make."""
        ...

    def end_streams(self, topic: str, event: str, data: str) -> None:
        """End every stream and WebSocket of `topic` here, telling each why."""

    def jittered(self, base_ms: int) -> int:
        """`base_ms` plus a random part, so reconnects spread out."""
        ...
