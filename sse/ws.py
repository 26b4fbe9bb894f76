"""The WebSocket edge: `GET /ws` and `GET /conversations/{id}/ws`, spoken with wsproto.

A WebSocket client gets the same events as an event stream on the same topic,
one JSON text message per event, and may send commands over the same socket.
`sse.http` parses the upgrade request with h11, the routes here decide whether
it may be upgraded, and `accept` takes the transport over: wsproto reads what
the client sends, while the events we broadcast are framed once for everyone
by `sse.ws_protocol`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from enum import Enum, auto
from functools import partial
from typing import TYPE_CHECKING
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

from sse.app import (
    JOIN_ANNOUNCEMENT,
    ROOM,
    OpenSocket,
    Reply,
    Request,
    Route,
    json_reply,
)
from sse.broker import BrokerUnavailable
from sse.chat import ChatService, topic_of
from sse.config import Config
from sse.errors import ClientError, StoreUnavailable
from sse.hub import Frame, Resume
from sse.wire import EncodeError
from sse.ws_protocol import (
    TEXT_ENCODING,
    Deflater,
    PostCommand,
    SendCommand,
    ack,
    check_handshake,
    deflated_frames,
    encode_frame,
    error,
    handshake_response,
    parse_command,
    text_frames,
)

if TYPE_CHECKING:
    from sse.http import Server

__all__ = ["WebSocket", "accept", "ws_routes"]

log = logging.getLogger("ssechat")

# A compressor per connection costs memory for every idle client; a small window
# and memory level keep it near 32 KiB (zlib: 2**(bits + 2) + 2**(level + 9)).
_CONTEXT_WINDOW_BITS = 12
_CONTEXT_MEM_LEVEL = 5
# RFC 6455 section 7.4.1: no close frame was received (used in logs only).
_ABNORMAL = 1006
# RFC 6455 section 7.4.2, registered by IANA: the server cannot serve now, come back.
_TRY_AGAIN_LATER = 1013


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


def _conversation_id(params: Mapping[str, str]) -> str:
    """The id from the path, in canonical form.

    Raises:
        ClientError: 404 when it is not a UUID (so it cannot name a conversation).
    """
    try:
        return str(uuid.UUID(params["id"]))
    except ValueError:
        raise ClientError(404, f"no conversation {params['id']}") from None


def _last_event_id(req: Request) -> str | None:
    # A browser's WebSocket cannot send headers: the query parameter is its way.
    return req.headers.get("last-event-id", req.query.get("last_event_id")) or None


def ws_routes(service: ChatService, config: Config) -> list[Route]:
    """The WebSocket routes, for `App(extra_routes=...)`."""

    def room(req: Request, body: bytes, params: Mapping[str, str]) -> Reply | OpenSocket:
        refused = check_handshake(req, config.cors_origins)
        if refused is not None:
            return refused
        last_id = _last_event_id(req)
        # Like an event stream: a resuming client is a returning user, not a new one.
        announce = JOIN_ANNOUNCEMENT if config.join_announcement and not last_id else None
        return OpenSocket(ROOM, last_id, announce)

    async def conversation(
        req: Request, body: bytes, params: Mapping[str, str]
    ) -> Reply | OpenSocket:
        refused = check_handshake(req, config.cors_origins)
        if refused is not None:
            return refused
        conversation_id = _conversation_id(params)
        if not await service.store.exists(conversation_id):
            raise ClientError(404, f"no conversation {conversation_id}")
        return OpenSocket(
            topic_of(conversation_id), _last_event_id(req), conversation_id=conversation_id
        )

    return [
        Route("/ws", {"GET": room}),
        Route("/conversations/{id}/ws", {"GET": conversation}),
    ]


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
    server: Server,
    transport: asyncio.Transport,
    request: Request,
    opening: OpenSocket,
    *,
    version: str,
    peer: str,
    trailing: bytes,
    write_paused: bool,
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
    attached = server.broker.attach(opening.topic, sock.key, sock, opening.last_event_id)
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
    server: Server,
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
    if trailing:
        sock.data_received(trailing)
    if server.draining:
        sock.shutdown()


class WebSocket(asyncio.Protocol):
    """One upgraded connection: a `Sink` of frames, and a reader of client commands.

    Flow control is the event stream's: while the transport is paused, frames
    wait in `_pending`; past `backlog_limit_bytes` the connection is aborted, and
    the client reconnects with `?last_event_id=` to be replayed what it missed.
    """

    __slots__ = (
        "_busy",
        "_close_code",
        "_close_reason",
        "_config",
        "_conn",
        "_encode",
        "_encoding",
        "_limit_bytes",
        "_message",
        "_message_binary",
        "_message_bytes",
        "_paused",
        "_peer",
        "_pending",
        "_pending_bytes",
        "_phase",
        "_server",
        "_timer",
        "_transport",
        "_write",
        "conversation_id",
        "key",
        "opened_at",
        "replayed",
        "topic",
    )

    def __init__(
        self,
        server: Server,
        transport: asyncio.Transport,
        conn: Connection,
        opening: OpenSocket,
        *,
        peer: str,
        encoding: str,
        encode: Callable[[Frame], bytes],
        write_paused: bool,
    ) -> None:
        self._server = server
        self._config = server.config
        self._transport = transport
        self._write = transport.write
        self._conn = conn
        self._peer = peer
        self._encoding = encoding
        self._encode = encode
        self._phase = _Phase.OPEN
        self._paused = write_paused
        # Made when first needed: most sockets never fall behind, and an empty
        # deque is the size of the rest of this object.
        self._pending: deque[bytes] | None = None
        self._pending_bytes = 0
        self._limit_bytes = server.config.backlog_limit_bytes
        self._timer: asyncio.TimerHandle | None = None
        self._message: list[str] = []
        self._message_bytes = 0
        self._message_binary = False
        self._busy = False  # a command is being carried out; later ones wait
        self._close_code = _ABNORMAL
        self._close_reason = "connection lost"
        self.key: UUID = uuid4()
        self.topic = opening.topic
        self.conversation_id = opening.conversation_id
        self.replayed = 0
        self.opened_at = time.monotonic()

    def start(self, head: bytes, replay: list[bytes]) -> None:
        """Write the 101 response and the replay, and start reading."""
        self._write(head)
        replay_bytes = sum(len(b) for b in replay)
        # The replay is allowed on top of the live limit: --max-replay-bytes bounds it.
        self._limit_bytes += replay_bytes
        if replay:
            self._pending = deque(replay)
        self._pending_bytes = replay_bytes
        self.replayed = len(replay)
        self._drain()
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
        if self._phase is not _Phase.OPEN and self._phase is not _Phase.CLOSING:
            return
        if not self._paused and not self._pending:
            self._write(data)
            return
        self._enqueue(data)

    def _enqueue(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = deque()
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes + self._transport.get_write_buffer_size() > self._limit_bytes:
            self.abort_stream("slow client: backlog over the limit")

    def _drain(self) -> None:
        pending = self._pending
        while pending and not self._paused:
            data = pending.popleft()
            self._pending_bytes -= len(data)
            self._write(data)  # may call pause_writing() synchronously

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
        self._phase = _Phase.CLOSED
        self._pending = None
        server = self._server
        server.drop_socket(self)
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
        self._paused = True

    def resume_writing(self) -> None:
        """The client caught up: write what waits."""
        self._paused = False
        self._drain()

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
        config = self._config
        try:
            command = parse_command(
                text,
                conversation=self.conversation_id is not None,
                max_content_chars=config.max_content_chars,
            )
        except ClientError as exc:
            self._reply(error(exc.status, exc.message))
            return
        if isinstance(command, SendCommand):
            try:
                published = self._server.broker.publish(ROOM, command.message)
            except EncodeError as exc:  # require_text should make this unreachable
                self._reply(error(400, f'"message" cannot be sent: {exc}'))
                return
            if isinstance(published, str):
                self._reply(ack(id=published))
                return
            # Redis: acknowledged once it has the event, commands still in order.
            self._busy = True
            self._transport.pause_reading()
            self._server.spawn(self._send_when_published(published))
            return
        # Storing the message waits on the database: read nothing more meanwhile,
        # so that commands are answered in the order they came.
        self._busy = True
        self._transport.pause_reading()
        self._server.spawn(self._post(command))

    async def _send_when_published(self, published: Awaitable[str]) -> None:
        try:
            self._reply(ack(id=await published))
        except EncodeError as exc:
            self._reply(error(400, f'"message" cannot be sent: {exc}'))
        except BrokerUnavailable as exc:
            self._reply(error(503, f"the message was not sent: {exc}; try again"))
        self._done_busy()

    async def _post(self, command: PostCommand) -> None:
        conversation_id = self.conversation_id
        assert conversation_id is not None, "only a conversation's socket posts"
        try:
            user, reply_id = await self._server.chat.post(conversation_id, command.content)
        except ClientError as exc:
            self._reply(error(exc.status, exc.message))
        except StoreUnavailable as exc:  # the database's failure: no traceback
            self._reply(error(503, f"the conversations cannot be stored or read now: {exc}"))
        except Exception:
            # Our bug, not the client's: log it once with its traceback; keep the socket.
            log.exception("error posting to %s from %s", conversation_id, self._peer)
            self._reply(error(500, "internal server error"))
        else:
            self._reply(ack(message_id=user.id, reply_id=reply_id))
        self._done_busy()

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
        self._server.broker.detach(self.topic, self.key)
        self._pending = None
        self._pending_bytes = 0
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

    def shutdown(self) -> None:
        """The server is draining: close with 1001 (going away, RFC 6455 section 7.4.1)."""
        self.close(CloseReason.GOING_AWAY, "server shutting down")

    def abort_stream(self, reason: str) -> None:
        """Drop the connection at once, unsent bytes and all (its client resumes by id)."""
        if self._phase is not _Phase.CLOSED:
            self._close_code = _ABNORMAL
            self._close_reason = reason
        # Now, not when the loop reports the loss: no more pushes to a dead transport.
        self._server.broker.detach(self.topic, self.key)
        self._cancel_timer()
        self._phase = _Phase.CLOSED
        self._transport.abort()

    # -- timers --------------------------------------------------------------------

    def _arm(self, delay_s: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay_s, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
