"""The I/O edge: asyncio transports, one `h11.Connection` each, and open event streams.

Everything that touches a socket lives here. Request meaning comes from
`sse.app`, fan-out from `sse.hub`, bytes of the event-stream format from
`sse.wire`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from enum import Enum, auto
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit
from uuid import UUID, uuid4

import h11

from sse.app import App, OpenSocket, OpenStream, Reply, Request, json_reply, status_phrase
from sse.broker import Broker, BrokerUnavailable, MemoryBroker
from sse.broker_redis import RedisBroker
from sse.chat import ChatService
from sse.chat_api import chat_routes
from sse.config import Config
from sse.errors import StartError
from sse.hub import Frame, Hub, Resume
from sse.models.factory import build_model
from sse.static import load_static
from sse.stores import build_store
from sse.wire import encode_comment, encode_retry
from sse.ws import WebSocket, accept, ws_routes

__all__ = ["HttpConnection", "Server", "Stream", "running"]

log = logging.getLogger("ssechat")
access_log = logging.getLogger("ssechat.access")

_STREAM_HEADERS = (
    ("content-type", "text/event-stream"),
    # Proxies and browsers must not cache or buffer an event stream.
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
)
# How much longer than a broadcast took the next one may wait, while they are costly.
_FLUSH_DUTY = 4.0
# How many recent broadcasts /healthz summarises.
_BROADCASTS_KEPT = 1000
# How long, and how much, we read and drop after an error reply before closing.
_LINGER_S = 2.0
_LINGER_MAX_BYTES = 1 << 20
# Sent before h11 has parsed a request, so h11 cannot frame it for us.
_RAW_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


# h11 events are immutable: one end-of-message serves every reply.
_END_OF_MESSAGE = h11.EndOfMessage()
# Validated response heads: most replies repeat one of a few (the 200 to every
# POST /send-message), and h11 validates every header it is given.
_RESPONSE_CACHE_SIZE = 256
_responses: dict[tuple[object, ...], h11.Response] = {}


# Stand-ins held by open streams instead of their own parser state and buffers.
_SPENT = h11.Connection(h11.SERVER)
_NO_BODY = bytearray()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class Phase(Enum):
    """What a connection is doing; h11 tracks the HTTP states themselves."""

    AWAIT_REQUEST = auto()
    READ_BODY = auto()
    WAIT_APP = auto()  # an async handler is working on the request
    STREAMING = auto()
    CLOSING = auto()
    UPGRADED = auto()  # the transport now belongs to a `sse.ws.WebSocket`


class Stream:
    """One open event stream: a `Sink` writing frames straight to its transport.

    While the transport is paused (its buffer is past the high-water mark), frames
    wait in `_pending`; when what waits unsent passes the stream's limit, the
    stream is aborted. Its browser reconnects with Last-Event-ID and the hub
    replays from history, so nothing is lost and nobody else waits.
    """

    __slots__ = (
        "_chunked",
        "_conn",
        "_limit_bytes",
        "_paused",
        "_pending",
        "_pending_bytes",
        "_transport",
        "_write",
        "key",
        "opened_at",
        "replayed",
        "topic",
    )

    def __init__(
        self,
        conn: HttpConnection,
        transport: asyncio.Transport,
        key: UUID,
        topic: str,
        *,
        chunked: bool,
        limit_bytes: int,
    ) -> None:
        self._conn = conn
        self._transport = transport
        self._write = transport.write
        self._chunked = chunked
        self._limit_bytes = limit_bytes
        self._paused = False
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self.key = key
        self.topic = topic
        self.replayed = 0
        self.opened_at = time.monotonic()

    def start(self, first: bytes, replay: list[bytes]) -> None:
        """Write the opening bytes, then the replay under flow control."""
        self._write(first)
        replay_bytes = sum(len(b) for b in replay)
        # The replay is allowed on top of the live limit: --max-replay-bytes bounds it.
        self._limit_bytes += replay_bytes
        self._pending.extend(replay)
        self._pending_bytes = replay_bytes
        self.replayed = len(replay)
        self._drain()

    def push(self, frame: Frame) -> None:
        """Write one frame now, or queue it while the client is behind."""
        # The hot path of a broadcast: keep it to one test and one write.
        data = frame.chunked if self._chunked else frame.raw
        if not self._paused and not self._pending:
            self._write(data)
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes + self._transport.get_write_buffer_size() > self._limit_bytes:
            self._conn.abort_stream("slow client: backlog over the limit")

    def last_bytes(self) -> bytes:
        """What ends the body: the last chunk (RFC 9112 section 7.1), or nothing for 1.0."""
        return b"0\r\n\r\n" if self._chunked else b""

    def frame_bytes(self, raw: bytes) -> bytes:
        """`raw` in this stream's body framing."""
        return _chunk(raw) if self._chunked else raw

    def frame_data(self, frame: Frame) -> bytes:
        """`frame` in this stream's body framing, as `push` writes it."""
        return frame.chunked if self._chunked else frame.raw

    def heartbeat(self) -> None:
        """Write a comment line, unless the client is behind anyway."""
        if not self._paused and not self._pending:
            self._write(self.frame_bytes(encode_comment()))

    def pause(self) -> None:
        """The transport's buffer is full: queue from now on."""
        self._paused = True

    def resume(self) -> None:
        """The transport's buffer drained: write what waits."""
        self._paused = False
        self._drain()

    def _drain(self) -> None:
        pending = self._pending
        while pending and not self._paused:
            data = pending.popleft()
            self._pending_bytes -= len(data)
            self._write(data)  # may call pause() synchronously


class HttpConnection(asyncio.Protocol):
    """One client connection: bytes through h11, requests to the app, one reply at a time."""

    # Thousands of these sit idle holding streams: slots keep each one small.
    __slots__ = (
        "_body",
        "_config",
        "_deadline",
        "_got_bytes",
        "_h11",
        "_ignored_bytes",
        "_loop",
        "_on_deadline",
        "_overloaded",
        "_peer",
        "_phase",
        "_request",
        "_server",
        "_started",
        "_stream",
        "_stream_close_reason",
        "_target",
        "_timer",
        "_transport",
        "_version",
        "_write_paused",
    )

    def __init__(self, server: Server) -> None:
        self._server = server
        self._config = server.config
        self._h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=server.config.max_header_bytes
        )
        self._transport: asyncio.Transport | None = None
        self._peer = "-"
        self._phase = Phase.AWAIT_REQUEST
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._on_deadline: Callable[[], None] | None = None
        self._loop = asyncio.get_running_loop()
        self._request: Request | None = None
        self._target = ""
        self._version = ""
        self._body = bytearray()
        self._started = 0.0
        self._got_bytes = False
        self._write_paused = False
        self._overloaded = False
        self._stream: Stream | None = None
        self._stream_close_reason = "client closed"
        self._ignored_bytes = 0

    # -- asyncio callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register the connection and start waiting for its first request."""
        # uvloop's transports implement the interface without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        server = self._server
        server.connections.add(self)
        self._overloaded = len(server.connections) > self._config.max_connections
        # Past this mark asyncio calls pause_writing; a quarter of the backlog
        # limit keeps room for our own queue before a stream counts as too slow.
        transport.set_write_buffer_limits(high=max(self._config.backlog_limit_bytes // 4, 1))
        self._arm(self._config.header_timeout_s, self._on_header_timeout)

    def data_received(self, data: bytes) -> None:
        """Feed h11 and act on whatever complete events it yields."""
        if self._phase is Phase.STREAMING:
            # A stream's response never ends, so nothing after its request can be
            # answered; tolerate a little, then drop a client that keeps talking.
            self._ignored_bytes += len(data)
            if self._ignored_bytes > self._config.max_header_bytes:
                self.abort_stream("client sent data on an open stream")
            return
        if self._phase is Phase.CLOSING:
            # Lingering after an error reply: read and drop what the client is still
            # sending, so the kernel does not answer it with a reset that would
            # destroy our reply before the client reads it (RFC 9112 section 9.6).
            self._ignored_bytes += len(data)
            if self._ignored_bytes > _LINGER_MAX_BYTES:
                self._abort()
            return
        self._got_bytes = True
        self._h11.receive_data(data)
        self._process()  # a no-op while an async handler works; it resumes after

    def eof_received(self) -> bool:
        """A half-close ends a stream; otherwise answer what was asked, then close."""
        if self._phase is Phase.STREAMING:
            self._stream_close_reason = "client closed"
            return False
        if self._phase is Phase.CLOSING:
            return False
        self._h11.receive_data(b"")
        self._process()  # a no-op while an async handler works; it resumes after
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        """The one exit path: unsubscribe, cancel timers, forget the connection."""
        self._drop_timer()
        self._phase = Phase.CLOSING
        stream = self._stream
        if stream is not None:
            self._stream = None
            self._server.drop_stream(stream, self._peer, self._stream_close_reason)
        self._server.connection_closed(self)

    def pause_writing(self) -> None:
        """The peer reads slower than we write: stop producing for it."""
        if self._stream is not None:
            self._stream.pause()
            return
        self._write_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        """The peer caught up: continue where we stopped."""
        if self._stream is not None:
            self._stream.resume()
            return
        self._write_paused = False
        if self._transport is not None and self._phase is not Phase.CLOSING:
            self._transport.resume_reading()
            self._process()

    # -- request handling --------------------------------------------------

    def _process(self) -> None:
        conn = self._h11
        while self._phase is Phase.AWAIT_REQUEST or self._phase is Phase.READ_BODY:
            if self._write_paused:
                return
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._protocol_error(exc)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            kind = type(event)  # h11 yields its own classes, never subclasses
            if kind is h11.Request:
                self._on_request(cast(h11.Request, event))
            elif kind is h11.Data:
                self._on_body(cast(h11.Data, event).data)
            elif kind is h11.EndOfMessage:
                self._on_end_of_message()
            elif kind is h11.ConnectionClosed:
                self._close()
                return

    def _on_request(self, event: h11.Request) -> None:
        self._cancel_timer()
        self._started = time.monotonic()
        target = event.target.decode("ascii", "replace")
        self._target = target
        self._version = event.http_version.decode("ascii", "replace")
        # Most targets are a bare path: skip the URL parser for them.
        parts = urlsplit(target) if "?" in target or "#" in target or "//" in target else None
        # h11 bounds only a head still arriving; one that came whole in a single
        # read must meet the same limit. Count it as it stood on the wire.
        head_size = len(event.method) + len(event.target) + 12
        headers: dict[str, str] = {}
        for name, value in event.headers:
            head_size += len(name) + len(value) + 4
            key = name.decode("ascii", "replace")  # h11 lower-cases names
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self._request = Request(
            event.method.decode("ascii", "replace"),
            (parts.path if parts is not None else target) or "/",
            dict(parse_qsl(parts.query, keep_blank_values=True)) if parts is not None else {},
            headers,
        )
        self._body.clear()
        self._phase = Phase.READ_BODY
        if head_size > self._config.max_header_bytes:
            limit = self._config.max_header_bytes
            message = f"request head is larger than the limit of {limit} bytes"
            self._send_reply(json_reply(431, {"error": message}), close=True)
            return
        declared = headers.get("content-length")
        if (
            declared is not None
            and declared.isdigit()
            and int(declared) > self._config.max_body_bytes
        ):
            self._reply_too_large()
            return
        self._arm(self._config.body_timeout_s, self._on_body_timeout)

    def _on_body(self, data: bytes) -> None:
        self._body += data
        if len(self._body) > self._config.max_body_bytes:
            self._reply_too_large()

    def _reply_too_large(self) -> None:
        limit = self._config.max_body_bytes
        message = f"request body is larger than the limit of {limit} bytes"
        self._send_reply(json_reply(413, {"error": message}), close=True)

    def _on_end_of_message(self) -> None:
        self._cancel_timer()
        request = self._request
        assert request is not None, "h11 yields EndOfMessage only after a Request"
        overloaded = self._overloaded
        if overloaded and request.path != "/healthz":
            self._answer_overloaded(request)
            return
        try:
            result = self._server.app.handle(request, bytes(self._body))
        except Exception:
            self._internal_error(request)
            return
        if overloaded and isinstance(result, Reply):
            # A liveness probe must not restart a server that one client filled:
            # /healthz is answered past the cap, and then the connection closes.
            self._send_reply(result, close=True)
            return
        if isinstance(result, Reply | OpenStream | OpenSocket):
            self._deliver(request, result)
            return
        # The handler waits on something (the database): stop reading, so that
        # pipelined requests stay in the kernel until this one is answered.
        self._phase = Phase.WAIT_APP
        if self._transport is not None:
            self._transport.pause_reading()
        self._server.spawn(self._await_app(request, result))

    async def _await_app(
        self, request: Request, pending: Awaitable[Reply | OpenStream | OpenSocket]
    ) -> None:
        try:
            result = await pending
        except Exception:
            if self._phase is Phase.WAIT_APP:
                self._internal_error(request)
            else:
                log.exception("error handling %s %s", request.method, self._target)
            return
        if self._phase is not Phase.WAIT_APP:
            return  # the client left while we worked
        self._phase = Phase.READ_BODY
        self._deliver(request, result)
        if self._phase is Phase.AWAIT_REQUEST and self._transport is not None:
            self._transport.resume_reading()
            self._process()

    def _deliver(self, request: Request, result: Reply | OpenStream | OpenSocket) -> None:
        if isinstance(result, OpenStream):
            self._open_stream(request, result)
        elif isinstance(result, OpenSocket):
            self._open_socket(request, result)
        else:
            self._send_reply(result)

    def _internal_error(self, request: Request) -> None:
        # Our bug, not the client's: log it once with its traceback, answer 500.
        log.exception("error handling %s %s from %s", request.method, self._target, self._peer)
        self._send_reply(json_reply(500, {"error": "internal server error"}), close=True)

    def _answer_overloaded(self, request: Request) -> None:
        # An EventSource gives up for good on anything but 200 text/event-stream
        # (WHATWG HTML, "Server-sent events": "fail the connection"), so a stream
        # refused for load gets 200, a long jittered retry, and an immediate end.
        if self._server.app.is_stream(request):
            retry = self._server.jittered(self._config.overload_retry_ms)
            body = encode_retry(retry)
            self._send_reply(Reply(200, body, "text/event-stream", _STREAM_HEADERS[1:]), close=True)
        else:
            retry_after = str(max(1, self._config.overload_retry_ms // 1000))
            payload = {"error": "server is at its connection limit; try again later"}
            self._send_reply(json_reply(503, payload, (("retry-after", retry_after),)), close=True)

    def _send_reply(self, reply: Reply, *, close: bool = False) -> None:
        transport = self._transport
        request = self._request
        if transport is None or self._phase is Phase.CLOSING:
            return
        close = close or self._server.draining
        conn = self._h11
        try:
            out = conn.send(_response(reply, close))
            if reply.body and (request is None or request.method != "HEAD") and reply.status != 204:
                out += conn.send(h11.Data(data=reply.body))
            out += conn.send(_END_OF_MESSAGE)
        except h11.LocalProtocolError:
            log.exception("could not frame a %d reply to %s", reply.status, self._peer)
            self._abort()
            return
        transport.write(out)
        self._access(reply.status, len(reply.body))
        if close or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            if conn.their_state is h11.DONE or conn.their_state is h11.MUST_CLOSE:
                self._close()
            else:
                self._linger()
            return
        conn.start_next_cycle()
        self._request = None
        self._got_bytes = False
        self._phase = Phase.AWAIT_REQUEST
        self._arm(self._config.header_timeout_s, self._on_header_timeout)

    def _open_stream(self, request: Request, opening: OpenStream) -> None:
        transport = self._transport
        if transport is None:
            return
        if request.method == "HEAD":
            self._send_reply(Reply(200, b"", None, (*_STREAM_HEADERS, *opening.cors)))
            return
        server = self._server
        head = self._h11.send(
            h11.Response(status_code=200, headers=[*_STREAM_HEADERS, *opening.cors], reason=b"OK")
        )
        # h11 picks the framing: chunked for HTTP/1.1, close-delimited for 1.0.
        # From here on we frame the body ourselves, so a broadcast is one write.
        chunked = b"transfer-encoding: chunked" in head.lower()
        stream = Stream(
            self,
            transport,
            uuid4(),
            opening.topic,
            chunked=chunked,
            limit_bytes=self._config.backlog_limit_bytes,
        )
        # Set before the broker may wait: a client leaving meanwhile detaches it.
        self._stream = stream
        attached = server.broker.attach(opening.topic, stream.key, stream, opening.last_event_id)
        if isinstance(attached, Resume):
            self._start_stream(stream, head, opening, attached)
            return
        # The broker reads the history over the network: hold the connection
        # (nothing more is read from it) until it has.
        self._phase = Phase.WAIT_APP
        transport.pause_reading()
        server.spawn(self._attach_stream(stream, head, opening, attached))

    async def _attach_stream(
        self, stream: Stream, head: bytes, opening: OpenStream, attached: Awaitable[Resume]
    ) -> None:
        try:
            resume = await attached
        except Exception as exc:
            if self._phase is not Phase.WAIT_APP or self._transport is None:
                return
            if isinstance(exc, BrokerUnavailable):
                log.warning("stream for %s not opened: %s", self._peer, exc)
            else:
                log.exception("stream for %s not opened", self._peer)
            # A 200 that ends at once: EventSource tries again after `retry`, where
            # an error status would make it give up for good.
            retry = encode_retry(self._server.jittered(self._config.overload_retry_ms))
            self._stream = None
            self._transport.write(head + stream.frame_bytes(retry) + stream.last_bytes())
            self._access(200, -1)
            self._close()
            return
        if self._phase is not Phase.WAIT_APP or self._transport is None:
            return  # the client left while the history was read
        self._start_stream(stream, head, opening, resume)
        if self._server.draining:
            self.finish_stream("server shutting down")

    def _start_stream(
        self, stream: Stream, head: bytes, opening: OpenStream, resume: Resume
    ) -> None:
        server = self._server
        self._phase = Phase.STREAMING
        # Not only for a client that resumes: with Redis, live events that came
        # while the stream attached are in the resume too.
        replay = [stream.frame_data(f) for f in resume.replay()]
        resumed = resume.note(opening.last_event_id)
        server.add_stream(stream)
        first = stream.frame_bytes(encode_retry(server.jittered(self._config.retry_ms)))
        stream.start(head + first, replay)
        if self._transport is not None:
            self._transport.resume_reading()  # to notice a client that keeps talking
        self._access(200, -1)
        log.info("stream %s open for %s topic=%s%s", stream.key, self._peer, opening.topic, resumed)
        # The stream frames its own bytes from here on: what parsed the request
        # would only cost memory for as long as the stream stays open.
        self._h11 = _SPENT
        self._request = None
        self._body = _NO_BODY
        if opening.announce is not None:
            server.publish_soon(opening.topic, opening.announce)

    # -- WebSocket hand-off (sse.ws) ----------------------------------------

    def _open_socket(self, request: Request, opening: OpenSocket) -> None:
        transport = self._transport
        if transport is None:
            return
        # h11 paused after the upgrade request (h11 docs, "Switching protocols");
        # the bytes it read past it are the client's first WebSocket frames.
        trailing, closed = self._h11.trailing_data
        if closed:
            self._close()
            return
        result = accept(
            self._server,
            transport,
            request,
            opening,
            version=self._version,
            peer=self._peer,
            trailing=trailing,
            write_paused=self._write_paused,
        )
        if isinstance(result, Reply):
            self._send_reply(result)
            return
        self._access(101, -1)
        # The WebSocket has the transport, and takes this connection's place.
        self._cancel_timer()
        self._phase = Phase.UPGRADED
        self._h11 = _SPENT
        self._request = None
        self._body = _NO_BODY
        self._server.connections.discard(self)
        self._server.connections.add(result)

    # -- ending --------------------------------------------------------------

    def abort_stream(self, reason: str) -> None:
        """Drop the stream at once, unsent bytes and all (its client resumes by id)."""
        self._stream_close_reason = reason
        self._abort()

    def finish_stream(self, reason: str) -> None:
        """End the stream cleanly: a jittered retry, the last chunk, then close."""
        stream = self._stream
        transport = self._transport
        if stream is None or transport is None or self._phase is Phase.CLOSING:
            return
        self._stream_close_reason = reason
        # Jitter spreads the reconnects of every browser after a restart.
        retry = encode_retry(self._server.jittered(self._config.retry_ms))
        transport.write(stream.frame_bytes(retry) + stream.last_bytes())
        self._close()

    def shutdown(self) -> None:
        """Server is draining: end a stream, close an idle connection, let a request finish."""
        if self._phase is Phase.STREAMING:
            self.finish_stream("server shutting down")
        elif self._phase is Phase.AWAIT_REQUEST and not self._got_bytes:
            self._close()
        # A request in flight closes after its reply: `_send_reply` sees `draining`.

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint
        log.info("bad request from %s: %s (%d)", self._peer, exc, status)
        if self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._send_reply(json_reply(status, {"error": f"bad request: {exc}"}), close=True)
        else:
            self._close()

    def _on_header_timeout(self) -> None:
        if self._got_bytes and self._transport is not None:
            log.info("header timeout from %s: closing", self._peer)
            self._transport.write(_RAW_408)
            self._linger()
        else:
            self._close()

    def _on_body_timeout(self) -> None:
        log.info("body timeout from %s: closing", self._peer)
        self._send_reply(
            json_reply(408, {"error": "request body not received in time"}), close=True
        )

    def _close(self) -> None:
        self._cancel_timer()
        if self._phase is not Phase.STREAMING:
            self._phase = Phase.CLOSING
        if self._transport is not None:
            self._transport.close()
        self._phase = Phase.CLOSING

    def _linger(self) -> None:
        """Half-close after an error reply and drop input for a while, then close."""
        transport = self._transport
        self._cancel_timer()
        self._phase = Phase.CLOSING
        if transport is None:
            return
        if not transport.can_write_eof():
            transport.close()
            return
        self._ignored_bytes = 0
        transport.write_eof()
        self._arm(_LINGER_S, transport.close)

    def _abort(self) -> None:
        self._cancel_timer()
        self._phase = Phase.CLOSING
        if self._transport is not None:
            self._transport.abort()

    def _arm(self, delay_s: float, callback: Callable[[], None]) -> None:
        # Re-armed for every request, so moving the deadline is an assignment:
        # the one timer handle is replaced only when the new deadline comes
        # first, and a timer that fires early just sleeps again until it.
        loop = self._loop
        deadline = loop.time() + delay_s
        self._deadline = deadline
        self._on_deadline = callback
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self._timer = None
        callback = self._on_deadline
        if callback is None:
            return
        loop = self._loop
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._check_deadline)
            return
        self._on_deadline = None
        callback()

    def _cancel_timer(self) -> None:
        # A pending handle stays and, when it fires, finds nothing to do.
        self._on_deadline = None

    def _drop_timer(self) -> None:
        self._on_deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _access(self, status: int, size: int) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        request = self._request
        method = request.method if request is not None else "-"
        took_ms = (time.monotonic() - self._started) * 1000 if self._started else 0.0
        access_log.info(
            '%s "%s %s HTTP/%s" %d %s %.1fms',
            self._peer,
            method,
            self._target or "-",
            self._version or "-",
            status,
            "-" if size < 0 else size,
            took_ms,
        )


def _response(reply: Reply, close: bool) -> h11.Response:
    """The response head for `reply`, validated by h11 once per distinct head."""
    status = reply.status
    key = (status, reply.content_type, len(reply.body), reply.headers, close)
    response = _responses.get(key)
    if response is not None:
        return response
    headers: list[tuple[str, str]] = []
    if reply.content_type is not None:
        headers.append(("content-type", reply.content_type))
    if status != 204 and status != 304:
        headers.append(("content-length", str(len(reply.body))))
    headers.extend(reply.headers)
    if close:
        headers.append(("connection", "close"))
    response = h11.Response(status_code=status, headers=headers, reason=status_phrase(status))
    if len(_responses) >= _RESPONSE_CACHE_SIZE:
        _responses.clear()  # varied bodies (errors) churn it; the common ones return
    _responses[key] = response
    return response


class Server:
    """The shared state of all connections: the hub, the app, the open streams."""

    def __init__(self, config: Config) -> None:
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
            build_model(config),
            context_messages=config.context_messages,
            spawn=self.spawn,
        )
        self.app = App(
            config,
            self.broker,
            load_static(config.client_dir),
            self.health,
            [*chat_routes(self.chat, config), *ws_routes(self.chat, config)],
        )
        self.connections: set[HttpConnection | WebSocket] = set()
        self.streams: dict[UUID, Stream] = {}
        self.sockets: dict[UUID, WebSocket] = {}
        self.draining = False
        self._last_flush = 0.0
        self._flush_gap = 0.0
        # Seconds each recent broadcast spent writing: what one more stream or one
        # more message costs here, reported by /healthz.
        self._broadcast_s: deque[float] = deque(maxlen=_BROADCASTS_KEPT)
        self._idle = asyncio.Event()
        self._heartbeat: asyncio.TimerHandle | None = None
        self._listener: asyncio.Server | None = None
        self.address: tuple[str, int] = (config.host, config.port)
        self._random = random.Random()

    def health(self) -> Mapping[str, object]:
        """The numbers `GET /healthz` reports; "degraded" names its causes."""
        store = self.store.health()
        causes = [] if store.get("ok") else [f"store: {store.get('error')}"]
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
            **self.broker.health(),
            "broadcast_ms": self._broadcast_summary(),
        }

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

    def jittered(self, base_ms: int) -> int:
        """`base_ms` plus up to `retry_jitter_ms`, so reconnects spread out."""
        return base_ms + self._random.randint(0, self.config.retry_jitter_ms)

    def add_stream(self, stream: Stream) -> None:
        """Register a stream the broker attached in the dict of writers."""
        self.streams[stream.key] = stream

    def drop_stream(self, stream: Stream, peer: str, reason: str) -> None:
        """Forget a closed stream; it gets no further frames."""
        self.broker.detach(stream.topic, stream.key)
        self.streams.pop(stream.key, None)
        took = time.monotonic() - stream.opened_at
        log.info(
            "stream %s closed for %s after %.1fs (%d replayed): %s",
            stream.key,
            peer,
            took,
            stream.replayed,
            reason,
        )

    def add_socket(self, sock: WebSocket) -> None:
        """Register a WebSocket the broker attached in the dict of sockets."""
        self.sockets[sock.key] = sock

    def drop_socket(self, sock: WebSocket) -> None:
        """Forget a closed WebSocket; it gets no further frames."""
        self.broker.detach(sock.topic, sock.key)
        self.sockets.pop(sock.key, None)

    def connection_closed(self, conn: HttpConnection | WebSocket) -> None:
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
        try:
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
                self.chat.model.name,
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
            raise
        self._heartbeat = loop.call_later(self.config.ping_interval_s, self._beat)
        sock = self._listener.sockets[0]
        host, port = sock.getsockname()[:2]
        self.address = (host, port)
        log.info("ssechat listening on http://%s:%d", _url_host(host), port)
        return host, port

    def _beat(self) -> None:
        # A stream whose topic carried an event since the last beat is not idle.
        active = self.hub.take_active()
        for stream in tuple(self.streams.values()):
            if stream.topic not in active:
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
        for task in tuple(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.chat.model.aclose()
        await self.broker.close()
        await self.store.close()
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
