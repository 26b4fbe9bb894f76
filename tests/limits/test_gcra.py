"""GCRA with the clock in the test's hand: a burst, then the steady rate; refusals are free."""

from __future__ import annotations

import pytest

from sse.limits.gcra import Rate, gcra

# One a second, three at once.
RATE = Rate("test", per_s=1.0, burst=3)
START = 1000.0


def _run(rate: Rate, times: list[float], tat: float = 0.0) -> tuple[list[bool], float]:
    allowed = []
    for now in times:
        ok, tat, _ = gcra(tat, now, rate)
        allowed.append(ok)
    return allowed, tat


def test_a_fresh_client_gets_its_burst_at_once_then_is_refused() -> None:
    allowed, tat = _run(RATE, [START] * 4)
    assert allowed == [True, True, True, False]
    ok, _, retry_after = gcra(tat, START, RATE)
    assert not ok
    assert retry_after == pytest.approx(1.0)


def test_after_the_burst_one_request_per_interval_passes() -> None:
    _, tat = _run(RATE, [START] * 3)
    for second in range(1, 20):
        now = START + second
        ok, tat, _ = gcra(tat, now, RATE)
        assert ok, f"the one request of second {second}"
        refused, same, retry_after = gcra(tat, now, RATE)
        assert not refused, f"a second request in second {second}"
        assert same == tat
        assert retry_after == pytest.approx(1.0)


def test_the_retry_after_is_exactly_when_it_would_pass() -> None:
    _, tat = _run(RATE, [START] * 3)
    _, _, retry_after = gcra(tat, START + 0.25, RATE)
    assert retry_after == pytest.approx(0.75)
    assert not gcra(tat, START + 0.25 + retry_after - 0.01, RATE)[0]
    assert gcra(tat, START + 0.25 + retry_after, RATE)[0]


def test_a_refused_request_leaves_the_state_as_it_was() -> None:
    _, tat = _run(RATE, [START] * 3)
    for _ in range(1000):
        ok, new_tat, _ = gcra(tat, START + 0.5, RATE)
        assert not ok
        assert new_tat == tat
    # A client that kept asking is served exactly when a patient one would be.
    assert gcra(tat, START + 1.0, RATE)[0]


def test_an_idle_client_gets_no_more_than_its_burst_back() -> None:
    _, tat = _run(RATE, [START] * 3)
    allowed, _ = _run(RATE, [START + 3600.0] * 5, tat)
    assert allowed == [True, True, True, False, False]


def test_a_burst_of_one_is_a_plain_interval() -> None:
    rate = Rate("one", per_s=2.0, burst=1)
    allowed, _ = _run(rate, [START, START, START + 0.49, START + 0.5, START + 0.5])
    assert allowed == [True, False, False, True, False]


def test_scaled_multiplies_rate_and_burst_and_keeps_the_name() -> None:
    assert RATE.scaled(10) == Rate("test", per_s=10.0, burst=30)
    assert Rate("tiny", per_s=0.1, burst=1).scaled(0.1).burst == 1
    allowed, _ = _run(RATE.scaled(10), [START] * 31)
    assert allowed.count(True) == 30
