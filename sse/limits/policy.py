"""The per-client limits of one server: which counts each action takes, and what a refusal says.

Counted here (`LocalRates`, `LocalCaps`), or through Redis when nodes share
one (`RedisLimits`). While Redis does not answer, rates and caps fall back to
this node's own counts (logged once per outage); budgets fail closed, since an
unchecked budget would be paid for upstream.

Guests are counted per identity and also, ten times as generously, per IP
address: dropping the cookie makes a new guest, but not a new address.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Sequence

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sse.auth.identity import GUEST, Identity
from sse.config import Config
from sse.errors import OverLimit
from sse.limits.gcra import Rate
from sse.limits.local import LocalCaps, LocalRates
from sse.limits.redis import CAP_LEASE_S, RedisLimits
from sse.metrics import RATE_LIMIT_WOULD_REFUSE, RATE_LIMITED
from sse.pubsub.broker import settle

__all__ = ["Claim", "Limits", "address_client"]

log = logging.getLogger("ssechat.limits")

# Redis being away, as opposed to our script or arguments being wrong (a
# ResponseError), which must show as the bug it is, not pass for an outage.
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)

# All guests of one address together may do this many times what one guest may.
GUEST_IP_FACTOR = 10
# Daily token counts a node keeps at most (without Redis).
_MAX_BUDGETS_KEPT = 100_000
# How often a node renews the leases of the caps it holds in Redis.
_RENEW_EVERY_S = CAP_LEASE_S / 3


def address_client(ip: str) -> str:
    """How limits name a client counted by its address (never an identity's owner string)."""
    return f"ip:{ip}"


class Claim:
    """Slots of caps held for one open stream or socket, given back once when it closes."""

    __slots__ = ("_held", "_limits")

    def __init__(self, limits: Limits, held: list[tuple[str, str, str]]) -> None:
        self._limits = limits
        self._held = held

    def release(self) -> None:
        """Give the slots back (idempotent)."""
        held, self._held = self._held, []
        for cap, client, member in held:
            self._limits.release(cap, client, member)


_MESSAGES = {
    "room_posts": "too many messages to the room",
    "conversations": "too many conversations created",
    "room_creations": "too many rooms created",
    "replies": "too many model replies started",
    "replies_at_once": "replies are still being written for you",
    "stream_opens": "too many streams opened",
    "requests": "too many requests",
    "guests": "too many new guests from this address",
    "streams": "too many streams open",
    "streams_per_ip": "too many streams open from this address",
    "model_concurrency": "the model is busy with other replies",
    "model_daily_tokens": "the daily limit of model tokens is reached",
}


class Limits:
    """Every per-client limit of the configuration, checked and counted."""

    def __init__(self, config: Config, redis: Redis | None = None) -> None:
        self.mode = config.limits
        self.enabled = config.limits != "off"
        self.room_posts = Rate("room_posts", config.room_posts_per_s, config.room_post_burst)
        self.conversations = _per_minute("conversations", config.conversations_per_min)
        self.room_creations = _per_minute("room_creations", config.rooms_per_min)
        self.replies = _per_minute("replies", config.replies_per_min)
        self.stream_opens = Rate(
            "stream_opens", config.stream_opens_per_s, max(1, round(10 * config.stream_opens_per_s))
        )
        self.requests = Rate(
            "requests", config.requests_per_s, max(1, round(5 * config.requests_per_s))
        )
        self.guests = _per_minute("guests", config.guests_per_min)
        self._caps = {
            "streams": config.streams_per_identity,
            "streams_per_ip": config.streams_per_ip,
            "replies_at_once": config.replies_at_once,
        }
        self._daily = (config.model_daily_tokens, config.model_guest_daily_tokens)
        self._cap_retry_s = config.cap_retry_s
        self._rates = LocalRates()
        self._open = LocalCaps()
        self._tokens: dict[tuple[str, str], int] = {}
        self._shared = RedisLimits(redis) if redis is not None else None
        # Caps this node holds in Redis, renewed while held.
        self._leased: set[tuple[str, str, str]] = set()
        self._releasing: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None
        # An outage: from the first failure to the first success (each logged once).
        self._redis_failing = False
        # While resting, calls skip Redis; a timer ends the rest, and the next call tries it.
        self._redis_resting: asyncio.TimerHandle | None = None
        self.refused: Counter[str] = Counter()
        self.would_refuse: Counter[str] = Counter()

    # -- reporting -------------------------------------------------------------

    def report(self) -> dict[str, object]:
        """For /healthz: the mode, refusals by limit, and how many clients are tracked."""
        return {
            "mode": self.mode,
            "refused": dict(self.refused),
            **({"would_refuse": dict(self.would_refuse)} if self.mode == "dry-run" else {}),
            "clients_tracked": len(self._rates),
            "shared": self._shared is not None and not self._redis_failing,
        }

    def refuse(self, limit: str, retry_after_s: float, detail: str = "") -> OverLimit | None:
        """A refusal of `limit` decided by the caller, counted for /healthz; None in dry run."""
        return self._verdict(limit, retry_after_s, detail)

    def _verdict(self, limit: str, retry_after_s: float, detail: str = "") -> OverLimit | None:
        refusal = OverLimit(limit, retry_after_s, detail or _MESSAGES.get(limit, limit))
        if self.mode == "dry-run":
            self.would_refuse[limit] += 1
            RATE_LIMIT_WOULD_REFUSE.labels(limit).inc()
            log.info("dry run: would refuse %s (retry after %.1fs)", limit, retry_after_s)
            return None
        self.refused[limit] += 1
        RATE_LIMITED.labels(limit).inc()
        return refusal

    # -- rates -----------------------------------------------------------------

    def clients(self, identity: Identity | None, ip: str) -> list[tuple[str, float]]:
        """Who an action counts against: the identity; a guest's or anonymous one's IP too."""
        if identity is None:
            return [(address_client(ip), 1.0)]
        if identity.kind == GUEST:
            return [(identity.owner, 1.0), (address_client(ip), GUEST_IP_FACTOR)]
        return [(identity.owner, 1.0)]

    def hit(
        self, rate: Rate, clients: Sequence[tuple[str, float]]
    ) -> OverLimit | Awaitable[OverLimit | None] | None:
        """Count one action of `rate` against every client (with its factor)."""
        if not self.enabled:
            return None
        checks = [(rate if f == 1.0 else _scaled(rate, f), c) for c, f in clients]
        if self._shared is not None and self._redis_resting is None:
            return self._hit_shared(rate.name, checks)
        return self._hit_here(rate.name, checks)

    async def enforce(self, rate: Rate, identity: Identity, ip: str) -> None:
        """Count one action of `identity` (and a guest's address) against `rate`.

        Raises:
            OverLimit: over it (not in a dry run).
        """
        refused = await settle(self.hit(rate, self.clients(identity, ip)))
        if refused is not None:
            raise refused

    def hit_local(self, rate: Rate, client: str) -> OverLimit | None:
        """Count one action against this node's own table only (the per-request flood guard)."""
        if not self.enabled:
            return None
        wait = self._rates.hit(rate, client)
        return None if wait == 0.0 else self._verdict(rate.name, wait)

    def _hit_here(self, name: str, checks: Sequence[tuple[Rate, str]]) -> OverLimit | None:
        wait = self._rates.hit_all(checks)
        return None if wait == 0.0 else self._verdict(name, wait)

    async def _hit_shared(self, name: str, checks: Sequence[tuple[Rate, str]]) -> OverLimit | None:
        assert self._shared is not None
        try:
            wait = await self._shared.hit(checks)
        except _UNREACHABLE as exc:
            self._redis_down(exc)
            return self._hit_here(name, checks)
        self._redis_up()
        return None if wait == 0.0 else self._verdict(name, wait)

    # -- caps ------------------------------------------------------------------

    def claim(
        self, caps: Sequence[tuple[str, str]], member: str
    ) -> Claim | OverLimit | Awaitable[Claim | OverLimit]:
        """Take a slot of every (cap, client) for `member`, or none of them."""
        if not self.enabled:
            return Claim(self, [])
        if self._shared is not None and self._redis_resting is None:
            return self._claim_shared(caps, member)
        return self._claim_here(caps, member)

    def _claim_here(self, caps: Sequence[tuple[str, str]], member: str) -> Claim | OverLimit:
        held: list[tuple[str, str, str]] = []
        for cap, client in caps:
            if not self._open.acquire(cap, client, member, self._caps[cap]):
                refusal = self._verdict(cap, self._cap_retry_s)
                if refusal is not None:
                    for taken in held:
                        self._open.release(*taken)
                    return refusal
                continue  # dry run: let it through, uncounted
            held.append((cap, client, member))
        return Claim(self, held)

    async def _claim_shared(
        self, caps: Sequence[tuple[str, str]], member: str
    ) -> Claim | OverLimit:
        shared = self._shared
        assert shared is not None
        held: list[tuple[str, str, str]] = []
        try:
            for cap, client in caps:
                if not await shared.acquire(cap, client, member, self._caps[cap]):
                    refusal = self._verdict(cap, self._cap_retry_s)
                    if refusal is not None:
                        for taken in held:
                            self.release(*taken)
                        return refusal
                    continue
                held.append((cap, client, member))
                self._leased.add((cap, client, member))
        except _UNREACHABLE as exc:
            self._redis_down(exc)
            for taken in held:
                self._leased.discard(taken)
            return self._claim_here(caps, member)
        self._redis_up()
        self._start_renewing()
        return Claim(self, held)

    def release(self, cap: str, client: str, member: str) -> None:
        """Give one slot back, here and (without waiting) in Redis."""
        self._open.release(cap, client, member)
        key = (cap, client, member)
        if key in self._leased and self._shared is not None:
            self._leased.discard(key)
            task = asyncio.get_running_loop().create_task(self._release_shared(key))
            self._releasing.add(task)  # kept until done: the loop holds tasks weakly
            task.add_done_callback(self._releasing.discard)

    async def _release_shared(self, key: tuple[str, str, str]) -> None:
        assert self._shared is not None
        try:
            await self._shared.release(*key)
        except _UNREACHABLE as exc:  # the lease lapses by itself
            self._redis_down(exc)

    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        assert self._shared is not None
        while self._leased:
            await asyncio.sleep(_RENEW_EVERY_S)
            try:
                await self._shared.renew(sorted(self._leased))
            except _UNREACHABLE as exc:
                self._redis_down(exc)

    async def close(self) -> None:
        """Stop renewing leases (they lapse by themselves)."""
        if self._redis_resting is not None:
            self._redis_resting.cancel()
            self._redis_resting = None
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)

    # -- budgets ---------------------------------------------------------------

    def daily_tokens(self, identity: Identity) -> int:
        """The identity's daily token budget (0: none)."""
        return self._daily[1] if identity.kind == GUEST else self._daily[0]

    async def check_budget(self, identity: Identity, ip: str) -> OverLimit | None:
        """Whether `identity` may start one more paid reply today.

        A budget that cannot be read refuses: the upstream would charge for it.
        """
        if not self.enabled or self.daily_tokens(identity) == 0:
            return None
        day, resets = _today()
        for client, factor in self.clients(identity, ip):
            allowed = self.daily_tokens(identity) * factor
            try:
                used = await self._used(client, day)
            except _UNREACHABLE as exc:
                self._redis_down(exc)
                # Fails closed when on (counted in /healthz); a dry run lets it through.
                return self._verdict(
                    "model_daily_tokens", 60.0, "the model's budget cannot be checked now"
                )
            if used >= allowed:
                detail = f"daily limit of model tokens reached; it resets at {resets} UTC"
                return self._verdict("model_daily_tokens", _seconds_to_midnight(), detail)
        return None

    async def spend(self, identity: Identity, ip: str, tokens: int) -> None:
        """Count `tokens` a reply used against the identity (and a guest's IP)."""
        if not self.enabled or tokens <= 0:
            return
        day, _ = _today()
        for client, _factor in self.clients(identity, ip):
            if self._shared is not None:
                try:
                    await self._shared.add_tokens(client, day, tokens)
                    continue
                except _UNREACHABLE as exc:
                    self._redis_down(exc)
            key = (client, day)
            self._tokens[key] = self._tokens.get(key, 0) + tokens
        self._forget_old_days(day)

    async def _used(self, client: str, day: str) -> int:
        if self._shared is not None:
            return await self._shared.tokens(client, day) + self._tokens.get((client, day), 0)
        return self._tokens.get((client, day), 0)

    def _forget_old_days(self, day: str) -> None:
        tokens = self._tokens
        if len(tokens) > _MAX_BUDGETS_KEPT // 2:
            for key in [k for k in tokens if k[1] != day]:
                del tokens[key]
        # Still too many today: the oldest entries go (a dict keeps insertion
        # order). Only this node's counts, so only these clients' budgets restart.
        while len(tokens) > _MAX_BUDGETS_KEPT:
            del tokens[next(iter(tokens))]

    # -- Redis's health --------------------------------------------------------

    def _redis_down(self, exc: BaseException) -> None:
        if not self._redis_failing:
            log.warning(
                "limits: Redis does not answer (%s); rates and caps are counted per node, "
                "model budgets refuse until it is back",
                exc,
            )
        self._redis_failing = True
        # Try Redis again shortly: a later call finds out whether it is back. The outage
        # itself lasts until a call succeeds, so it is logged once, not once a retry.
        if self._redis_resting is None:
            self._redis_resting = asyncio.get_running_loop().call_later(1.0, self._retry_redis)

    def _retry_redis(self) -> None:
        self._redis_resting = None

    def _redis_up(self) -> None:
        if self._redis_failing:
            log.warning("limits: Redis answers again; limits are shared by every node")
        self._redis_failing = False


@functools.lru_cache(maxsize=64)
def _scaled(rate: Rate, factor: float) -> Rate:
    return rate.scaled(factor)


def _per_minute(name: str, per_min: float) -> Rate:
    # A minute's worth may come at once; then one every 60/per_min seconds.
    return Rate(name, per_min / 60.0, max(1, round(per_min)))


def _today() -> tuple[str, str]:
    now = datetime.datetime.now(datetime.UTC)
    midnight = (now + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return now.strftime("%Y%m%d"), midnight.strftime("%Y-%m-%d %H:%M")


def _seconds_to_midnight() -> float:
    now = time.time()
    return 86400 - now % 86400
