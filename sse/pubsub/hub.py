"""Fan-out of events to subscribed sinks, with a bounded history for resuming.

Pure: no sockets, no `await`, no clock. The transport layer owns the sinks and
hands the hub an epoch (a token unique to this process's lifetime) so that ids
from before a restart are recognised as foreign instead of being misread.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol
from uuid import UUID

from sse.metrics import SSE, WS
from sse.protocol.frame import Frame
from sse.protocol.http1 import chunk
from sse.protocol.sse import Event

__all__ = ["Hub", "Resume", "Sink"]


class Sink(Protocol):
    """Where a topic's frames go; `push` must not block."""

    def push(self, frame: Frame) -> None:
        """Take one frame for delivery, or drop the subscriber if it cannot keep up."""


@dataclass(frozen=True, slots=True)
class Resume:
    """What a reconnecting subscriber must receive before live events."""

    frames: tuple[Frame, ...]
    gap: Frame | None = None

    def replay(self) -> tuple[Frame, ...]:
        """Everything to send before live events: the gap notice first, if any."""
        return self.frames if self.gap is None else (self.gap, *self.frames)

    def note(self, last_event_id: str | None) -> str:
        """What the log line of an opening stream says about its resuming."""
        if last_event_id is None:
            return ""
        # repr: the id comes from the client (a query parameter may hold a
        # newline), and must not be able to forge a log line.
        note = f" resume={last_event_id!r} replay={len(self.frames)}"
        return note + " gap" if self.gap is not None else note


@dataclass(slots=True)
class _Topic:
    history: deque[Frame]
    first_seq: int  # ids below it belong to an earlier, evicted life of this topic
    next_seq: int
    history_bytes: int = 0  # the wire size (`Frame.raw`) of the frames in `history`
    sinks: dict[UUID, Sink] = field(default_factory=dict)
    pending: list[Frame] = field(default_factory=list)  # published, not yet pushed
    # Sinks that subscribed while `pending` was not empty, with the last sequence
    # number they must not receive: they get only the tail of the pending batch.
    late: dict[UUID, int] = field(default_factory=dict)
    ws_sinks: int = 0  # how many of `sinks` are WebSockets, for what broadcasts send by transport


# An epoch (ms) and a sequence number are far shorter; anything longer is unknown.
_MAX_ID_CHARS = 200


def _batch(frames: list[Frame]) -> Frame:
    """Several frames as one: one chunk, so one write per stream for all of them."""
    if len(frames) == 1:
        return frames[0]
    raw = b"".join(f.raw for f in frames)
    last = frames[-1]
    parts = tuple(p for f in frames for p in f.singles())
    return Frame(last.seq, last.id, raw, chunk(raw), parts=parts)


def _ws(sink: Sink | None) -> int:
    """1 for a WebSocket sink: it says so by `metric_transport` (streams need not)."""
    return 1 if getattr(sink, "metric_transport", SSE) == WS else 0


def _fitting(history: deque[Frame], wanted: int, max_bytes: int) -> int:
    """How many of the newest `wanted` frames of `history` fit in `max_bytes` together."""
    total = 0
    count = 0
    for frame in reversed(history):
        if count == wanted:
            break
        total += len(frame.raw)
        if total > max_bytes:
            break
        count += 1
    return count


class Hub:
    """Topics of events: publish encodes once and pushes the same bytes to every sink.

    With a `schedule` function, events published in a row are coalesced: the
    first one schedules `flush`, and the flush pushes every pending event of a
    topic to each sink as one frame. A broadcast then costs one write per stream
    per loop iteration, however many events it carries. Without `schedule`,
    each publish pushes at once.
    """

    def __init__(
        self,
        *,
        history_size: int,
        epoch: str,
        max_topics: int = 1000,
        history_bytes: int = 1 << 20,
        history_total_bytes: int = 64 << 20,
        max_replay_bytes: int = 1 << 20,
        schedule: Callable[[Callable[[], int]], object] | None = None,
    ) -> None:
        limits = (history_size, max_topics, history_bytes, history_total_bytes, max_replay_bytes)
        if min(limits) <= 0:
            raise ValueError("history sizes, max_topics and max_replay_bytes must be positive")
        if "-" in epoch:
            raise ValueError("epoch must not contain '-'; it separates epoch and sequence")
        self._history_size = history_size
        self._max_topics = max_topics
        # Bytes are the events' wire size (`Frame.raw`): what a replay sends, and
        # about a third of what a kept frame holds (raw, chunked, the Event's str).
        self._history_max_bytes = history_bytes  # per topic
        self._history_total_max_bytes = history_total_bytes  # all topics together
        self._max_replay_bytes = max_replay_bytes
        self._history_bytes = 0  # held now, all topics together
        # Topics whose history is not empty, least recently published first: when
        # the total is over its bound, their oldest events go first.
        self._holding: OrderedDict[str, _Topic] = OrderedDict()
        self._epoch = epoch
        # Least recently used first; a topic without sinks may be evicted from there.
        self._topics: OrderedDict[str, _Topic] = OrderedDict()
        self._high_seq = 0  # the highest sequence number issued in any topic
        self._schedule = schedule
        self._dirty: list[_Topic] = []  # topics with pending frames, in publish order
        self._active: set[str] = set()  # topics published to since `take_active`
        self._joined = 0  # subscriptions since `take_joined`
        # What broadcasts handed to sinks since `take_sent`: events and bytes to event
        # streams, then to WebSockets. Counted per topic per flush, never per sink.
        self._sent = [0, 0, 0, 0]

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is not None:
            self._topics.move_to_end(name)
            return topic
        if len(self._topics) >= self._max_topics:
            self._evict_one()
        # A topic starts above every id issued so far, so an id from an evicted
        # earlier life of it can never be mistaken for one of the new life.
        start = self._high_seq + 1
        topic = self._topics[name] = _Topic(deque(maxlen=self._history_size), start, start)
        return topic

    def _evict_one(self) -> None:
        for name, topic in self._topics.items():
            if not topic.sinks:
                del self._topics[name]
                self._holding.pop(name, None)
                self._history_bytes -= topic.history_bytes
                return
        # Every topic has a subscriber: keep them all rather than cut anyone off.

    def _drop_oldest(self, t: _Topic) -> None:
        # Only ever the oldest: the history stays contiguous, so `resume` can tell
        # exactly which ids are gone from the sequence number of the first one kept.
        size = len(t.history.popleft().raw)
        t.history_bytes -= size
        self._history_bytes -= size

    def _trim(self, name: str, t: _Topic) -> None:
        history = t.history
        while history and t.history_bytes > self._history_max_bytes:
            self._drop_oldest(t)
        if not history:
            del self._holding[name]

    def _trim_total(self) -> None:
        # Least recently published topic first, oldest event first: a quiet
        # conversation gives up its history before the busy room loses any.
        holding = self._holding
        limit = self._history_total_max_bytes
        while self._history_bytes > limit and holding:
            name, t = next(iter(holding.items()))
            while t.history and self._history_bytes > limit:
                self._drop_oldest(t)
            if not t.history:
                del holding[name]

    def history_held(self) -> tuple[int, int]:
        """How many events the histories of all topics hold now, and their bytes."""
        return sum(len(t.history) for t in self._holding.values()), self._history_bytes

    def publish(
        self, topic: str, data: str, *, event: str | None = None, id: str | None = None
    ) -> Frame:
        """Append an event to `topic`'s history and push it to every sink.

        The event's id is `<epoch>-<seq>` unless `id` is given: a broker that
        orders events itself (Redis) hands the hub its own ids, and the hub's
        sequence numbers then only order the frames within this process.

        Raises:
            EncodeError: `data` or `event` cannot be carried by the event-stream format.
        """
        t = self._topic(topic)
        seq = t.next_seq
        frame = Frame.of(Event(data, event=event, id=id or f"{self._epoch}-{seq}"), seq)
        t.next_seq = seq + 1  # only after encoding succeeded: ids stay contiguous
        self._high_seq = max(self._high_seq, seq)
        history = t.history
        size = len(frame.raw)
        if len(history) == self._history_size:  # the append drops the oldest
            size -= len(history[0].raw)
        history.append(frame)
        t.history_bytes += size
        self._history_bytes += size
        try:
            self._holding.move_to_end(topic)
        except KeyError:
            self._holding[topic] = t
        if t.history_bytes > self._history_max_bytes:
            self._trim(topic, t)
        if self._history_bytes > self._history_total_max_bytes:
            self._trim_total()
        self._active.add(topic)
        if self._schedule is None:
            self._count_sent(t, 1, len(frame.raw))
            self._push(t, frame)
            return frame
        if not t.pending:
            if not self._dirty:
                self._schedule(self.flush)
            self._dirty.append(t)
        t.pending.append(frame)
        return frame

    def broadcast(self, topic: str, data: str, *, event: str) -> None:
        """Push an ephemeral event (presence, typing) to `topic`'s sinks now: no id, no history.

        Events already pending for the topic go out first, so the order of
        publishing holds; a topic nobody here follows is not created for it.

        Raises:
            EncodeError: `data` or `event` cannot be carried by the event-stream format.
        """
        frame = Frame.of(Event(data, event=event), 0)
        t = self._topics.get(topic)
        if t is None or not t.sinks:
            return
        self._active.add(topic)
        if t.pending:
            self._deliver(t)  # its entry in `_dirty` finds nothing left to flush
        self._count_sent(t, 1, len(frame.raw))
        self._push(t, frame)

    def flush(self) -> int:
        """Push every pending event to its topic's sinks; returns how many there were."""
        dirty, self._dirty = self._dirty, []
        return sum(self._deliver(t) for t in dirty)

    def _deliver(self, t: _Topic) -> int:
        if not t.pending:
            return 0
        frames, t.pending = t.pending, []
        batch = _batch(frames)
        self._count_sent(t, len(frames), len(batch.raw))
        if not t.late:
            self._push(t, batch)
            return len(frames)
        late, t.late = t.late, {}
        tails: dict[int, Frame | None] = {}  # one tail per subscription point
        sent = self._sent
        for key, sink in tuple(t.sinks.items()):
            after = late.get(key)
            if after is None:
                sink.push(batch)
                continue
            if after not in tails:
                rest = [f for f in frames if f.seq > after]
                tails[after] = _batch(rest) if rest else None
            tail = tails[after]
            # Counted above as the whole batch: take back what this late sink skips.
            at = 2 * _ws(sink)
            sent[at] -= len(frames) - (len(tail.singles()) if tail is not None else 0)
            sent[at + 1] -= len(batch.raw) - (len(tail.raw) if tail is not None else 0)
            if tail is not None:
                sink.push(tail)
        return len(frames)

    def _count_sent(self, t: _Topic, events: int, size: int) -> None:
        ws = t.ws_sinks
        streams = len(t.sinks) - ws
        sent = self._sent
        sent[0] += streams * events
        sent[1] += streams * size
        sent[2] += ws * events
        sent[3] += ws * size

    def take_sent(self) -> tuple[int, int, int, int]:
        """Events and bytes handed to event streams, then to WebSockets, since the last call."""
        sent, self._sent = self._sent, [0, 0, 0, 0]
        return sent[0], sent[1], sent[2], sent[3]

    @staticmethod
    def _push(t: _Topic, frame: Frame) -> None:
        # A copy: a push may drop a slow sink, which unsubscribes it.
        for sink in tuple(t.sinks.values()):
            sink.push(frame)

    def take_joined(self) -> int:
        """How many sinks subscribed since the last call (a crowd arriving)."""
        joined, self._joined = self._joined, 0
        return joined

    def take_active(self) -> set[str]:
        """The topics published to since the last call (for heartbeats of quiet ones)."""
        active, self._active = self._active, set()
        return active

    def subscribe(self, topic: str, key: UUID, sink: Sink) -> None:
        """Start pushing `topic`'s future events to `sink`."""
        t = self._topic(topic)
        self._joined += 1
        if t.pending:
            # Events published before this moment belong to the earlier sinks
            # only. Flushing them now would end the batch, so a crowd connecting
            # together (each announcing itself) would cost one flush per stream;
            # instead the new sink joins the batch and gets only its tail.
            t.late[key] = t.next_seq - 1
        t.ws_sinks += _ws(sink) - _ws(t.sinks.get(key))
        t.sinks[key] = sink

    def replace(self, topic: str, key: UUID, sink: Sink) -> bool:
        """Hand the subscription under `key` to `sink`, losing nothing in between.

        Unlike a new `subscribe`, the pending batch still goes to the key in
        full. Returns False, and subscribes nothing, when `key` has left.
        """
        t = self._topics.get(topic)
        if t is None or key not in t.sinks:
            return False
        t.ws_sinks += _ws(sink) - _ws(t.sinks[key])
        t.sinks[key] = sink
        return True

    def unsubscribe(self, topic: str, key: UUID) -> None:
        """Stop pushing to the sink under `key`; unknown keys are ignored."""
        t = self._topics.get(topic)
        if t is not None:
            t.ws_sinks -= _ws(t.sinks.pop(key, None))
            t.late.pop(key, None)

    def sink_count(self, topic: str) -> int:
        """How many sinks `topic` has now."""
        t = self._topics.get(topic)
        return 0 if t is None else len(t.sinks)

    def last_id(self, topic: str) -> str:
        """The id of the newest event of `topic`, or the id before the first one."""
        return f"{self._epoch}-{self._topic(topic).next_seq - 1}"

    def resume(self, topic: str, last_event_id: str) -> Resume:
        """The events after `last_event_id`, or a gap notice and the newest that are kept.

        An id from another epoch (before a restart), a malformed one, or one whose
        successors have left the history cannot be resumed exactly; WHATWG HTML
        leaves that to the server, and we refuse to lose events silently. Nor is
        more than `max_replay_bytes` replayed: past it, the gap notice comes first
        and then the newest events that fit.
        """
        t = self._topic(topic)
        history = t.history
        oldest = history[0].seq if history else t.next_seq
        newest = t.next_seq - 1
        seq = self._parse(last_event_id)
        known = seq is not None and t.first_seq - 1 <= seq <= newest
        # Index of the first event the client has not seen, if the id is known.
        start = seq - oldest + 1 if seq is not None and known and seq >= oldest - 1 else 0
        count = _fitting(history, len(history) - start, self._max_replay_bytes)
        frames = tuple(islice(history, len(history) - count, None))
        exact = seq is not None and known and seq >= oldest - 1
        if exact and start + count == len(history):
            return Resume(frames)
        # The notice's id is the one just before the first event replayed, so a
        # client cut off right after it resumes exactly instead of seeing the gap again.
        gap_seq = frames[0].seq - 1 if frames else newest
        if seq is not None and known:
            missed = gap_seq - seq
            why = (
                f"Events after {last_event_id} are more than one replay carries "
                f"({self._max_replay_bytes} bytes); {missed} were missed."
                if exact
                else f"Events after {last_event_id} are no longer kept; {missed} were missed."
            )
        else:
            why = (
                f"Event id {last_event_id!r} is unknown here (the server may have "
                "restarted); earlier events could not be replayed."
            )
        notice = json.dumps({"last_event_id": last_event_id, "message": why})
        gap = Frame.of(Event(notice, event="gap", id=f"{self._epoch}-{gap_seq}"), gap_seq)
        return Resume(frames, gap)

    def _parse(self, event_id: str) -> int | None:
        # No id of ours is this long: refusing longer ones keeps int() off huge
        # digit strings (past 4,300 digits it raises ValueError).
        if len(event_id) > _MAX_ID_CHARS:
            return None
        epoch, sep, seq = event_id.rpartition("-")
        if not sep or epoch != self._epoch or not seq.isdigit() or not seq.isascii():
            return None
        return int(seq)
