"""The per-node tables: GCRA states bounded by an LRU, open counts that hold only what is open."""

from __future__ import annotations

from sse.limits.gcra import Rate
from sse.limits.local import LocalCaps, LocalRates

RATE = Rate("test", per_s=1.0, burst=2)
OTHER = Rate("other", per_s=1.0, burst=2)
NOW = 500.0


def test_each_client_has_its_own_burst() -> None:
    rates = LocalRates()
    assert [rates.hit(RATE, "ip:a", NOW) for _ in range(3)][:2] == [0.0, 0.0]
    assert rates.hit(RATE, "ip:a", NOW) > 0.0
    assert rates.hit(RATE, "ip:b", NOW) == 0.0


def test_limits_of_different_names_are_counted_apart() -> None:
    rates = LocalRates()
    for _ in range(2):
        assert rates.hit(RATE, "ip:a", NOW) == 0.0
    assert rates.hit(RATE, "ip:a", NOW) > 0.0
    assert rates.hit(OTHER, "ip:a", NOW) == 0.0


def test_a_refusal_reports_the_wait_and_adds_nothing() -> None:
    rates = LocalRates()
    rates.hit(RATE, "ip:a", NOW)
    rates.hit(RATE, "ip:a", NOW)
    assert rates.hit(RATE, "ip:a", NOW) == 1.0
    assert len(rates) == 1
    assert rates.hit(RATE, "ip:a", NOW + 1.0) == 0.0


def test_the_table_never_holds_more_than_its_max_clients() -> None:
    rates = LocalRates(max_clients=100)
    for n in range(10_000):
        assert rates.hit(RATE, f"ip:{n}", NOW) == 0.0
        assert len(rates) <= 100
    assert len(rates) == 100


def test_the_least_recently_seen_client_is_forgotten_first() -> None:
    rates = LocalRates(max_clients=3)
    for client in ("a", "b", "c"):
        rates.hit(RATE, client, NOW)
        rates.hit(RATE, client, NOW)
    # "a" used its burst; seeing it again is not possible while refused, so
    # "b" and "c" are touched, then a newcomer pushes out the oldest: "a".
    rates.hit(RATE, "b", NOW + 1.0)
    rates.hit(RATE, "c", NOW + 1.0)
    rates.hit(RATE, "d", NOW + 1.0)
    assert len(rates) == 3
    # Forgotten, "a" has its burst again; "b" (remembered) does not.
    assert rates.hit(RATE, "a", NOW + 1.0) == 0.0
    assert rates.hit(RATE, "a", NOW + 1.0) == 0.0
    assert rates.hit(RATE, "c", NOW + 1.0) > 0.0


def test_caps_count_up_to_the_size_and_refuse_past_it() -> None:
    caps = LocalCaps()
    assert caps.acquire("streams", "guest:a", "m1", 2)
    assert caps.acquire("streams", "guest:a", "m2", 2)
    assert not caps.acquire("streams", "guest:a", "m3", 2)
    assert caps.count("streams", "guest:a") == 2
    # Another client, another cap: untouched.
    assert caps.acquire("streams", "guest:b", "m3", 2)
    assert caps.acquire("streams_per_ip", "guest:a", "m3", 2)


def test_acquiring_a_held_member_again_takes_no_second_slot() -> None:
    caps = LocalCaps()
    assert caps.acquire("streams", "c", "m1", 1)
    assert caps.acquire("streams", "c", "m1", 1)
    assert caps.count("streams", "c") == 1


def test_release_frees_the_slot_and_is_idempotent() -> None:
    caps = LocalCaps()
    caps.acquire("streams", "c", "m1", 1)
    caps.release("streams", "c", "m1")
    caps.release("streams", "c", "m1")
    caps.release("streams", "nobody", "m9")
    assert caps.count("streams", "c") == 0
    assert caps.acquire("streams", "c", "m2", 1)


def test_the_table_holds_only_what_is_open() -> None:
    caps = LocalCaps()
    for n in range(1000):
        assert caps.acquire("streams", f"c{n}", "m", 1)
    for n in range(1000):
        caps.release("streams", f"c{n}", "m")
    # Refused with a size of 0: no empty entry is left behind either.
    assert not caps.acquire("streams", "zero", "m", 0)
    assert caps._open == {}  # the table itself: what most any number of clients leave in it


def test_several_clients_are_charged_all_or_nothing() -> None:
    rates = LocalRates()
    wide = RATE.scaled(2)  # four at once for the address
    for n in range(4):
        assert rates.hit_all([(RATE, f"guest:{n // 2}"), (wide, "ip:a")], NOW) == 0.0
    # The address is spent: a new guest is refused, and its own burst is untouched.
    assert rates.hit_all([(RATE, "guest:new"), (wide, "ip:a")], NOW) > 0.0
    assert rates.hit(RATE, "guest:new", NOW) == 0.0
    assert rates.hit(RATE, "guest:new", NOW) == 0.0
    # The guest is spent: refused, and the address is not charged for it.
    assert rates.hit_all([(RATE, "guest:new"), (wide, "ip:b")], NOW) > 0.0
    assert [rates.hit(wide, "ip:b", NOW) for _ in range(5)].count(0.0) == 4
