"""Presence across nodes in Redis: each node's people under a lease it renews.

Keys (standalone Redis, as the rest of ssechat; the scripts name keys they
build, which Redis Cluster would refuse):

- `ssechat:presence:lapses`, a sorted set: one member per (room, person, node)
  holding them, scored by when that hold lapses (Redis's clock, ms).
- `ssechat:presence:<room>:held`, a hash: person -> how many nodes hold them.
- `ssechat:presence:<room>:names`, a hash: person -> who they are (JSON).

A person joins a room when the first node holds them and leaves when the last
one lets go, or its hold lapsed: every node renews its holds each third of the
lease and sweeps lapsed ones, so a killed node's people leave within about a
lease and a third. Each transition is decided inside one script, so exactly one
node announces it (as an ephemeral event, through the broker, to every node).

This node's changes go through one task, in order: a reconnect during the
grace never reaches Redis, and a Redis outage only delays what is announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from sse.chat.rooms.presence import Presence, quietly
from sse.chat.rooms.records import Sender
from sse.errors import BrokerUnavailable

__all__ = ["RedisPresence"]

log = logging.getLogger("ssechat.rooms")

_PREFIX = "ssechat:presence:"
_LAPSES = _PREFIX + "lapses"
# Lapsed holds one sweep takes at most; the next sweep takes the rest.
_SWEEP_LIMIT = 500
# Holds renewed per script call.
_RENEW_BATCH = 200
# Changes waiting for Redis at most (an outage): past it the oldest are dropped,
# and Redis catches up at the next renewal and the lapse of what it holds.
_MAX_DIRTY = 100_000
_RETRY_S = 1.0

_LEAVE = """
local function leave(prefix, room, owner, node)
  local m = cjson.encode({room, owner, node})
  if redis.call('ZREM', KEYS[1], m) == 0 then return nil end
  local held, names = prefix .. room .. ':held', prefix .. room .. ':names'
  if redis.call('HINCRBY', held, owner, -1) > 0 then return nil end
  local name = redis.call('HGET', names, owner) or '{}'
  redis.call('HDEL', held, owner)
  redis.call('HDEL', names, owner)
  return {room, owner, name, redis.call('HLEN', held)}
end
"""
# ARGV: prefix, lease ms, node, then room, owner, who (JSON) for each hold.
# Returns the joins: {room, owner, who, count}.
_HOLD = """
local t = redis.call('TIME')
local lapse = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
local prefix, node, joined = ARGV[1], ARGV[3], {}
for i = 4, #ARGV, 3 do
  local room, owner, name = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local m = cjson.encode({room, owner, node})
  if redis.call('ZADD', KEYS[1], lapse, m) == 1 then
    local held = prefix .. room .. ':held'
    if redis.call('HINCRBY', held, owner, 1) == 1 then
      redis.call('HSET', prefix .. room .. ':names', owner, name)
      table.insert(joined, {room, owner, name, redis.call('HLEN', held)})
    end
  end
end
return joined
"""
# ARGV: prefix, node, room, owner. Returns {} or the leave {room, owner, who, count}.
_RELEASE = (
    _LEAVE
    + """
return leave(ARGV[1], ARGV[3], ARGV[4], ARGV[2]) or {}
"""
)
# ARGV: prefix, limit. Returns the leaves of the lapsed holds it took.
_SWEEP = (
    _LEAVE
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local left = {}
for _, m in ipairs(lapsed) do
  local hold = cjson.decode(m)
  local gone = leave(ARGV[1], hold[1], hold[2], hold[3])
  if gone then table.insert(left, gone) end
end
return left
"""
)


def _sender(raw: str) -> Sender:
    try:
        found = json.loads(raw)
    except ValueError:
        found = {}
    if not isinstance(found, dict):
        found = {}
    return Sender(str(found.get("id", "")), str(found.get("name", "")))


class RedisPresence:
    """The `SharedPresence` of all nodes on one Redis; this node's part kept by one task."""

    def __init__(self, presence: Presence, client: Redis, node: str, lease_s: float) -> None:
        self._presence = presence
        self._client = client
        self._node = node
        self._lease_ms = max(1, round(lease_s * 1000))
        self._renew_s = lease_s / 3
        self._hold = client.register_script(_HOLD)
        self._release = client.register_script(_RELEASE)
        self._sweep = client.register_script(_SWEEP)
        self._dirty: dict[tuple[str, str], None] = {}  # in order of change
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        presence.shared = self

    def start(self) -> None:
        """Start keeping Redis up to date with this node's table."""
        self._task = asyncio.get_running_loop().create_task(self._keep())

    async def close(self) -> None:
        """Stop; this node's holds lapse by themselves (another node announces the leaves)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # Let go at once what can be let go, so a clean stop needs no lapse.
        holds = self._presence.all_held()
        try:
            for room, owner, _ in holds:
                await self._apply_release(room, owner)
        except RedisError as exc:
            log.warning("presence not released in Redis (%s); it lapses by itself", exc)

    def changed(self, room: str, owner: str) -> None:
        """Queue (`room`, `owner`) for the task, which makes Redis agree with the table."""
        key = (room, owner)
        self._dirty.pop(key, None)
        self._dirty[key] = None
        while len(self._dirty) > _MAX_DIRTY:
            del self._dirty[next(iter(self._dirty))]
        self._wake.set()

    async def users(self, room: str) -> list[Sender]:
        """Who is held by any node in `room`.

        Raises:
            BrokerUnavailable: Redis did not answer.
        """
        try:
            found = await self._client.hgetall(f"{_PREFIX}{room}:names")
        except RedisError as exc:
            raise BrokerUnavailable(f"Redis is unreachable ({exc})") from exc
        names = cast(dict[str, str], found)
        return sorted((_sender(raw) for raw in names.values()), key=lambda s: (s.name, s.id))

    async def counts(self, rooms: list[str]) -> dict[str, int]:
        """One pipeline of HLEN."""
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for room in rooms:
                    pipe.hlen(f"{_PREFIX}{room}:held")
                found = await pipe.execute()
        except RedisError as exc:
            raise BrokerUnavailable(f"Redis is unreachable ({exc})") from exc
        return {room: int(n) for room, n in zip(rooms, found, strict=True)}

    # -- the task ----------------------------------------------------------------

    async def _keep(self) -> None:
        loop = asyncio.get_running_loop()
        renew_at = loop.time()
        while True:
            try:
                await self._flush_dirty()
                if loop.time() >= renew_at:
                    await self._renew_all()
                    await self._sweep_lapsed()
                    renew_at = loop.time() + self._renew_s
                if self._failing:
                    self._failing = False
                    log.warning("presence reaches Redis again")
            except (RedisError, OSError) as exc:
                if not self._failing:
                    self._failing = True
                    log.error("presence cannot reach Redis (%s); retrying", exc)
                await asyncio.sleep(_RETRY_S)
                continue
            except Exception:
                # A bug must not end presence for good: logged, and tried again.
                log.exception("presence could not be brought up to date in Redis")
                await asyncio.sleep(_RETRY_S)
                continue
            self._wake.clear()
            if self._dirty:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, renew_at - loop.time()))

    async def _flush_dirty(self) -> None:
        # Taken off the queue before Redis is asked: a change meanwhile queues it again.
        while self._dirty:
            room, owner = key = next(iter(self._dirty))
            del self._dirty[key]
            sender = self._presence.held_here(room, owner)
            try:
                if sender is None:
                    await self._apply_release(room, owner)
                else:
                    await self._apply_hold([(room, owner, sender)])
            except Exception:
                self._dirty.setdefault(key, None)
                raise

    async def _renew_all(self) -> None:
        holds = self._presence.all_held()
        for start in range(0, len(holds), _RENEW_BATCH):
            await self._apply_hold(holds[start : start + _RENEW_BATCH])

    async def _apply_hold(self, holds: list[tuple[str, str, Sender]]) -> None:
        args: list[Any] = [_PREFIX, self._lease_ms, self._node]
        for room, owner, sender in holds:
            args += [room, owner, json.dumps(sender.public())]
        joined = await self._hold(keys=[_LAPSES], args=args)
        for room, _, who, count in joined:
            await self._publish(room, "join", who, count)

    async def _apply_release(self, room: str, owner: str) -> None:
        left = await self._release(keys=[_LAPSES], args=[_PREFIX, self._node, room, owner])
        if left:
            await self._publish(left[0], "leave", left[2], left[3])

    async def _sweep_lapsed(self) -> None:
        for room, _, who, count in await self._sweep(keys=[_LAPSES], args=[_PREFIX, _SWEEP_LIMIT]):
            await self._publish(room, "leave", who, count)

    async def _publish(self, room: str, action: str, who: str, count: object) -> None:
        # Awaited in turn, by this one task: every node sees one person's joins
        # and leaves in the order Redis decided them.
        sent = self._presence.publish(room, action, _sender(who), int(str(count)))
        if sent is not None:
            await quietly(sent, room)
