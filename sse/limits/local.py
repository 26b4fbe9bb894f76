"""Limits counted in this process: bounded tables of GCRA states and of open counts."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence

from sse.limits.gcra import Rate, gcra

__all__ = ["LocalCaps", "LocalRates"]

# Clients remembered at most; past it the least recently seen is forgotten first.
# A forgotten client only gets its burst back: a flood of new addresses or
# identities cannot grow memory without bound.
DEFAULT_MAX_CLIENTS = 100_000


class LocalRates:
    """GCRA states by (limit, client), least recently used first, bounded."""

    def __init__(self, max_clients: int = DEFAULT_MAX_CLIENTS) -> None:
        self._states: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._max = max_clients

    def __len__(self) -> int:
        return len(self._states)

    def hit(self, rate: Rate, client: str, now: float | None = None) -> float:
        """Count one request; 0.0 when allowed, else the seconds until it would be."""
        # `hit_all` for one client, without its lists: every request passes here.
        key = (rate.name, client)
        states = self._states
        allowed, tat, retry_after = gcra(
            states.get(key, 0.0), time.monotonic() if now is None else now, rate
        )
        if not allowed:
            return retry_after
        states[key] = tat
        states.move_to_end(key)
        if len(states) > self._max:
            states.popitem(last=False)
        return 0.0

    def hit_all(self, checks: Sequence[tuple[Rate, str]], now: float | None = None) -> float:
        """Count one request against every (rate, client), or, if one refuses, against none.

        As the Redis script does: a guest refused for its address is not charged
        for itself, so a refusal costs nothing (0.0 when allowed, else the wait).
        """
        if len(checks) == 1:
            return self.hit(*checks[0], now)
        when = time.monotonic() if now is None else now
        states = self._states
        new: list[tuple[tuple[str, str], float]] = []
        wait, refused = 0.0, False
        for rate, client in checks:
            key = (rate.name, client)
            allowed, tat, retry_after = gcra(states.get(key, 0.0), when, rate)
            wait, refused = max(wait, retry_after), refused or not allowed
            new.append((key, tat))
        if refused:
            return wait
        for key, tat in new:
            states[key] = tat
            states.move_to_end(key)
        while len(states) > self._max:
            states.popitem(last=False)
        return 0.0


class LocalCaps:
    """How many of something each client has open, by (cap, client); holders by member."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], set[str]] = {}

    def acquire(self, cap: str, client: str, member: str, size: int) -> bool:
        """Count `member` as open for `client` unless `size` are open already."""
        held = self._open.setdefault((cap, client), set())
        if member in held:
            return True
        if len(held) >= size:
            if not held:
                del self._open[(cap, client)]
            return False
        held.add(member)
        return True

    def release(self, cap: str, client: str, member: str) -> None:
        """`member` closed; an empty entry is dropped (the table holds only what is open)."""
        key = (cap, client)
        held = self._open.get(key)
        if held is None:
            return
        held.discard(member)
        if not held:
            del self._open[key]

    def count(self, cap: str, client: str) -> int:
        """How many `client` has open."""
        return len(self._open.get((cap, client), ()))
