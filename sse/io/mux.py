"""One multiplexed event stream (`GET /stream`): several topics, one connection, one write a turn.

Each channel subscribes through its own small sink (`_ChannelSink`) under the
stream's one key. The hub pushes each topic's batch of a flush to it; the
stream tags the events (`sse.protocol.multiplex`, built once per frame and
shared by every stream of that channel) and adds its composite ids. With one
channel the id depends on the event alone, so the whole frame is shared and
written at once, as `/events` does. With more, what the topics of one loop
iteration brought is collected and written by `MuxWriter` as one chunk: one
write per stream per iteration, however many of its channels had events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

from sse.io.backlog import Backlog
from sse.io.hooks import Collector, ServerState, WritesOut
from sse.protocol.frame import Frame
from sse.protocol.http1 import LAST_CHUNK, chunk
from sse.protocol.multiplex import (
    ONE_CHUNKED,
    ONE_RAW,
    ChannelIds,
    fingerprint,
    one_channel,
    parse_composite,
)
from sse.protocol.sse import Event, encode, encode_comment
from sse.pubsub.broker import settle
from sse.pubsub.hub import Resume, Sink

__all__ = ["MuxResume", "MuxStream", "MuxWriter", "attach_all"]

# What a channel resumes from when the composite id holds nothing usable for it:
# at most this much of the client's id is quoted back in its `gap` notice.
_QUOTED_ID_CHARS = 100


class MuxWriter:
    """Writes out, once a loop iteration, what each multiplexed stream collected.

    One for the server: a flush of the hub marks the streams it pushed to, and
    one `call_soon` (not one per stream) writes them all after it.
    """

    __slots__ = ("_dirty", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[WritesOut] = []

    def mark(self, stream: WritesOut) -> None:
        """Have `stream` write what it collected, after the current callback."""
        if not self._dirty:
            self._loop.call_soon(self._drain)
        self._dirty.append(stream)

    def _drain(self) -> None:
        dirty, self._dirty = self._dirty, []
        for stream in dirty:
            stream.write_out()


class _ChannelSink:
    """The hub's sink for one channel of a multiplexed stream."""

    __slots__ = ("_index", "_stream")

    def __init__(self, stream: MuxStream, index: int) -> None:
        self._stream = stream
        self._index = index

    def push(self, frame: Frame) -> None:
        self._stream.take(self._index, frame)


@dataclass(frozen=True, slots=True)
class MuxResume:
    """What each channel must receive first, and where each starts."""

    resumes: tuple[Resume, ...]
    positions: tuple[str, ...]

    def sizes(self) -> list[int]:
        """The wire size of every replayed event, for the metrics."""
        return [len(f.raw) for r in self.resumes for f in r.replay()]

    @property
    def gaps(self) -> int:
        """How many channels could not be resumed exactly."""
        return sum(r.gap is not None for r in self.resumes)

    def note(self, last_event_id: str | None) -> str:
        """What the log line of an opening stream says about its resuming."""
        if last_event_id is None:
            return ""
        note = f" resume={last_event_id[:_QUOTED_ID_CHARS]!r} replay={len(self.sizes())}"
        return note + f" gaps={self.gaps}" if self.gaps else note


class MuxStream(Backlog):
    """A `Sink` per channel, writing their tagged frames to one HTTP response."""

    __slots__ = (
        "_abort",
        "_chunked",
        "_detach",
        "_fast",
        "_finish",
        "_held",
        "_held_bytes",
        "_ids",
        "_live",
        "_one",
        "_out",
        "_writer",
        "channels",
        "key",
        "opened_at",
        "replayed",
        "sinks",
        "topics",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        key: UUID,
        channels: Sequence[tuple[str, str]],
        *,
        chunked: bool,
        limit_bytes: int,
        writer: Collector,
        abort: Callable[[str], None],
        finish: Callable[[str, bytes], None],
        detach: Callable[[str, UUID], None],
    ) -> None:
        super().__init__(transport, limit_bytes, paused=False)
        self._abort = abort
        self._finish = finish
        self._detach = detach
        self._chunked = chunked
        self._writer = writer
        self.key = key
        self.channels = tuple(name for name, _ in channels)
        self.topics = tuple(topic for _, topic in channels)
        # One channel: the composite id is `<fingerprint>.<the event's id>`, and
        # the stream is its own sink (`push`), so a broadcast costs what /events'
        # does plus one dict lookup.
        one = len(channels) == 1
        self.sinks: tuple[Sink, ...] = (
            (self,) if one else tuple(_ChannelSink(self, i) for i in range(len(channels)))
        )
        self._one = fingerprint(self.channels) + "." if one else ""
        # The key of `Frame.encodings` that `push` writes as it is; "" (never a
        # key) until the stream is started, and once its channel ended.
        self._fast = ""
        self._ids = ChannelIds(self.channels, ["" for _ in channels])
        # Frames pushed before `start` (channels attaching one after another).
        self._held: list[tuple[int, Frame]] | None = []
        self._held_bytes = 0
        self._out: list[bytes] = []
        self._live = [True] * len(channels)
        self.replayed = 0
        self.opened_at = time.monotonic()

    def start(self, first: bytes, opened: MuxResume) -> None:
        """Write the opening bytes, every channel's replay, then what came meanwhile."""
        pairs = zip(opened.resumes, opened.positions, strict=True)
        ids = self._ids = ChannelIds(
            self.channels, [r.gap.id if r.gap is not None else p for r, p in pairs]
        )
        replay: list[bytes] = []
        for index, resume in enumerate(opened.resumes):
            for frame in resume.replay():
                replay.append(ids.encode(index, frame, self.channels[index]))
        held, self._held = self._held or [], None
        replay.extend(ids.encode(i, frame, self.channels[i]) for i, frame in held)
        self.replayed = len(opened.sizes())
        if self._one and self._live[0]:
            self._fast = ONE_CHUNKED if self._chunked else ONE_RAW
        # One chunk for all of it: the replay is bounded by --max-replay-bytes a channel.
        body = b"".join(replay)
        self._begin(first, [self.frame_bytes(body)] if body else [])

    def take(self, index: int, frame: Frame) -> None:
        """A frame of channel `index` from the hub."""
        if self._held is not None:
            self._held.append((index, frame))
            self._held_bytes += len(frame.raw)
            if self._held_bytes > self._limit_bytes:
                self.abort_stream("slow start: held events over the limit")
            return
        if not self._live[index]:
            return
        if self._one:
            data = one_channel(frame, self.channels[0], self._one, chunked=self._chunked)
            if not self._paused and not self._pending:
                self._write(data)
                return
            self._enqueue(data)
            return
        if not self._out:
            self._writer.mark(self)
        self._out.append(self._ids.encode(index, frame, self.channels[index]))

    def write_out(self) -> None:
        """Write what this iteration's frames brought, as one chunk."""
        out = self._out
        if not out or self._transport.is_closing():
            out.clear()
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._send(chunk(data) if self._chunked else data)

    def push(self, frame: Frame) -> None:
        """The sink of a one-channel stream: the hot path of a broadcast."""
        data = frame.encodings.get(self._fast)
        if data is None:  # the first stream of this frame builds it; or not started
            self.take(0, frame)
            return
        if not self._paused and not self._pending:
            self._write(data)
            return
        self._enqueue(data)

    def abort_stream(self, reason: str) -> None:
        """Drop the stream at once (its client resumes by id)."""
        self._abort(reason)

    def end(self, event: str, data: str) -> None:
        """End the whole stream with one last `event` carrying `data`."""
        self._finish(event, encode(Event(data, event=event)))

    def end_channel(self, topic: str, event: str, data: str) -> None:
        """Tell that the app ended `topic` (a conversation deleted) and stop carrying it.

        The stream goes on with its other channels; with none left it ends.
        """
        for index, mine in enumerate(self.topics):
            if mine != topic or not self._live[index]:
                continue
            self._live[index] = False
            self._fast = ""
            self._detach(topic, self.key)
            notice = Frame.of(Event(data, event=event), 0)
            if not any(self._live):
                self._finish(event, self._ids.encode(index, notice, self.channels[index]))
                return
            if self._held is None:
                # Behind what this iteration collected, so the order holds.
                if not self._out:
                    self._writer.mark(self)
                self._out.append(self._ids.encode(index, notice, self.channels[index]))

    def last_bytes(self) -> bytes:
        """What ends the body: the last chunk, or nothing for HTTP/1.0."""
        return LAST_CHUNK if self._chunked else b""

    def frame_bytes(self, raw: bytes) -> bytes:
        """`raw` in this stream's body framing."""
        return chunk(raw) if self._chunked else raw

    def heartbeat(self) -> None:
        """Write a comment line, unless the client is behind anyway."""
        if not self._paused and not self._pending:
            self._write(self.frame_bytes(encode_comment()))


def attach_all(
    server: ServerState, stream: MuxStream, last_event_id: str | None
) -> MuxResume | Awaitable[MuxResume]:
    """Subscribe every channel of `stream`: each one's replay, and where each starts.

    Without a Last-Event-ID a channel starts at its newest event, read before
    it is attached and then resumed from: the replay covers whatever came in
    between, so a client that reconnects before its first event of a channel
    still misses none of it. In one process both answers come at once.
    """
    wanted = parse_composite(last_event_id, stream.channels)
    quoted = (last_event_id or "")[:_QUOTED_ID_CHARS]
    resumes: list[Resume] = []
    positions: list[str] = []
    for index, topic in enumerate(stream.topics):
        sink = stream.sinks[index]
        if wanted is None:
            start = server.last_id(topic)
            if not isinstance(start, str):
                _discard(start)
                break
            attached = server.attach(topic, stream.key, sink, None)
        else:
            start = wanted[index] or quoted
            attached = server.attach(topic, stream.key, sink, start)
        if not isinstance(attached, Resume):
            # Awaited by `_attach_rest`, which starts with this channel again: an
            # awaitable that is never awaited subscribes nothing.
            _discard(attached)
            break
        resumes.append(attached)
        positions.append(start)
    else:
        return MuxResume(tuple(resumes), tuple(positions))
    return _attach_rest(server, stream, wanted, quoted, resumes, positions)


def _discard(pending: object) -> None:
    # A coroutine not yet started has done nothing (a Redis attach subscribes
    # only once it runs): closed, it is not reported as never awaited.
    close = getattr(pending, "close", None)
    if callable(close):
        close()


async def _attach_rest(
    server: ServerState,
    stream: MuxStream,
    wanted: list[str | None] | None,
    quoted: str,
    resumes: list[Resume],
    positions: list[str],
) -> MuxResume:
    async def one(index: int) -> tuple[Resume, str]:
        topic = stream.topics[index]
        sink = stream.sinks[index]
        if wanted is None:
            start = await settle(server.last_id(topic))
        else:
            start = wanted[index] or quoted
        return await settle(server.attach(topic, stream.key, sink, start)), start

    done = len(resumes)
    results = await asyncio.gather(
        *(one(i) for i in range(done, len(stream.topics))), return_exceptions=True
    )
    failed = next((r for r in results if isinstance(r, BaseException)), None)
    if failed is not None:
        for topic in stream.topics:
            server.detach(topic, stream.key)
        raise failed
    for result in results:
        assert not isinstance(result, BaseException)
        resumes.append(result[0])
        positions.append(result[1])
    return MuxResume(tuple(resumes), tuple(positions))
