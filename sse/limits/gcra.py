"""The generic cell rate algorithm (GCRA): a token bucket held as one number per client.

Pure: the caller keeps the state (a "theoretical arrival time") and the clock.
A rate of `per_s` with bursts of `burst` lets a fresh client make `burst`
requests at once, then one every `1 / per_s` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Rate", "gcra"]


@dataclass(frozen=True, slots=True)
class Rate:
    """A rate limit: `per_s` on average, `burst` at once; `name` is what refusals cite."""

    name: str
    per_s: float
    burst: int

    def scaled(self, factor: float) -> Rate:
        """The same limit for `factor` times as many clients (all of one address)."""
        return Rate(self.name, self.per_s * factor, max(1, round(self.burst * factor)))


def gcra(tat: float, now: float, rate: Rate) -> tuple[bool, float, float]:
    """One request at `now` against state `tat`: (allowed, the new state, retry after seconds).

    A refused request does not change the state: it costs the client nothing,
    so a client that keeps asking is served as soon as it may be.
    """
    interval = 1.0 / rate.per_s
    tolerance = interval * (rate.burst - 1)
    start = tat if tat > now else now
    if start - now > tolerance:
        return False, tat, start - now - tolerance
    return True, start + interval, 0.0
