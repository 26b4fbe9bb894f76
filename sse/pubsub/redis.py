"""Events through Redis Streams, so that every process and machine serves every channel.

One Redis Stream per channel (`ssechat:stream:<topic>`). A publish is one
`XADD` with an approximate `MAXLEN` of the history size, and the entry id Redis
gives it is the event's SSE id: a client resumes by `Last-Event-ID` on any node,
read newest first with `XREVRANGE`, at most `max_replay_bytes` of it. Each node
runs one reader task doing a blocking `XREAD` over the channels that have
subscribers here, and hands each entry to the local hub, which encodes it once
and writes it to every local stream.

The reader remembers, per channel, the last entry it delivered. When Redis goes
away it keeps the streams open (their heartbeats go on), retries with backoff,
and on recovery reads on from exactly there: clients lose nothing Redis kept.
A publish while Redis is unreachable raises `BrokerUnavailable` (a 503), never
a silent drop.

A control stream (`ssechat:control`) carries requests between nodes, such as
stopping a reply that another node generates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Mapping
from typing import Any, cast
from uuid import UUID

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisError, ResponseError

from sse.errors import BrokerUnavailable, EncodeError
from sse.metrics import BROKER_UP, event_published
from sse.protocol.frame import Frame
from sse.protocol.sse import Event, encode
from sse.pubsub.broker import ControlHandler
from sse.pubsub.hub import Hub, Resume, Sink

__all__ = ["RedisBroker", "parse_entry_id"]

log = logging.getLogger("ssechat.redis")

_STREAM_PREFIX = "ssechat:stream:"
_CONTROL_KEY = "ssechat:control"
_CONTROL_HISTORY = 1000
# A channel nobody publishes to for this long is dropped from Redis with its history.
_STREAM_TTL_S = 7 * 24 * 3600
# The reader's XREAD returns at least this often, so a wedged connection is noticed.
_BLOCK_MS = 5000
_READ_COUNT = 1000
# A resume reads the history newest first: this many entries in its first page
# (most resumes miss a few events), then pages sized from the entries seen so far
# to what is left of the replay cap, so little is read past it.
_REPLAY_FIRST_PAGE = 16
_REPLAY_MAX_PAGE = 512
_POOL_SIZE = 32
_POOL_WAIT_S = 5.0
_CLOSE_WAIT_S = 2.0
_BACKOFF_FIRST_S = 0.1
_BACKOFF_MAX_S = 5.0
# What redis-py returns for XRANGE, and per stream for XREAD (with decoded responses).
_Entries = list[tuple[str, dict[str, str]]]
# A publish: the entry records the id of the entry before it (`p`), so that a
# resume can tell for sure whether trimming took anything the client had not
# seen (Redis keeps no record of the ids MAXLEN trimmed away). One script, so
# nothing can come between reading that id and adding the entry.
_PUBLISH = """
local before = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local p = '0-0'
if #before > 0 then p = before[1][1] end
local id
if ARGV[3] == '' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'p', p, 'd', ARGV[2])
else
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'p', p, 'd', ARGV[2], 'e', ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return id
"""
_ENTRY_ID = re.compile(r"(\d{1,20})-(\d{1,20})\Z")


def parse_entry_id(entry_id: str) -> tuple[int, int] | None:
    """A Redis Stream entry id as a comparable pair, or None when it is not one."""
    match = _ENTRY_ID.match(entry_id)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


class _Gate:
    """Holds a sink's live frames while its history is read, so none is lost."""

    __slots__ = ("frames",)

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def push(self, frame: Frame) -> None:
        self.frames.append(frame)


class _After:
    """Passes on only frames after `bound`, then hands the subscription to `sink` itself.

    A replay reads Redis up to its newest entry, which the reader may not have
    delivered here yet; when it does, those entries would reach the sink a
    second time. The reader delivers in entry-id order, so once one entry past
    `bound` comes, every later one is new too.
    """

    __slots__ = ("_bound", "_hub", "_key", "_sink", "_topic")

    def __init__(self, hub: Hub, topic: str, key: UUID, sink: Sink, bound: tuple[int, int]) -> None:
        self._hub = hub
        self._topic = topic
        self._key = key
        self._sink = sink
        self._bound = bound

    def push(self, frame: Frame) -> None:
        singles = frame.singles()
        # An ephemeral event (no id: presence, typing) is never in a replay.
        fresh = [s for s in singles if not s.id or (parse_entry_id(s.id) or (0, 0)) > self._bound]
        if not fresh:
            return
        if any(s.id for s in fresh):
            self._hub.replace(self._topic, self._key, self._sink)
        if len(fresh) == len(singles):
            self._sink.push(frame)
            return
        for single in fresh:
            self._sink.push(single)


def _frame(entry_id: str, fields: Mapping[str, str]) -> Frame:
    return Frame.of(Event(fields.get("d", ""), event=fields.get("e") or None, id=entry_id), 0)


class RedisBroker:
    """Publishes to and reads from Redis; the local hub does the fan-out."""

    name = "redis"
    shared = True

    def __init__(
        self,
        hub: Hub,
        url: str,
        *,
        history_size: int,
        node: str,
        max_replay_bytes: int = 1024 * 1024,
    ) -> None:
        self.hub = hub
        self._history_size = history_size
        self._max_replay_bytes = max_replay_bytes
        self._node = node
        # Commands fail fast: a POST waiting on a dead Redis answers 503 in about
        # a second instead of hanging. One quick retry covers a dropped connection.
        # A bounded pool that makes a burst wait its turn: thousands of browsers
        # reconnecting at once would otherwise ask for thousands of connections.
        self._client: Redis = Redis(
            connection_pool=BlockingConnectionPool.from_url(
                url,
                max_connections=_POOL_SIZE,
                timeout=_POOL_WAIT_S,
                decode_responses=True,
                socket_timeout=2.0,
                socket_connect_timeout=1.0,
                retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), 1),
            )
        )
        # The reader blocks in XREAD for up to _BLOCK_MS on a connection of its own.
        self._reader_client: Redis = Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=_BLOCK_MS / 1000 + 5.0,
            socket_connect_timeout=1.0,
            single_connection_client=True,
            retry=Retry(NoBackoff(), 0),
        )
        # Per channel with subscribers here: the id of the last entry delivered.
        self._positions: dict[str, str] = {}
        # Channels whose starting position is being asked of Redis: one question
        # per channel, however many streams of it open meanwhile.
        self._positioning: dict[str, asyncio.Future[None]] = {}
        self._control_position = "$"
        self._wake_key = f"ssechat:wake:{node}"
        self._wake_position = "0-0"
        self._control_handlers: list[ControlHandler] = []
        # EVALSHA, loading the script again after a Redis restart forgot it.
        self._publish_script = self._client.register_script(_PUBLISH)
        self._reader: asyncio.Task[None] | None = None
        self._up = False
        self._down_since: float | None = None
        self._closing = False

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Check that Redis answers, then start the reader.

        Raises:
            BrokerUnavailable: Redis cannot be reached at start.
        """
        try:
            await self._client.ping()
            self._control_position = await self._last_generated(_CONTROL_KEY)
        except RedisError as exc:
            raise BrokerUnavailable(f"cannot reach Redis: {exc}") from exc
        self._up = True
        self._reader = asyncio.get_running_loop().create_task(self._read_forever())

    async def close(self) -> None:
        """Stop the reader and disconnect."""
        reader, self._reader = self._reader, None
        if reader is not None:
            # Asked to stop, and woken by its wake stream, the reader leaves its
            # XREAD by itself. A cancel inside redis-py's read can leave the task
            # stuck for good (seen under uvloop), so it is only the fallback,
            # after the reader's connection is cut under it.
            self._closing = True
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self._wake(), _CLOSE_WAIT_S)
            await asyncio.wait({reader}, timeout=_CLOSE_WAIT_S)
            if not reader.done():
                await self._reader_client.connection_pool.disconnect(inuse_connections=True)
                reader.cancel()
                await asyncio.wait({reader}, timeout=_CLOSE_WAIT_S)
            if not reader.done():
                log.warning("the Redis reader did not stop; leaving it")
        with contextlib.suppress(RedisError):  # else it expires by itself
            await self._client.delete(self._wake_key)
        await self._reader_client.aclose()
        await self._client.aclose()

    def health(self) -> Mapping[str, object]:
        """Whether Redis answers, and how many channels this node reads."""
        return {
            "broker": self.name,
            "redis": "up" if self._up else "down",
            "channels_read": len(self._positions),
        }

    async def ready(self, timeout_s: float) -> str | None:
        """None if Redis answers a PING within `timeout_s`, else why not."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._client.ping()
        except TimeoutError:
            return f"redis: no answer to PING within {timeout_s:g}s"
        except (RedisError, OSError) as exc:
            return f"redis: {exc}"
        return None

    @property
    def client(self) -> Redis:
        """The pooled client, for other shared state (the per-client limits)."""
        return self._client

    @property
    def available(self) -> bool:
        """False while the reader cannot reach Redis."""
        return self._up

    # -- publishing ------------------------------------------------------------

    async def publish(self, topic: str, data: str, *, event: str | None = None) -> str:
        """XADD the event; its Redis entry id, once Redis has it.

        Raises:
            EncodeError: the event cannot be carried by the event-stream format
                (checked before anything is sent, so no node ever receives it).
            BrokerUnavailable: Redis did not take it.
        """
        encode(Event(data, event=event))
        args: list[str | int] = [self._history_size, data, event or "", _STREAM_TTL_S]
        try:
            entry_id = await self._publish_script(keys=[_STREAM_PREFIX + topic], args=args)
        except RedisError as exc:
            raise BrokerUnavailable(f"Redis is unreachable ({exc})") from exc
        event_published(event)
        return str(entry_id)

    async def send_control(self, fields: Mapping[str, str]) -> None:
        """Send a message to every node's control handlers (this one's too).

        Raises:
            BrokerUnavailable: Redis did not take it.
        """
        try:
            await self._client.xadd(
                _CONTROL_KEY, cast(Any, dict(fields)), maxlen=_CONTROL_HISTORY, approximate=True
            )
        except RedisError as exc:
            raise BrokerUnavailable(f"Redis is unreachable ({exc})") from exc

    def on_control(self, handler: ControlHandler) -> None:
        """Call `handler` with every control message, in the reader's task."""
        self._control_handlers.append(handler)

    async def claim_once(self, key: str, ttl_s: int) -> bool:
        """True the first time `key` is claimed within `ttl_s` seconds, on any node (SET NX).

        Raises:
            BrokerUnavailable: Redis did not answer.
        """
        try:
            claimed = await self._client.set(f"ssechat:once:{key}", "1", nx=True, ex=ttl_s)
        except RedisError as exc:
            raise BrokerUnavailable(f"Redis is unreachable ({exc})") from exc
        return bool(claimed)

    # -- subscribing -----------------------------------------------------------

    async def attach(self, topic: str, key: UUID, sink: Sink, last_event_id: str | None) -> Resume:
        """Subscribe `sink`, with the history after `last_event_id` first.

        Live entries that arrive while the history is read wait in a gate and
        are deduplicated against it by id: no overlap, no hole.

        Raises:
            BrokerUnavailable: Redis cannot be read now.
        """
        gate = _Gate()
        self.hub.subscribe(topic, key, gate)
        try:
            if topic not in self._positions:
                await self._follow(topic)
            resume = (
                Resume(()) if last_event_id is None else await self._replay(topic, last_event_id)
            )
        except RedisError as exc:
            self.hub.unsubscribe(topic, key)
            raise BrokerUnavailable(f"Redis is unreachable ({exc})") from exc
        except BaseException:
            self.hub.unsubscribe(topic, key)
            raise
        bound: tuple[int, int] | None = None
        if resume.frames:
            bound = parse_entry_id(resume.frames[-1].id)
        elif last_event_id is not None and resume.gap is None:
            bound = parse_entry_id(last_event_id)
        held = [
            single
            for frame in gate.frames
            for single in frame.singles()
            if bound is None or not single.id or (parse_entry_id(single.id) or (0, 0)) > bound
        ]
        # From here on the hub pushes to the sink (past what the replay holds);
        # a sink whose client left meanwhile is not subscribed again.
        self.hub.replace(
            topic, key, sink if bound is None else _After(self.hub, topic, key, sink, bound)
        )
        return Resume((*resume.frames, *held), resume.gap)

    async def _follow(self, topic: str) -> None:
        # The reader starts this channel at its newest entry now: every sink
        # attaching meanwhile gets every entry after that (its gate holds them).
        pending = self._positioning.get(topic)
        if pending is not None:
            await asyncio.shield(pending)
            return
        done = self._positioning[topic] = asyncio.get_running_loop().create_future()
        try:
            last = await self._last_generated(_STREAM_PREFIX + topic)
            if topic not in self._positions:
                self._positions[topic] = last
                await self._wake()
            done.set_result(None)
        except asyncio.CancelledError:
            done.cancel()
            raise
        except Exception as exc:
            done.set_exception(exc)
            done.exception()  # retrieved here, so an unwaited failure is not reported
            raise
        finally:
            del self._positioning[topic]

    def detach(self, topic: str, key: UUID) -> None:
        """Unsubscribe; the reader stops reading a channel nobody here follows."""
        self.hub.unsubscribe(topic, key)

    async def last_id(self, topic: str) -> str:
        """The id of the newest entry of `topic` ("0-0" when it has none).

        Raises:
            BrokerUnavailable: Redis cannot be read now.
        """
        try:
            return await self._last_generated(_STREAM_PREFIX + topic)
        except RedisError as exc:
            raise BrokerUnavailable(f"Redis is unreachable ({exc})") from exc

    async def _last_generated(self, key: str) -> str:
        try:
            info = await self._client.xinfo_stream(key)
        except ResponseError:  # no such key: nothing was ever published there
            return "0-0"
        return str(info["last-generated-id"])

    async def _replay(self, topic: str, last_event_id: str) -> Resume:
        key = _STREAM_PREFIX + topic
        after = parse_entry_id(last_event_id)
        cap = self._max_replay_bytes
        # Newest first, page by page, until the client's id, the cap or the
        # stream's start. Entries added meanwhile are newer than the first page's
        # newest: the reader hands those to the sink's gate, which `attach` merges.
        # Trimming meanwhile only takes from the old end, so what is read is
        # contiguous, and the oldest frame's `p` tells whether anything is missing.
        newest: tuple[int, int] | None = None
        bound: tuple[int, int] | None = None  # stop at entries at or below it
        frames: list[Frame] = []  # newest first
        before = "0-0"  # the id of the entry before the oldest in `frames`
        total = 0
        capped = False
        upper = "+"
        page = _REPLAY_FIRST_PAGE
        while True:
            entries = cast(_Entries, await self._client.xrevrange(key, upper, "-", count=page))
            if newest is None:
                newest = parse_entry_id(entries[0][0]) if entries else (0, 0)
                known = after is not None and newest is not None and after <= newest
                bound = after if known else None
                if entries:
                    before = entries[0][0]  # if even the newest does not fit
            done = len(entries) < page
            for entry_id, fields in entries:
                if bound is not None and (parse_entry_id(entry_id) or (0, 0)) <= bound:
                    done = True
                    break
                frame = _frame(entry_id, fields)
                total += len(frame.raw)
                if total > cap:
                    capped = done = True
                    break
                frames.append(frame)
                before = fields.get("p", "0-0")
            if done:
                break
            upper = f"({entries[-1][0]}"
            seen = max(total, 1) / max(len(frames), 1)
            page = max(_REPLAY_FIRST_PAGE, min(_REPLAY_MAX_PAGE, int((cap - total) / seen) + 1))
        frames.reverse()
        if bound is not None and not capped and (parse_entry_id(before) or (0, 0)) <= bound:
            return Resume(tuple(frames))
        if bound is not None and not capped:
            why = (
                f"Events after {last_event_id} are no longer kept (the history holds "
                f"about {self._history_size}); some were missed."
            )
        elif bound is not None:
            why = (
                f"Events after {last_event_id} are more than one replay carries "
                f"({cap} bytes); some were missed."
            )
        else:
            why = (
                f"Event id {last_event_id!r} is unknown here (Redis may have lost it); "
                "earlier events could not be replayed."
            )
        notice = json.dumps({"last_event_id": last_event_id, "message": why})
        # The notice's id is the one just before the oldest entry replayed: a client
        # cut off right after it resumes exactly instead of seeing the gap again.
        return Resume(tuple(frames), Frame.of(Event(notice, event="gap", id=before), 0))

    async def _wake(self) -> None:
        # The reader may be blocked in an XREAD without this channel: an entry
        # in its own wake stream ends that XREAD, and the next one includes it.
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.xadd(self._wake_key, {"w": "1"}, maxlen=1, approximate=False)
            pipe.expire(self._wake_key, 3600)
            await pipe.execute()

    # -- reading ---------------------------------------------------------------

    async def _read_forever(self) -> None:
        backoff = _BACKOFF_FIRST_S
        while not self._closing:
            streams = {
                self._wake_key: self._wake_position,
                _CONTROL_KEY: self._control_position,
            }
            streams.update({_STREAM_PREFIX + t: p for t, p in self._positions.items()})
            try:
                reply = await self._reader_client.xread(
                    cast(Any, streams), count=_READ_COUNT, block=_BLOCK_MS
                )
            except (RedisError, OSError) as exc:
                self._went_down(exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            if not self._up:
                self._up = True
                BROKER_UP.set(1)
                took = asyncio.get_running_loop().time() - (self._down_since or 0.0)
                log.warning("Redis is reachable again after %.1fs; reading on", took)
                self._down_since = None
            backoff = _BACKOFF_FIRST_S
            for key, entries in cast(list[tuple[str, _Entries]], reply or []):
                self._dispatch(key, entries)
            self._forget_unfollowed()

    def _went_down(self, exc: BaseException, backoff: float) -> None:
        if self._up:
            self._up = False
            BROKER_UP.set(0)
            self._down_since = asyncio.get_running_loop().time()
            log.error("Redis is unreachable (%s); streams stay open, retrying", exc)
        else:
            log.debug("Redis still unreachable (%s); next try in %.1fs", exc, backoff)

    def _dispatch(self, key: str, entries: _Entries) -> None:
        if not entries:
            return
        if key == self._wake_key:
            self._wake_position = entries[-1][0]
            return
        if key == _CONTROL_KEY:
            self._control_position = entries[-1][0]
            for _, fields in entries:
                for handler in self._control_handlers:
                    try:
                        handler(fields)
                    except Exception:
                        log.exception("control message %r failed", fields)
            return
        topic = key[len(_STREAM_PREFIX) :]
        position = self._positions.get(topic)
        if position is None:
            return  # nobody here follows it any more
        # An XREAD sent before this channel was dropped and re-added may return
        # entries the new subscribers must not see: only what is past the position.
        floor = parse_entry_id(position) or (0, 0)
        hub = self.hub
        for entry_id, fields in entries:
            if (parse_entry_id(entry_id) or (0, 0)) <= floor:
                continue
            try:
                hub.publish(topic, fields.get("d", ""), event=fields.get("e") or None, id=entry_id)
            except EncodeError:
                log.error("entry %s of %s cannot be sent as an event; skipped", entry_id, topic)
        last = entries[-1][0]
        if (parse_entry_id(last) or (0, 0)) > floor:
            self._positions[topic] = last

    def _forget_unfollowed(self) -> None:
        hub = self.hub
        for topic in [t for t in self._positions if hub.sink_count(t) == 0]:
            del self._positions[topic]
