"""The composition root: builds the hub, broker, store, model, chat and app, and listens.

`Server` holds the state every connection shares and implements the narrow
`ServerState` that connections see. It also paces broadcasts and beats the
heartbeat of idle streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any
from uuid import UUID, uuid4

from sse.app.accounts import identity_routes
from sse.app.conversations import conversation_routes
from sse.app.multiplex import RoomAccess, stream_routes
from sse.app.room import Room
from sse.app.rooms import RoomChannels, room_routes
from sse.app.router import App
from sse.app.static import load_static
from sse.auth.gate import Gate
from sse.auth.secret import session_secret
from sse.chat.models.factory import build_models
from sse.chat.rooms.presence import Presence
from sse.chat.rooms.presence_redis import RedisPresence
from sse.chat.rooms.service import RoomService
from sse.chat.rooms.typing import Typing
from sse.chat.service import ChatService
from sse.chat.store.factory import build_store
from sse.config import Config
from sse.errors import BrokerUnavailable, StartError
from sse.io.hooks import Connection, OpenSink
from sse.io.http import HttpConnection
from sse.io.metrics import MetricsListener
from sse.io.mux import MuxStream, MuxWriter
from sse.limits.policy import Limits
from sse.metrics import (
    BROKER_UP,
    PUBLISH_FANOUT,
    SSE,
    WS,
    flush_requests,
    sent,
    stream_closed,
    stream_opened,
)
from sse.protocol.forwarded import Networks, parse_networks
from sse.pubsub.broker import Broker, MemoryBroker
from sse.pubsub.ephemeral import Ephemeral
from sse.pubsub.hub import Hub, Resume, Sink
from sse.pubsub.redis import RedisBroker

__all__ = ["Server", "running"]

log = logging.getLogger("ssechat")

# How much longer than a broadcast took the next one may wait, while they are costly.
_FLUSH_DUTY = 4.0
# How many recent broadcasts /healthz summarises.
_BROADCASTS_KEPT = 1000
# /readyz: how long the database and the broker get to answer, and how long an
# answer is reused, so that a flood of probes costs one query a second at most.
_READY_TIMEOUT_S = 1.0
_READY_CACHE_S = 1.0
# How often this process's request tallies reach the metrics (see sse.metrics).
_METRICS_FLUSH_S = 1.0


class Server:
    """The shared state of all connections: the hub, the app, the open streams."""

    def __init__(self, config: Config, *, rooms: RoomAccess | None = None) -> None:
        """`rooms` says who may follow which named room on /stream, and is told presence.

        By default the named rooms themselves: a channel of a missing room is
        refused, and a stream's person is present in each of its rooms.
        """
        self.config = config
        self.started_at = time.monotonic()
        # The epoch makes event ids from before a restart recognisably foreign.
        self.node = uuid4().hex
        self.hub = Hub(
            # With Redis the history lives there; the hub only fans out.
            history_size=1 if config.redis_url else config.history_size,
            epoch=str(time.time_ns() // 1_000_000),
            max_topics=config.max_channels,
            history_bytes=config.history_bytes,
            history_total_bytes=config.history_total_bytes,
            max_replay_bytes=config.max_replay_bytes,
            schedule=self._schedule_flush,
        )
        self.broker: Broker = (
            MemoryBroker(self.hub)
            if config.redis_url is None
            else RedisBroker(
                self.hub,
                config.redis_url,
                history_size=config.history_size,
                max_replay_bytes=config.max_replay_bytes,
                node=self.node,
            )
        )
        self.tasks: set[asyncio.Task[None]] = set()
        self.store = build_store(config)
        self.chat = ChatService(
            self.broker,
            self.store,
            build_models(config),
            context_messages=config.context_messages,
            spawn=self.spawn,
            end_streams=self.end_streams,
        )
        self.gate = Gate(config, self.store, session_secret(config), self.broker.claim_once)
        shared = self.broker.client if isinstance(self.broker, RedisBroker) else None
        self.limits = Limits(config, shared)
        self._trusted_proxies = parse_networks(config.trusted_proxies)
        ephemeral = Ephemeral(self.broker)
        self.presence = Presence(ephemeral, config.presence_grace_s, self.spawn)
        self._shared_presence = (
            RedisPresence(self.presence, self.broker.client, self.node, config.presence_lease_s)
            if isinstance(self.broker, RedisBroker)
            else None
        )
        self.rooms = RoomService(
            self.store.rooms(),
            self.broker,
            self.presence,
            Typing(self.broker, ephemeral),
            max_rooms=config.max_rooms,
            spawn=self.spawn,
        )
        self.app = App(
            config,
            [
                *Room(config, self.broker, self.limits, self.gate, self.rooms).routes(),
                *room_routes(self.rooms, config, self.limits),
                *conversation_routes(self.chat, config, self.limits),
                *stream_routes(self.chat, rooms or RoomChannels(self.rooms)),
                *identity_routes(config, self.gate, self.store),
            ],
            load_static(config.client_dir),
            self.health,
            self.readiness,
            self.gate,
            self.limits,
        )
        self.connections: set[Connection] = set()
        self.streams: dict[UUID, OpenSink] = {}
        self.sockets: dict[UUID, OpenSink] = {}
        self.draining = False
        self._last_flush = 0.0
        self._flush_gap = 0.0
        # Seconds each recent broadcast spent writing: what one more stream or one
        # more message costs here, reported by /healthz.
        self._broadcast_s: deque[float] = deque(maxlen=_BROADCASTS_KEPT)
        self._idle = asyncio.Event()
        self._heartbeat: asyncio.TimerHandle | None = None
        self._metrics_timer: asyncio.TimerHandle | None = None
        self._listener: asyncio.Server | None = None
        # --metrics-listen in one process; with --workers the supervisor serves it.
        self.metrics = MetricsListener(config.metrics_listen) if config.metrics_listen else None
        self.address: tuple[str, int] = (config.host, config.port)
        self._random = random.Random()
        self._mux_writer: MuxWriter | None = None
        # Request ids: this node's prefix and a counter, no uuid4 per request.
        self._request_prefix = self.node[:12]
        self._request_ids = itertools.count(1)
        self._ready_reasons: list[str] = []
        self._ready_at = -_READY_CACHE_S
        self._ready_check: asyncio.Task[None] | None = None

    @property
    def trusted_proxies(self) -> Networks:
        """The --trusted-proxy networks."""
        return self._trusted_proxies

    def health(self) -> Mapping[str, object]:
        """The numbers `GET /healthz` reports; "degraded" names its causes."""
        store = self.store.health()
        broker = self.broker.health()
        causes = [] if store.get("ok") else [f"store: {store.get('error')}"]
        # The broker's own view, no round trip: Redis is "down" once a call failed.
        if broker.get("redis") == "down":
            causes.append("redis: down (events are not carried between nodes)")
        status = "draining" if self.draining else "degraded" if causes else "ok"
        history_events, history_bytes = self.hub.history_held()
        return {
            "status": status,
            **({"causes": causes} if causes else {}),
            "store": store,
            "streams": len(self.streams),
            "websockets": len(self.sockets),
            "connections": len(self.connections),
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            # Which process answered, when --workers share the port.
            "pid": os.getpid(),
            # What this process keeps for resuming (with Redis, only the last event
            # of each channel: the history itself lives in Redis).
            "history_events": history_events,
            "history_bytes": history_bytes,
            **broker,
            "broadcast_ms": self._broadcast_summary(),
            "limits": self.limits.report(),
        }

    def readiness(self) -> list[str] | Awaitable[list[str]]:
        """Why `GET /readyz` should fail (empty: ready); checks at most once a second."""
        if self.draining:
            return ["draining for shutdown"]
        if time.monotonic() - self._ready_at < _READY_CACHE_S:
            return self._ready_reasons
        return self._await_readiness()

    async def _await_readiness(self) -> list[str]:
        # Probes that arrive while a check runs wait for that check, not a new one.
        if self._ready_check is None:
            self._ready_check = self.spawn(self._check_ready())
        await asyncio.shield(self._ready_check)
        return ["draining for shutdown"] if self.draining else self._ready_reasons

    async def _check_ready(self) -> None:
        try:
            store, broker = await asyncio.gather(
                self.store.ready(_READY_TIMEOUT_S), self.broker.ready(_READY_TIMEOUT_S)
            )
            reasons = [f"database: {store}"] if store is not None else []
            self._ready_reasons = reasons + ([broker] if broker is not None else [])
            self._ready_at = time.monotonic()
        finally:
            self._ready_check = None

    def _broadcast_summary(self) -> dict[str, float | int]:
        took = sorted(self._broadcast_s)
        if not took:
            return {"count": 0}
        return {
            "count": len(took),
            "last": round(self._broadcast_s[-1] * 1000, 2),
            "p50": round(took[len(took) // 2] * 1000, 2),
            "max": round(took[-1] * 1000, 2),
        }

    def _schedule_flush(self, flush: Callable[[], int]) -> None:
        # At the earliest after the callbacks of this loop iteration, so every
        # event published by the requests read in one iteration goes out in one
        # write per stream. And while broadcasts are expensive, no sooner than
        # `_flush_gap` after the last one: see `_flush`.
        loop = asyncio.get_running_loop()
        wait = self._last_flush + self._flush_gap - loop.time()
        if wait <= 0:
            loop.call_soon(self._flush, flush, False)
        else:
            loop.call_later(wait, self._flush, flush, True)

    def _flush(self, flush: Callable[[], int], delayed: bool) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        events = flush()
        self._last_flush = end = loop.time()
        if events:
            self._broadcast_s.append(end - start)
            PUBLISH_FANOUT.observe(end - start)
            sent(*self.hub.take_sent())
        # In a burst, a flush that took d seconds delays the next by up to
        # _FLUSH_DUTY * d (capped): the burst then spends at most about
        # 1/(1 + _FLUSH_DUTY) of the loop's time broadcasting, and the rest
        # reading the requests that make the next batch bigger. Without it, a
        # crowd connecting at once (each announcing itself) is broadcast one join
        # at a time: 2,000 streams cost 2 million writes.
        # A burst is streams arriving, or several events in a batch that formed
        # by itself (one grown during a gap would keep the pacing on by its own
        # doing). A steady trickle of single messages is never held back.
        joined = self.hub.take_joined()
        busy = joined > 0 or (events > 1 and not delayed)
        self._flush_gap = (
            min(self.config.max_flush_delay_s, _FLUSH_DUTY * (end - start)) if busy else 0.0
        )

    def publish_soon(self, topic: str, data: str) -> None:
        """Publish without waiting for the broker; a failure is logged, not raised."""
        published = self.broker.publish(topic, data)
        if not isinstance(published, str):
            self.spawn(self._await_publish(topic, published))

    async def _await_publish(self, topic: str, published: Awaitable[str]) -> None:
        try:
            await published
        except BrokerUnavailable as exc:
            log.warning("an event for %s was not published: %s", topic, exc)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `coro` as a task the server keeps, and waits for when it stops."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task failed", exc_info=task.exception())

    def request_id(self) -> str:
        """A new id for a request that brought none: unique across nodes, cheap to make."""
        return f"{self._request_prefix}-{next(self._request_ids)}"

    def end_streams(self, topic: str, event: str, data: str) -> None:
        """End every stream and WebSocket of `topic` on this node with a last `event`."""
        # A scan, not an index: it runs when a conversation is deleted, rarely.
        for sink in [*self.streams.values(), *self.sockets.values()]:
            if topic not in sink.topics:
                continue
            if isinstance(sink, MuxStream):
                sink.end_channel(topic, event, data)  # its other channels go on
            else:
                sink.end(event, data)

    def jittered(self, base_ms: int) -> int:
        """`base_ms` plus up to `retry_jitter_ms`, so reconnects spread out."""
        return base_ms + self._random.randint(0, self.config.retry_jitter_ms)

    def attach(
        self, topic: str, key: UUID, sink: Sink, last_event_id: str | None
    ) -> Resume | Awaitable[Resume]:
        """Subscribe `sink` through the broker."""
        return self.broker.attach(topic, key, sink, last_event_id)

    def last_id(self, topic: str) -> str | Awaitable[str]:
        """The broker's newest id of `topic`."""
        return self.broker.last_id(topic)

    @property
    def mux_writer(self) -> MuxWriter:
        """The one writer of multiplexed streams, made on the loop that runs them."""
        if self._mux_writer is None:
            self._mux_writer = MuxWriter(asyncio.get_running_loop())
        return self._mux_writer

    def detach(self, topic: str, key: UUID) -> None:
        """Unsubscribe through the broker."""
        self.broker.detach(topic, key)

    def add_stream(self, stream: OpenSink) -> None:
        """Register a stream the broker attached in the dict of writers."""
        self.streams[stream.key] = stream
        stream_opened(SSE)

    def drop_stream(self, stream: OpenSink, peer: str, reason: str) -> None:
        """Forget a closed stream; it gets no further frames."""
        for topic in stream.topics:
            self.broker.detach(topic, stream.key)
        took = time.monotonic() - stream.opened_at
        if self.streams.pop(stream.key, None) is not None:
            stream_closed(SSE, reason, took)
        if not log.isEnabledFor(logging.INFO):
            return
        log.info(
            "stream %s closed for %s after %.1fs (%d replayed): %s",
            stream.key,
            peer,
            took,
            stream.replayed,
            reason,
            extra={
                "stream": str(stream.key),
                "client_ip": peer.rpartition(":")[0] or peer,
                "lifetime_s": round(took, 3),
                "reason": reason,
            },
        )

    def add_socket(self, sock: OpenSink) -> None:
        """Register a WebSocket the broker attached in the dict of sockets."""
        self.sockets[sock.key] = sock
        stream_opened(WS)

    def drop_socket(self, sock: OpenSink, reason: str) -> None:
        """Forget a closed WebSocket; it gets no further frames."""
        for topic in sock.topics:
            self.broker.detach(topic, sock.key)
        if self.sockets.pop(sock.key, None) is not None:
            stream_closed(WS, reason, time.monotonic() - sock.opened_at)

    def connection_closed(self, conn: Connection) -> None:
        """Forget a connection; wake the shutdown when it was the last one."""
        self.connections.discard(conn)
        if self.draining and not self.connections:
            self._idle.set()

    async def start(self) -> tuple[str, int]:
        """Listen on the configured address; returns the bound host and port."""
        loop = asyncio.get_running_loop()
        try:
            await self.broker.start()
        except BrokerUnavailable as exc:
            raise StartError(str(exc)) from exc
        BROKER_UP.set(1)
        try:
            if self.metrics is not None:
                await self.metrics.start()
            try:
                recovered = await self.store.open()
            except Exception as exc:
                where = self.store.describe()
                raise StartError(f"cannot open the conversations in {where}: {exc}") from exc
            if recovered:
                log.warning("%d replies were cut short by a crash; marked interrupted", recovered)
            log.info(
                "conversations in %s; model %s (%s)",
                self.store.describe(),
                ", ".join(self.chat.models.ids),
                self.chat.model.label,
            )
            self._listener = await loop.create_server(
                lambda: HttpConnection(self),
                self.config.host,
                self.config.port,
                reuse_address=True,
                reuse_port=self.config.reuse_port,
                backlog=1024,
            )
        except BaseException:
            # A start that fails half-way must not leave the broker's reader
            # running: the process would never exit.
            await self.broker.close()
            with contextlib.suppress(Exception):
                await self.store.close()
            if self.metrics is not None:
                await self.metrics.close()
            raise
        if self._shared_presence is not None:
            self._shared_presence.start()
        self._heartbeat = loop.call_later(self.config.ping_interval_s, self._beat)
        self._metrics_timer = loop.call_later(_METRICS_FLUSH_S, self._flush_metrics)
        sock = self._listener.sockets[0]
        host, port = sock.getsockname()[:2]
        self.address = (host, port)
        log.info("ssechat listening on http://%s:%d", _url_host(host), port)
        return host, port

    def _flush_metrics(self) -> None:
        flush_requests()
        self._metrics_timer = asyncio.get_running_loop().call_later(
            _METRICS_FLUSH_S, self._flush_metrics
        )

    def _beat(self) -> None:
        # A stream whose topic carried an event since the last beat is not idle.
        active = self.hub.take_active()
        for stream in tuple(self.streams.values()):
            if active.isdisjoint(stream.topics):
                stream.heartbeat()
        self._heartbeat = asyncio.get_running_loop().call_later(
            self.config.ping_interval_s, self._beat
        )

    async def stop(self) -> None:
        """Stop accepting, end every stream, let requests in flight finish, then close."""
        if self._listener is None:
            return
        log.info(
            "shutting down: %d connections, %d streams", len(self.connections), len(self.streams)
        )
        self.draining = True
        self._listener.close()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._metrics_timer is not None:
            self._metrics_timer.cancel()
        # Replies first: each publishes its last event and is saved as far as it
        # got, and only then do the streams that carry those events end.
        await self.chat.shutdown()
        for conn in tuple(self.connections):
            conn.shutdown()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.config.shutdown_timeout_s)
        for conn in tuple(self.connections):
            log.warning(
                "connection still open after %.1fs: aborting", self.config.shutdown_timeout_s
            )
            conn.abort_stream("shutdown timeout")
        # connection_lost runs on the next loop iteration after an abort.
        await asyncio.sleep(0)
        # Every stream has closed: no grace runs out after this, and this node's
        # people are let go in Redis now (with their leaves) rather than lapse.
        self.presence.close()
        if self._shared_presence is not None:
            await self._shared_presence.close()
        for task in tuple(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.chat.models.aclose()
        await self.limits.close()
        await self.broker.close()
        await self.store.close()
        if self.metrics is not None:
            await self.metrics.close()
        self._listener = None
        log.info("stopped")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Server]:
    """A started server, stopped gracefully on exit; for tests and embedding."""
    server = Server(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
