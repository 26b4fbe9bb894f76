"""The WebSocket edge: `GET /ws` and `GET /conversations/{id}/ws`, spoken with wsproto.

A WebSocket client gets the same events as an event stream on the same topic,
one JSON text message per event, and may send commands over the same socket.
`sse.io.http` parses the upgrade request with h11, the routes here decide whether
it may be upgraded, and `accept` takes the transport over: wsproto reads what
the client sends, while the events we broadcast are framed once for everyone
by `sse.protocol.websocket`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from enum import Enum, auto
from functools import partial
from uuid import UUID, uuid4

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol
from wsproto.handshake import server_extensions_handshake

from sse.app.commands import error
from sse.app.values import OpenSocket, Reply, Request, json_reply
from sse.config import Config
from sse.errors import BrokerUnavailable
from sse.io.backlog import Backlog
from sse.io.hooks import ServerState
from sse.io.reset import reset
from sse.metrics import WS, replayed
from sse.protocol.frame import Frame
from sse.protocol.http1 import with_header
from sse.protocol.websocket import (
    TEXT_ENCODING,
    Deflater,
    deflated_frames,
    encode_frame,
    handshake_response,
    text_frames,
)
from sse.pubsub.hub import Resume

__all__ = ["WebSocket", "accept"]

log = logging.getLogger("ssechat")

# A compressor per connection costs memory for every idle client; a small window
# and memory level keep it near 32 KiB (zlib: 2**(bits + 2) + 2**(level + 9)).
_CONTEXT_WINDOW_BITS = 12
_CONTEXT_MEM_LEVEL = 5
# RFC 6455 section 7.4.1: no close frame was received (used in logs only).
_ABNORMAL = 1006
# RFC 6455 section 7.4.2, registered by IANA: the server cannot serve now, come back.
_TRY_AGAIN_LATER = 1013
# Codes of our own (RFC 6455 section 7.4.2: 4000-4999 are the application's):
# renew the credential and reconnect; the conversation was deleted.
_REAUTH = 4001
_ENDED = 4004
# A Close frame's reason fits in 123 bytes; ours are ASCII.
_MAX_REASON_CHARS = 120


class _Phase(Enum):
    """Where the close handshake of RFC 6455 section 7 stands."""

    OPEN = auto()
    CLOSING = auto()  # we sent Close and read on for the client's
    FAILED = auto()  # we sent Close after a protocol error; what follows is dropped
    CLOSED = auto()


class _BoundedDeflate(PerMessageDeflate):
    """permessage-deflate whose inflating stops past the message size limit.

    wsproto inflates what arrives without a bound, so a few kilobytes of a
    compressed frame could grow into gigabytes before we see the message.
    """

    def __init__(self, *, max_message_bytes: int, shared: bool) -> None:
        # Client no context takeover: the inflater is dropped after each message
        # instead of kept (32 KiB window) by every idle connection.
        super().__init__(client_no_context_takeover=True, server_no_context_takeover=shared)
        self._max_message_bytes = max_message_bytes

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        """Inflate one piece of a frame, at most one byte past the limit of a message."""
        # Deliberately overrides wsproto 1.3.2's method, whose state it reads.
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        assert self._decompressor is not None, "wsproto made one for this message"
        try:
            out = self._decompressor.decompress(data, self._max_message_bytes + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if self._decompressor.unconsumed_tail or len(out) > self._max_message_bytes:
            return CloseReason.MESSAGE_TOO_BIG
        return out


def _extensions(config: Config) -> list[Extension]:
    if config.ws_compression == "off":
        return []
    shared = config.ws_compression == "shared"
    return [_BoundedDeflate(max_message_bytes=config.ws_max_message_bytes, shared=shared)]


def _encoder(extensions: list[Extension]) -> tuple[str, Callable[[Frame], bytes], str]:
    """How this connection frames events: cache key, encoder, and a name for the log."""
    deflate = next((e for e in extensions if isinstance(e, PerMessageDeflate)), None)
    if deflate is None or not deflate.enabled():
        return TEXT_ENCODING, text_frames, "off"
    bits = deflate.server_max_window_bits
    if deflate.server_no_context_takeover:
        # Either we asked for it ("shared") or the client did (RFC 7692 section
        # 7.1.1.1): every message stands alone, so its bytes can be shared.
        return f"ws-deflate-{bits}", partial(deflated_frames, window_bits=bits), "shared"
    # A smaller window than negotiated is always allowed (section 7.1.2.1).
    deflater = Deflater(min(bits, _CONTEXT_WINDOW_BITS), _CONTEXT_MEM_LEVEL)
    # No key is ever cached under "": this connection encodes every frame itself.
    return "", deflater.frames, "per-connection"


def accept(
    server: ServerState,
    transport: asyncio.Transport,
    request: Request,
    opening: OpenSocket,
    *,
    version: str,
    peer: str,
    trailing: bytes,
    write_paused: bool,
    request_id: bytes = b"",
) -> Reply | WebSocket:
    """Answer the handshake with 101 and take the transport over, or say why not."""
    config = server.config
    if server.draining:
        return json_reply(503, {"error": "the server is shutting down"})
    if version != "1.1":
        # RFC 6455 section 4.1: the opening handshake is HTTP/1.1 or later.
        return json_reply(400, {"error": "a WebSocket handshake needs HTTP/1.1"})
    # Deliberately not wsproto's own handshake (WSConnection.initiate_upgrade_connection
    # and AcceptConnection): it parses the request again through two more h11
    # connections, 150 us a socket, twenty times all the rest of opening one. h11
    # has parsed it, check_handshake has checked it (RFC 6455 section 4.2.1), so we
    # write the 101 ourselves and give wsproto the connection from its first frame.
    extensions = _extensions(config)
    offers = request.headers.get("sec-websocket-extensions", "")
    agreed = None
    if extensions and offers:
        try:
            # wsproto answers the client's permessage-deflate offer (RFC 7692 section 5).
            agreed = server_extensions_handshake(
                [offer.strip() for offer in offers.split(",") if offer.strip()], extensions
            )
        except ValueError as exc:  # a parameter that is not a number
            return json_reply(400, {"error": f"bad Sec-WebSocket-Extensions: {exc}"})
    head = handshake_response(request.headers["sec-websocket-key"], agreed)
    if request_id:  # checked by sse.io.http, as for every other response
        head = with_header(head, b"x-request-id", request_id)
    # Only the extensions the client agreed to are enabled; wsproto drops the rest.
    conn = Connection(ConnectionType.SERVER, extensions)
    encoding, encode, compression = _encoder(extensions)
    sock = WebSocket(
        server,
        transport,
        conn,
        opening,
        peer=peer,
        encoding=encoding,
        encode=encode,
        write_paused=write_paused,
    )
    # The broker subscribes and reads the history as for an event stream: the
    # replay and the live events neither overlap nor leave a hole.
    attached = server.attach(opening.topic, sock.key, sock, opening.last_event_id)
    server.add_socket(sock)
    transport.set_protocol(sock)
    opened = partial(_opened, server, sock, head, opening, compression, trailing)
    if isinstance(attached, Resume):
        opened(attached)
    else:
        # Redis reads the history over the network; nothing is read from the
        # client until it has (its commands come after its replay and join).
        transport.pause_reading()
        server.spawn(_attach(sock, head, attached, opened))
    return sock


async def _attach(
    sock: WebSocket, head: bytes, attached: Awaitable[Resume], opened: Callable[[Resume], None]
) -> None:
    try:
        resume = await attached
    except Exception as exc:
        if sock.closed:
            return
        if isinstance(exc, BrokerUnavailable):
            log.warning("websocket %s not opened: %s", sock.key, exc)
        else:
            log.exception("websocket %s not opened", sock.key)
        sock.start(head, [])
        sock.close(_TRY_AGAIN_LATER, "events are unavailable now; try again later")
        return
    if not sock.closed:  # else the client left while the history was read
        opened(resume)


def _opened(
    server: ServerState,
    sock: WebSocket,
    head: bytes,
    opening: OpenSocket,
    compression: str,
    trailing: bytes,
    resume: Resume,
) -> None:
    # As for an event stream: live events that came while it attached are in the resume.
    replay = [sock.encode(f) for f in resume.replay()]
    resumed = resume.note(opening.last_event_id)
    sizes = [len(f.raw) for f in resume.replay()]
    replayed(WS, sizes, opening.last_event_id is not None, resume.gap is not None)
    sock.start(head, replay)
    log.info(
        "websocket %s open for %s topic=%s compression=%s%s",
        sock.key,
        sock.peer,
        opening.topic,
        compression,
        resumed,
    )
    if opening.announce is not None:
        server.publish_soon(opening.topic, opening.announce)
    # Only now what the client sent along with its handshake: its first message
    # comes after its own join, as it would had it waited for the 101.
    if opening.refused is not None:
        # Over a cap: a WebSocket client reads close codes, not statuses.
        sock.close(_TRY_AGAIN_LATER, opening.refused[:_MAX_REASON_CHARS])
        return
    if trailing:
        sock.data_received(trailing)
    if server.draining:
        sock.shutdown()


class WebSocket(Backlog, asyncio.Protocol):
    """One upgraded connection: a `Sink` of frames, and a reader of client commands.

    Flow control is the event stream's: while the transport is paused, frames
    wait in `_pending`; past `backlog_limit_bytes` the connection is aborted, and
    the client reconnects with `?last_event_id=` to be replayed what it missed.
    """

    # How the hub tells WebSockets from event streams in what a broadcast sends.
    metric_transport = WS

    __slots__ = (
        "_busy",
        "_claim",
        "_close_code",
        "_close_reason",
        "_commands",
        "_config",
        "_conn",
        "_encode",
        "_encoding",
        "_expiry",
        "_message",
        "_message_binary",
        "_message_bytes",
        "_peer",
        "_phase",
        "_server",
        "_timer",
        "key",
        "opened_at",
        "replayed",
        "topic",
    )

    def __init__(
        self,
        server: ServerState,
        transport: asyncio.Transport,
        conn: Connection,
        opening: OpenSocket,
        *,
        peer: str,
        encoding: str,
        encode: Callable[[Frame], bytes],
        write_paused: bool,
    ) -> None:
        super().__init__(transport, server.config.backlog_limit_bytes, paused=write_paused)
        self._server = server
        self._config = server.config
        self._commands = opening.commands
        self._conn = conn
        self._peer = peer
        self._encoding = encoding
        self._encode = encode
        self._phase = _Phase.OPEN
        self._timer: asyncio.TimerHandle | None = None
        self._claim = opening.claim
        self._expiry: asyncio.TimerHandle | None = None
        if opening.expires_at is not None:
            # The credential it was opened with runs out: the page renews and reconnects.
            delay_s = max(0.0, opening.expires_at - time.time())
            self._expiry = asyncio.get_running_loop().call_later(
                delay_s, self.end, "reauth", "the credential expired"
            )
        self._message: list[str] = []
        self._message_bytes = 0
        self._message_binary = False
        self._busy = False  # a command is being carried out; later ones wait
        self._close_code = _ABNORMAL
        self._close_reason = "connection lost"
        self.key: UUID = uuid4()
        self.topic = opening.topic
        self.replayed = 0
        self.opened_at = time.monotonic()

    def start(self, head: bytes, replay: list[bytes]) -> None:
        """Write the 101 response and the replay, and start reading."""
        self.replayed = len(replay)
        self._begin(head, replay)
        self._arm(self._config.ws_ping_interval_s, self._ping)
        self._transport.resume_reading()  # h11's side paused it while the app worked

    # -- the sink ------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the connection is gone (or going, with no more events for it)."""
        return self._phase is _Phase.CLOSED

    @property
    def peer(self) -> str:
        """The client's address, for logs."""
        return self._peer

    def encode(self, frame: Frame) -> bytes:
        """`frame`'s events as this connection's WebSocket messages (shared per encoding)."""
        return frame.encodings.get(self._encoding) or self._encode(frame)

    def push(self, frame: Frame) -> None:
        """Write one frame's events now, or queue them while the client is behind."""
        data = frame.encodings.get(self._encoding) or self._encode(frame)
        if not self._paused and not self._pending:
            self._write(data)
            return
        self._enqueue(data)

    def _send(self, data: bytes) -> None:
        if self._phase is _Phase.OPEN or self._phase is _Phase.CLOSING:
            super()._send(data)

    def heartbeat(self) -> None:
        """Nothing: a WebSocket keeps itself alive with pings (see `_ping`)."""

    # -- asyncio callbacks ---------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Feed wsproto and act on the frames it completes."""
        if self._phase is _Phase.OPEN or self._phase is _Phase.CLOSING:
            self._conn.receive_data(data)
            self._process()
        # FAILED: the parser gave up on this peer; CLOSED: nothing is read any more.

    def eof_received(self) -> bool:
        """The client closed its side: close ours (RFC 6455 section 7.1.1)."""
        if self._phase is _Phase.OPEN:
            self._close_reason = "client closed the connection without a Close frame"
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """The one exit path: unsubscribe, cancel timers, forget the connection."""
        self._cancel_timer()
        if self._expiry is not None:
            self._expiry.cancel()
        if self._claim is not None:
            self._claim.release()
        self._phase = _Phase.CLOSED
        self._drop_backlog()
        server = self._server
        server.drop_socket(self, self._close_reason)
        log.info(
            "websocket %s closed for %s after %.1fs (%d replayed): code=%d %s",
            self.key,
            self._peer,
            time.monotonic() - self.opened_at,
            self.replayed,
            self._close_code,
            self._close_reason,
        )
        server.connection_closed(self)

    def pause_writing(self) -> None:
        """The client reads slower than we write: queue from now on."""
        self.pause()

    def resume_writing(self) -> None:
        """The client caught up: write what waits."""
        self.resume()

    # -- what the client sends -------------------------------------------------

    def _process(self) -> None:
        conn = self._conn
        for event in conn.events():
            if isinstance(event, TextMessage | BytesMessage):
                self._on_data(event)
            elif isinstance(event, Ping):
                # RFC 6455 section 5.5.3: answer with the same payload, as soon as we can.
                if conn.state is ConnectionState.OPEN:
                    self._send(conn.send(event.response()))
            elif isinstance(event, Pong):
                self._on_pong()
            elif isinstance(event, CloseConnection):
                self._on_close(event)
            if self._busy or (self._phase is not _Phase.OPEN and self._phase is not _Phase.CLOSING):
                return

    def _on_data(self, event: TextMessage | BytesMessage) -> None:
        if self._phase is not _Phase.OPEN:
            return  # RFC 6455 section 5.5.1: data after our Close is discarded
        limit = self._config.ws_max_message_bytes
        if isinstance(event, TextMessage):
            self._message_bytes += len(event.data.encode())
            self._message.append(event.data)
        else:
            self._message_bytes += len(event.data)
            self._message_binary = True
        # Counted as the pieces arrive, so a huge message is never held whole.
        if self._message_bytes > limit:
            self._fail(CloseReason.MESSAGE_TOO_BIG, f"message over the limit of {limit} bytes")
            return
        if not event.message_finished:
            return
        text = "".join(self._message)
        binary = self._message_binary
        self._message.clear()
        self._message_bytes = 0
        self._message_binary = False
        if binary:
            self._reply(error(400, "send JSON in text messages, not binary ones"))
            return
        self._command(text)

    def _command(self, text: str) -> None:
        # The app decides what the message means (sse.app.commands); we carry it.
        try:
            answer = self._commands(text)
        except Exception:
            self._internal_error()
            return
        if isinstance(answer, bytes):
            self._reply(answer)
            return
        # The answer waits on the broker or the database: read nothing more
        # meanwhile, so that commands are answered in the order they came.
        self._busy = True
        self._transport.pause_reading()
        self._server.spawn(self._reply_when_ready(answer))

    async def _reply_when_ready(self, answer: Awaitable[bytes]) -> None:
        try:
            self._reply(await answer)
        except Exception:
            self._internal_error()
        self._done_busy()

    def _internal_error(self) -> None:
        # Our bug, not the client's: log it once with its traceback; keep the socket.
        log.exception("error answering a message on %s from %s", self.topic, self._peer)
        self._reply(error(500, "internal server error"))

    def _done_busy(self) -> None:
        # The command is answered: read and carry out the next ones.
        self._busy = False
        if self._phase is _Phase.OPEN or self._phase is _Phase.CLOSING:
            self._transport.resume_reading()
            self._process()

    def _reply(self, payload: bytes) -> None:
        # Uncompressed even with permessage-deflate: RFC 7692 section 6 lets a
        # sender choose per message, and these are small.
        if self._phase is _Phase.OPEN:
            self._send(encode_frame(payload))

    # -- keepalive -------------------------------------------------------------

    def _ping(self) -> None:
        self._timer = None
        if self._phase is not _Phase.OPEN:
            return
        # RFC 6455 section 5.5.2: a ping may serve as a keepalive; its pong tells
        # us the client still reads.
        self._send(self._conn.send(Ping()))
        self._arm(self._config.ws_ping_timeout_s, self._pong_timeout)

    def _on_pong(self) -> None:
        # An unsolicited pong (section 5.5.3) is allowed and proves as much.
        if self._phase is _Phase.OPEN:
            self._arm(self._config.ws_ping_interval_s, self._ping)

    def _pong_timeout(self) -> None:
        self._timer = None
        if self._phase is not _Phase.OPEN:
            return
        # The client is gone or stuck: waiting for its Close would wait as long
        # again. Say why (1011, best effort), and cut the connection.
        self._close_code = CloseReason.INTERNAL_ERROR
        self._close_reason = "no pong within the ping timeout"
        self._write_close(CloseReason.INTERNAL_ERROR, "ping timeout")
        self._phase = _Phase.CLOSED
        self._transport.abort()

    # -- closing -----------------------------------------------------------------

    def _on_close(self, event: CloseConnection) -> None:
        conn = self._conn
        if conn.state is ConnectionState.REMOTE_CLOSING:
            # The client closes: answer with the same code, then close TCP first,
            # as the server should (RFC 6455 sections 5.5.1 and 7.1.1).
            self._close_code = event.code
            self._close_reason = f"client closed: {event.reason or '-'}"
            self._write_close(event.code, event.reason)
            self._end()
        elif conn.state is ConnectionState.CLOSED:
            # The client's answer to our Close: the handshake is complete.
            self._end()
        else:
            # wsproto failed to parse the client's frames; the event carries the code
            # to fail the connection with (1002, 1007, 1009: section 7.4.1).
            reason = event.reason or "protocol error"
            if event.code == CloseReason.MESSAGE_TOO_BIG:  # from _BoundedDeflate
                limit = self._config.ws_max_message_bytes
                reason = f"message over the limit of {limit} bytes once inflated"
            self._fail(event.code, reason)

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 section 7.1.7): Close, then stop reading frames."""
        if self._phase is not _Phase.OPEN:
            self._end()
            return
        self._close_code = code
        self._close_reason = reason
        self._write_close(code, reason)
        self._phase = _Phase.FAILED
        # We read no further frames, so we cannot see the client's Close: a FIN
        # after ours tells it to hang up, and we drain its bytes until it does,
        # so that unread input does not make the kernel reset the connection and
        # destroy our Close before the client reads it.
        if self._transport.can_write_eof():
            self._transport.write_eof()
        self._arm(self._config.ws_ping_timeout_s, self._on_close_timeout)

    def close(self, code: int, reason: str) -> None:
        """Start the close handshake (RFC 6455 section 7.1.2); the client answers, we hang up."""
        if self._phase is not _Phase.OPEN:
            return
        self._close_code = code
        self._close_reason = reason
        self._write_close(code, reason)
        self._phase = _Phase.CLOSING
        self._arm(self._config.ws_ping_timeout_s, self._on_close_timeout)

    def _write_close(self, code: int, reason: str | None) -> None:
        # No more events for this client: what still waits is dropped (it resumes
        # by id), and the Close goes straight after what the transport holds.
        self._server.detach(self.topic, self.key)
        self._drop_backlog()
        if self._conn.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self._write(self._conn.send(CloseConnection(code, reason)))

    def _end(self) -> None:
        self._cancel_timer()
        self._phase = _Phase.CLOSED
        self._transport.close()
        # close() waits until the buffer is written; a client that stopped
        # reading would keep it forever.
        self._arm(self._config.ws_ping_timeout_s, self._transport.abort)

    def _on_close_timeout(self) -> None:
        self._timer = None
        self._close_reason += "; the client did not finish the close handshake in time"
        self._phase = _Phase.CLOSED
        self._transport.abort()

    @property
    def topics(self) -> tuple[str, ...]:
        """Its one topic."""
        return (self.topic,)

    def end(self, event: str, data: str) -> None:
        """Close for a reason of the app's: `reauth` (4001) or the topic `deleted` (4004)."""
        code = _REAUTH if event == "reauth" else _ENDED
        self.close(code, f"{event}: {data}"[:_MAX_REASON_CHARS])

    def shutdown(self) -> None:
        """The server is draining: close with 1001 (going away, RFC 6455 section 7.4.1)."""
        self.close(CloseReason.GOING_AWAY, "server shutting down")

    def abort_stream(self, reason: str) -> None:
        """Drop the connection at once, unsent bytes and all (its client resumes by id)."""
        if self._phase is not _Phase.CLOSED:
            self._close_code = _ABNORMAL
            self._close_reason = reason
        # Now, not when the loop reports the loss: no more pushes to a dead transport.
        self._server.detach(self.topic, self.key)
        self._cancel_timer()
        self._phase = _Phase.CLOSED
        reset(self._transport)

    # -- timers --------------------------------------------------------------------

    def _arm(self, delay_s: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay_s, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
