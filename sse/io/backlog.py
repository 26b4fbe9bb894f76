"""One slow-client queue for every transport: bytes wait while the socket is full, up to a limit.

While the transport is paused (its buffer is past the high-water mark), what
would be written waits here; when what waits unsent passes the limit, the
connection is aborted. Its client reconnects with its last event id and is
replayed from history, so nothing is lost and nobody else waits.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Backlog"]


class Backlog:
    """The bounded queue of one connection; a base of `Stream` and `WebSocket`.

    Subclasses write their hot path themselves, as `if not self._paused and not
    self._pending: write, else self._enqueue(data)`: one test and one write per
    broadcast, with no method call in between.
    """

    # Slots here and in each subclass: thousands of idle connections each hold one.
    __slots__ = ("_limit_bytes", "_paused", "_pending", "_pending_bytes", "_transport", "_write")

    def __init__(self, transport: asyncio.Transport, limit_bytes: int, *, paused: bool) -> None:
        self._transport = transport
        self._write = transport.write
        self._limit_bytes = limit_bytes
        self._paused = paused
        # Made when first needed: most connections never fall behind, and an empty
        # deque is the size of the rest of the object.
        self._pending: deque[bytes] | None = None
        self._pending_bytes = 0

    def abort_stream(self, reason: str) -> None:
        """Drop the connection at once, unsent bytes and all."""
        raise NotImplementedError

    def _begin(self, first: bytes, replay: list[bytes]) -> None:
        """Write `first` now and the replay under flow control."""
        self._write(first)
        replay_bytes = sum(len(b) for b in replay)
        # The replay is allowed on top of the live limit: --max-replay-bytes bounds it.
        self._limit_bytes += replay_bytes
        if replay:
            self._pending = deque(replay)
        self._pending_bytes = replay_bytes
        self._drain()

    def _enqueue(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = deque()
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes + self._transport.get_write_buffer_size() > self._limit_bytes:
            self.abort_stream("slow client: backlog over the limit")

    def _send(self, data: bytes) -> None:
        """Write now, or queue behind what waits."""
        if not self._paused and not self._pending:
            self._write(data)
        else:
            self._enqueue(data)

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

    def _drop_backlog(self) -> None:
        self._pending = None
        self._pending_bytes = 0
