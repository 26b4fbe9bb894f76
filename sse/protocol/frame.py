"""One encoded event as the transports write it: built once per publish, shared by every reader."""

from __future__ import annotations

from dataclasses import dataclass, field

from sse.protocol.http1 import chunk
from sse.protocol.sse import Event, encode

__all__ = ["Frame"]


@dataclass(frozen=True, slots=True)
class Frame:
    """One encoded event, in both framings a stream may need, built once per publish."""

    seq: int
    id: str
    raw: bytes
    chunked: bytes
    # For transports that frame each event on its own (sse.io.websocket sends one WebSocket
    # message per event): the event of a one-event frame, or the one-event frames
    # a batch carries, in order.
    event: Event | None = None
    parts: tuple[Frame, ...] = ()
    # Those transports' encodings of the frame, built on first use and then shared
    # by all their connections: a broadcast encodes once, not once per client, and
    # a batch is the join of its parts' encodings.
    encodings: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, event: Event, seq: int) -> Frame:
        """Encode `event` once, for every reader.

        Raises:
            EncodeError: the event cannot be carried by the event-stream format.
        """
        raw = encode(event)
        # Both framings precomputed here, so each stream's write is a single
        # call with no per-stream work.
        return cls(seq, event.id or "", raw, chunk(raw), event)

    def singles(self) -> tuple[Frame, ...]:
        """The one-event frames this frame carries, in order."""
        return self.parts or (self,)
