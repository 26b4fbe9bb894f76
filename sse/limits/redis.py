"""Limits shared by every node through Redis: GCRA states and leased caps, in Lua.

Each script reads the clock with Redis's TIME, so nodes whose clocks differ
still agree. A cap's members are leased: each node renews the ones it holds,
so a node that dies gives its streams back within one lease.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from sse.limits.gcra import Rate

__all__ = ["CAP_LEASE_S", "RedisLimits"]

# How long a cap's member stays counted without its node renewing it.
CAP_LEASE_S = 60
_PREFIX = "ssechat:limit:"

# All or nothing: when one key refuses, none is charged. Returns the seconds to wait.
_HIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local new = {}
local wait = 0
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  if tat - now > tolerance then
    if tat - now - tolerance > wait then wait = tat - now - tolerance end
  end
  new[i] = tat + interval
end
if wait > 0 then return tostring(wait) end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], tostring(new[i]), 'PX', math.ceil((new[i] - now) * 1000) + 1000)
end
return '0'
"""
# KEYS[1] the cap's set; ARGV member, size, lease (ms). 1 when counted, 0 when full.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and
   redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
# Renew the leases of (KEYS[i], ARGV[i]) held; ARGV[#KEYS + 1] the lease (ms). A
# member lost meanwhile (Redis restarted, an outage longer than the lease) is
# counted again: it is still open.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[#KEYS + 1])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now + lease, ARGV[i])
  redis.call('PEXPIRE', KEYS[i], lease)
end
return #KEYS
"""


class RedisLimits:
    """Rates and caps in Redis; every call may raise `redis.RedisError`."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._hit = client.register_script(_HIT)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)

    async def hit(self, checks: Sequence[tuple[Rate, str]]) -> float:
        """Count one request against every (rate, client); 0.0, or the seconds to wait."""
        keys: list[str] = []
        args: list[float] = []
        for rate, client in checks:
            interval = 1.0 / rate.per_s
            keys.append(f"{_PREFIX}rate:{rate.name}:{client}")
            args += [interval, interval * (rate.burst - 1)]
        wait = await self._hit(keys=keys, args=args)
        return float(wait)

    async def acquire(self, cap: str, client: str, member: str, size: int) -> bool:
        """Count `member` as open for `client` unless `size` are open on all nodes together."""
        key = f"{_PREFIX}cap:{cap}:{client}"
        return bool(await self._acquire(keys=[key], args=[member, size, CAP_LEASE_S * 1000]))

    async def release(self, cap: str, client: str, member: str) -> None:
        """`member` closed."""
        await self._client.zrem(f"{_PREFIX}cap:{cap}:{client}", member)

    async def renew(self, held: Sequence[tuple[str, str, str]]) -> None:
        """Renew the leases of (cap, client, member) this node holds, in batches."""
        for start in range(0, len(held), 500):
            batch = held[start : start + 500]
            keys = [f"{_PREFIX}cap:{cap}:{client}" for cap, client, _ in batch]
            members: list[str | int] = [member for _, _, member in batch]
            await self._renew(keys=keys, args=[*members, CAP_LEASE_S * 1000])

    async def add_tokens(self, client: str, day: str, tokens: int) -> None:
        """Count `tokens` against `client`'s budget of `day` (kept two days)."""
        key = f"{_PREFIX}tokens:{day}:{client}"
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.incrby(key, tokens)
            pipe.expire(key, 2 * 86400)
            await pipe.execute()

    async def tokens(self, client: str, day: str) -> int:
        """Tokens `client` used on `day`."""
        used = await self._client.get(f"{_PREFIX}tokens:{day}:{client}")
        return int(used or 0)
