"""The generic cell rate algorithm (GCRA): a token bucket held as one number per client.

Pure: the caller keeps the state (a "theoretical arrival time") and the clock.
A rate of `per_s` with bursts of `burst` lets a fresh client make `burst`
requests at once, then one every `1 / per_s` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Rate", "gcra"]

# A thousandth of an interval: far above float rounding, far below any wait.
_SLACK = 1e-3


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
    # The slack absorbs the rounding of `tat` summed from many intervals: without
    # it a burst of 30 at 10/s admits 29 when the requests share one instant.
    tolerance = interval * (rate.burst - 1)
    start = tat if tat > now else now
    if start - now > tolerance + interval * _SLACK:
        return False, tat, start - now - tolerance
    return True, start + interval, 0.0
