"""HTTP/1.1 connections: one `h11.Connection` each, and the event streams they open.

Request meaning comes from `sse.app` (through `ServerState.app`), fan-out from
the broker (through `ServerState.attach`), bytes of the event-stream format from
`sse.protocol`. An upgrade hands the transport to `sse.io.websocket`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from enum import Enum, auto
from typing import cast
from urllib.parse import parse_qsl, urlsplit
from uuid import uuid4

import h11

from sse.app.refusals import reauth_event
from sse.app.values import OpenSocket, OpenStream, Reply, Request, StreamWatch, json_reply
from sse.errors import BrokerUnavailable
from sse.io.hooks import ServerState
from sse.io.mux import MuxResume, MuxStream, attach_all
from sse.io.reset import reset
from sse.io.stream import Stream
from sse.io.websocket import accept
from sse.limits.policy import Claim
from sse.metrics import SSE, http_request, replayed
from sse.protocol.forwarded import client_address, is_trusted
from sse.protocol.http1 import status_phrase, with_header
from sse.protocol.sse import encode_retry
from sse.pubsub.hub import Resume

__all__ = ["HttpConnection"]

log = logging.getLogger("ssechat")
access_log = logging.getLogger("ssechat.access")

_STREAM_HEADERS = (
    ("content-type", "text/event-stream"),
    # Proxies and browsers must not cache or buffer an event stream.
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
)
# How long, and how much, we read and drop after an error reply before closing.
_LINGER_S = 2.0
_LINGER_MAX_BYTES = 1 << 20
# Sent before h11 has parsed a request, so h11 cannot frame it for us.
_RAW_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
# Sent when opening a stream failed after h11 framed its 200 head (not yet written).
_RAW_500_BODY = b'{"error": "internal server error"}'
_RAW_500_HEAD = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n" % len(_RAW_500_BODY)
)
# An X-Request-Id we echo as given, when a trusted proxy sent it; anything else is
# replaced by one of ours. Its characters are safe in a header: no validation by h11.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# Query parameters whose values are credentials: masked in the access log.
_SECRET_PARAMS = re.compile(
    r"([?&;](?:ticket|token|access_token|id_token|jwt|password|session)=)[^&;#]*", re.IGNORECASE
)


# h11 events are immutable: one end-of-message serves every reply.
_END_OF_MESSAGE = h11.EndOfMessage()
_CONTINUE = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
# Validated response heads: most replies repeat one of a few (the 200 to every
# POST /send-message), and h11 validates every header it is given.
_RESPONSE_CACHE_SIZE = 256
_responses: dict[tuple[object, ...], h11.Response] = {}


# Stand-ins held by open streams instead of their own parser state and buffers.
_SPENT = h11.Connection(h11.SERVER)
_NO_BODY = bytearray()


class Phase(Enum):
    """What a connection is doing; h11 tracks the HTTP states themselves."""

    AWAIT_REQUEST = auto()
    READ_BODY = auto()
    WAIT_APP = auto()  # an async handler is working on the request
    STREAMING = auto()
    CLOSING = auto()
    UPGRADED = auto()  # the transport now belongs to a `sse.ws.WebSocket`


class HttpConnection(asyncio.Protocol):
    """One client connection: bytes through h11, requests to the app, one reply at a time."""

    # Thousands of these sit idle holding streams: slots keep each one small.
    __slots__ = (
        "_body",
        "_claim",
        "_client_ip",
        "_closed_hook",
        "_config",
        "_deadline",
        "_got_bytes",
        "_h11",
        "_ignored_bytes",
        "_loop",
        "_on_deadline",
        "_overloaded",
        "_peer",
        "_peer_ip",
        "_phase",
        "_request",
        "_request_id",
        "_server",
        "_started",
        "_stream",
        "_stream_close_reason",
        "_target",
        "_timer",
        "_transport",
        "_version",
        "_via_proxy",
        "_watch",
        "_write_paused",
    )

    def __init__(self, server: ServerState) -> None:
        self._server = server
        self._config = server.config
        self._h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=server.config.max_header_bytes
        )
        self._transport: asyncio.Transport | None = None
        self._peer = "-"
        self._peer_ip = "-"
        self._client_ip = "-"
        self._via_proxy = False
        self._phase = Phase.AWAIT_REQUEST
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._on_deadline: Callable[[], None] | None = None
        self._loop = asyncio.get_running_loop()
        self._request: Request | None = None
        self._request_id = b""
        self._target = ""
        self._version = ""
        self._body = bytearray()
        self._started = 0.0
        self._got_bytes = False
        self._write_paused = False
        self._overloaded = False
        self._stream: Stream | MuxStream | None = None
        self._watch: StreamWatch | None = None  # told when the open stream closes
        self._claim: Claim | None = None  # the open stream's slots of the per-client caps
        self._closed_hook: Callable[[], None] | None = None  # what `OpenStream.on_open` gave
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
        self._peer_ip = self._client_ip = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        trusted = self._server.trusted_proxies
        # Only a proxy of ours may say who the client is, or name the request.
        self._via_proxy = bool(trusted) and is_trusted(self._peer_ip, trusted)
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
        if self._claim is not None:
            self._claim.release()
        closed, self._closed_hook = self._closed_hook, None
        if closed is not None:
            closed()
        if self._watch is not None:
            self._watch.closed()
            self._watch = None
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
        given = headers.get("x-request-id") if self._via_proxy else None
        self._request_id = (
            given
            if given is not None and _SANE_REQUEST_ID.fullmatch(given)
            else self._server.request_id()
        ).encode()
        if self._via_proxy:
            self._client_ip = client_address(self._peer_ip, headers, self._server.trusted_proxies)
        self._request = Request(
            event.method.decode("ascii", "replace"),
            (parts.path if parts is not None else target) or "/",
            dict(parse_qsl(parts.query, keep_blank_values=True)) if parts is not None else {},
            headers,
            client_ip=self._client_ip,
            raw_query=parts.query if parts is not None else "",
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
            and (len(declared) > 18 or int(declared) > self._config.max_body_bytes)
        ):
            self._reply_too_large()  # the final status, never a 100 first
            return
        conn = self._h11
        if conn.they_are_waiting_for_100_continue and self._transport is not None:
            # RFC 9110 section 10.1.1: the client holds the body until we say so.
            self._transport.write(conn.send(_CONTINUE))
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
        if overloaded and request.path != "/healthz" and request.path != "/readyz":
            self._answer_overloaded(request)
            return
        try:
            result = self._server.app.handle(request, bytes(self._body))
        except Exception:
            self._internal_error(request)
            return
        if overloaded and isinstance(result, Reply):
            # A liveness probe must not restart a server that one client filled:
            # /healthz (and /readyz) is answered past the cap, and then the
            # connection closes (`_send_reply` sees `_overloaded` for an awaited one).
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
        # Whatever raises while opening a stream or socket (the broker's attach,
        # the hand-off) is our bug: it must end in a 500 and a closed
        # connection, never in one left paused with no timer.
        try:
            if isinstance(result, OpenStream):
                self._open_stream(request, result)
            elif isinstance(result, OpenSocket):
                self._open_socket(request, result)
            else:
                self._send_reply(result)
        except Exception:
            self._delivery_failed(request)

    def _delivery_failed(self, request: Request) -> None:
        stream = self._stream
        if stream is not None:
            self._stream = None
            self._server.drop_stream(stream, self._peer, "failed to open")
        if self._phase is Phase.UPGRADED:
            log.exception("error handing %s %s to a WebSocket", request.method, self._target)
            return
        if self._phase is not Phase.STREAMING and self._h11.our_state is h11.SEND_RESPONSE:
            self._internal_error(request)
            return
        log.exception("error handling %s %s from %s", request.method, self._target, self._peer)
        if self._phase is not Phase.STREAMING and self._transport is not None:
            # h11 framed the stream's head, but it was never written: answer in its place.
            self._transport.write(self._with_request_id(_RAW_500_HEAD + b"\r\n") + _RAW_500_BODY)
            self._access(500, len(_RAW_500_BODY))
        self._close()

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
        close = close or self._server.draining or self._overloaded
        conn = self._h11
        try:
            out = self._with_request_id(conn.send(_response(reply, close)))
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
        self._request_id = b""
        self._got_bytes = False
        self._phase = Phase.AWAIT_REQUEST
        self._arm(self._config.header_timeout_s, self._on_header_timeout)

    def _open_stream(self, request: Request, opening: OpenStream) -> None:
        transport = self._transport
        if transport is None:
            return
        if request.method == "HEAD":
            if opening.claim is not None:
                opening.claim.release()
            self._send_reply(Reply(200, b"", None, (*_STREAM_HEADERS, *opening.cors)))
            return
        self._claim = opening.claim
        server = self._server
        head = self._with_request_id(
            self._h11.send(
                h11.Response(
                    status_code=200, headers=[*_STREAM_HEADERS, *opening.cors], reason=b"OK"
                )
            )
        )
        # h11 picks the framing: chunked for HTTP/1.1, close-delimited for 1.0.
        # From here on we frame the body ourselves, so a broadcast is one write.
        chunked = b"transfer-encoding: chunked" in head.lower()
        if opening.channels:
            self._open_mux(head, chunked, opening)
            return
        stream = Stream(
            transport,
            uuid4(),
            opening.topic,
            chunked=chunked,
            limit_bytes=self._config.backlog_limit_bytes,
            abort=self.abort_stream,
            finish=self.finish_stream,
        )
        # Set before the broker may wait: a client leaving meanwhile detaches it.
        self._stream = stream
        attached = server.attach(opening.topic, stream.key, stream, opening.last_event_id)
        if isinstance(attached, Resume):
            self._start_stream(stream, head, opening, attached)
            return
        # The broker reads the history over the network: hold the connection
        # (nothing more is read from it) until it has.
        self._phase = Phase.WAIT_APP
        transport.pause_reading()
        server.spawn(self._attach_stream(stream, head, opening, attached))

    def _open_mux(self, head: bytes, chunked: bool, opening: OpenStream) -> None:
        transport = self._transport
        assert transport is not None
        server = self._server
        stream = MuxStream(
            transport,
            uuid4(),
            opening.channels,
            chunked=chunked,
            limit_bytes=self._config.backlog_limit_bytes,
            writer=server.mux_writer,
            abort=self.abort_stream,
            finish=self.finish_stream,
            detach=server.detach,
        )
        self._stream = stream
        attached = attach_all(server, stream, opening.last_event_id)
        if isinstance(attached, MuxResume):
            self._start_stream(stream, head, opening, attached)
            return
        self._phase = Phase.WAIT_APP
        transport.pause_reading()
        server.spawn(self._attach_stream(stream, head, opening, attached))

    async def _attach_stream(
        self,
        stream: Stream | MuxStream,
        head: bytes,
        opening: OpenStream,
        attached: Awaitable[Resume] | Awaitable[MuxResume],
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
            # The client left while the history was read: what subscribed since
            # it was dropped must not stay subscribed.
            for topic in stream.topics:
                self._server.detach(topic, stream.key)
            return
        self._start_stream(stream, head, opening, resume)
        if self._server.draining:
            self.finish_stream("server shutting down")

    def _start_stream(
        self,
        stream: Stream | MuxStream,
        head: bytes,
        opening: OpenStream,
        resume: Resume | MuxResume,
    ) -> None:
        server = self._server
        self._phase = Phase.STREAMING
        resumed = resume.note(opening.last_event_id)
        first = stream.frame_bytes(encode_retry(server.jittered(self._config.retry_ms)))
        if isinstance(resume, MuxResume):
            assert isinstance(stream, MuxStream)
            gap = resume.gaps > 0
            sizes = resume.sizes()
            server.add_stream(stream)
            stream.start(head + first, resume)
            what = "channels=" + ",".join(stream.channels)
        else:
            assert isinstance(stream, Stream)
            # Not only for a client that resumes: with Redis, live events that came
            # while the stream attached are in the resume too.
            replay = [stream.frame_data(f) for f in resume.replay()]
            gap = resume.gap is not None
            sizes = [len(f.raw) for f in resume.replay()]
            server.add_stream(stream)
            stream.start(head + first, replay)
            what = "topic=" + opening.topic
        replayed(SSE, sizes, opening.last_event_id is not None, gap)
        if opening.watch is not None:
            self._watch = opening.watch
            opening.watch.opened()
        if self._transport is not None:
            self._transport.resume_reading()  # to notice a client that keeps talking
        self._access(200, -1)
        log.info("stream %s open for %s %s%s", stream.key, self._peer, what, resumed)
        if opening.expires_at is not None:
            # Its credential runs out: the page is told to renew, never served on
            # as nobody. The connection's timer is free while it streams.
            self._arm(max(0.0, opening.expires_at - time.time()), self._credential_expired)
        # The stream frames its own bytes from here on: what parsed the request
        # would only cost memory for as long as the stream stays open.
        self._h11 = _SPENT
        self._request = None
        self._body = _NO_BODY
        if opening.announce is not None:
            server.publish_soon(opening.topic, opening.announce)
        if opening.on_open is not None:
            self._closed_hook = opening.on_open()

    # -- WebSocket hand-off (sse.io.websocket) ----------------------------------------

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
            request_id=self._request_id,
        )
        if isinstance(result, Reply):
            if opening.claim is not None:
                opening.claim.release()
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
        self._cancel_timer()
        self._phase = Phase.CLOSING
        if self._transport is not None:
            reset(self._transport)

    def finish_stream(self, reason: str, last: bytes = b"") -> None:
        """End the stream cleanly: `last` (an event), a jittered retry, the last chunk, close."""
        stream = self._stream
        transport = self._transport
        if stream is None or transport is None or self._phase is Phase.CLOSING:
            return
        self._stream_close_reason = reason
        # Jitter spreads the reconnects of every browser after a restart.
        retry = encode_retry(self._server.jittered(self._config.retry_ms))
        transport.write(stream.frame_bytes(last + retry) + stream.last_bytes())
        self._close()

    def _credential_expired(self) -> None:
        self.finish_stream("auth", reauth_event("expired"))

    def shutdown(self) -> None:
        """Server is draining: end a stream, close an idle connection, let a request finish."""
        if self._phase is Phase.STREAMING:
            self.finish_stream("server shutting down")
        elif self._phase is Phase.AWAIT_REQUEST and not self._got_bytes:
            self._close()
        # A request in flight closes after its reply: `_send_reply` sees `draining`.

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint
        # h11 quotes the offending bytes, which may be a cookie: only at debug level.
        log.info("bad request from %s (%d)", self._peer, status)
        log.debug("bad request from %s: %s", self._peer, exc)
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

    def _with_request_id(self, head: bytes) -> bytes:
        """`head` (as h11 framed it) with the request's X-Request-Id before its blank line.

        Spliced in rather than passed to h11: the cached, validated heads of
        `_response` stay shared by every request; the id matched `_SANE_REQUEST_ID`.
        """
        rid = self._request_id
        if not rid:  # h11 refused the request before it had headers
            rid = self._request_id = self._server.request_id().encode()
        return with_header(head, b"x-request-id", rid)

    def _access(self, status: int, size: int) -> None:
        request = self._request
        method = request.method if request is not None else "-"
        took_s = time.monotonic() - self._started if self._started else 0.0
        # Neither headers nor body nor query are logged: they carry cookies, tokens
        # and message text. The route pattern stands in for a path with ids in it.
        route = self._server.app.route_of(request.path) if request is not None else "-"
        http_request(route, method, status, took_s)
        if not access_log.isEnabledFor(logging.INFO):
            return
        took_ms = took_s * 1000
        target = self._target
        if "?" in target:
            target = _SECRET_PARAMS.sub(r"\1***", target)
        access_log.info(
            '%s "%s %s HTTP/%s" %d %s %.1fms',
            self._peer,
            method,
            target or "-",
            self._version or "-",
            status,
            "-" if size < 0 else size,
            took_ms,
            extra={
                "request_id": self._request_id.decode(),
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(took_ms, 3),
                "bytes": None if size < 0 else size,
                "client_ip": self._client_ip,
            },
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
