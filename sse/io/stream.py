"""One open event stream: the `Sink` that writes a topic's frames to its HTTP response."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from uuid import UUID

from sse.io.backlog import Backlog
from sse.protocol.frame import Frame
from sse.protocol.http1 import LAST_CHUNK, chunk
from sse.protocol.sse import Event, encode, encode_comment

__all__ = ["Stream"]


class Stream(Backlog):
    """One open event stream: a `Sink` writing frames straight to its transport.

    Frames that cannot be written now wait in its `Backlog`; past the limit the
    stream is aborted, and its browser resumes with Last-Event-ID.
    """

    __slots__ = ("_abort", "_chunked", "_finish", "key", "opened_at", "replayed", "topic")

    def __init__(
        self,
        transport: asyncio.Transport,
        key: UUID,
        topic: str,
        *,
        chunked: bool,
        limit_bytes: int,
        abort: Callable[[str], None],
        finish: Callable[[str, bytes], None],
    ) -> None:
        super().__init__(transport, limit_bytes, paused=False)
        self._abort = abort
        self._finish = finish
        self._chunked = chunked
        self.key = key
        self.topic = topic
        self.replayed = 0
        self.opened_at = time.monotonic()

    @property
    def topics(self) -> tuple[str, ...]:
        """Its one topic."""
        return (self.topic,)

    def start(self, first: bytes, replay: list[bytes]) -> None:
        """Write the opening bytes, then the replay under flow control."""
        self.replayed = len(replay)
        self._begin(first, replay)

    def push(self, frame: Frame) -> None:
        """Write one frame now, or queue it while the client is behind."""
        # The hot path of a broadcast: keep it to one test and one write.
        data = frame.chunked if self._chunked else frame.raw
        if not self._paused and not self._pending:
            self._write(data)
            return
        self._enqueue(data)

    def abort_stream(self, reason: str) -> None:
        """Drop the stream at once (its client resumes by id)."""
        self._abort(reason)

    def end(self, event: str, data: str) -> None:
        """End the stream with one last `event` (reauth, deleted) carrying `data`."""
        self._finish(event, encode(Event(data, event=event)))

    def last_bytes(self) -> bytes:
        """What ends the body: the last chunk (RFC 9112 section 7.1), or nothing for 1.0."""
        return LAST_CHUNK if self._chunked else b""

    def frame_bytes(self, raw: bytes) -> bytes:
        """`raw` in this stream's body framing."""
        return chunk(raw) if self._chunked else raw

    def frame_data(self, frame: Frame) -> bytes:
        """`frame` in this stream's body framing, as `push` writes it."""
        return frame.chunked if self._chunked else frame.raw

    def heartbeat(self) -> None:
        """Write a comment line, unless the client is behind anyway."""
        if not self._paused and not self._pending:
            self._write(self.frame_bytes(encode_comment()))
