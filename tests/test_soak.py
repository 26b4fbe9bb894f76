"""`make soak`'s script, run for a few seconds: it starts its own server, checks, and reports."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SOAK = Path(__file__).resolve().parent.parent / "bench" / "soak.py"


@pytest.mark.timeout(300)
def test_a_short_soak_loses_nothing_and_prints_its_table() -> None:
    # A lighter load than `make soak` (the machine is shared), every part of it still there:
    # long-lived and short streams, room posts, conversations and one slow reader.
    argv = [sys.executable, str(SOAK), "--seconds", "6", "--sample-every-s", "1"]
    argv += ["--streams", "40", "--posts-per-s", "20", "--churn-per-s", "10"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "| server | first | last | max | slope per minute |" in out
    for row in ("| RSS (MiB) |", "| open files |", "| streams (/healthz) |"):
        assert row in out
    assert "| lost | 0 |" in out
    assert "| long-lived streams cut | 0 of 40 |" in out
    assert "| slow readers cut by the server (KiB it got in all) | 1 of 1 (" in out
    assert "| failures | 0 |" in out
    assert "OK: no message lost" in out


def _soak() -> Any:
    sys.path.insert(0, str(SOAK.parent))
    try:
        return importlib.import_module("soak")  # bench/ is no package: its scripts import so
    finally:
        sys.path.remove(str(SOAK.parent))


def test_slope_is_the_least_squares_fit_per_minute() -> None:
    slope_per_min = _soak().slope_per_min
    assert slope_per_min([(0.0, 10.0), (30.0, 11.0), (60.0, 12.0)]) == pytest.approx(2.0)
    assert slope_per_min([(0.0, 5.0), (5.0, 7.0), (10.0, 5.0), (15.0, 7.0)]) == pytest.approx(4.8)
    assert slope_per_min([(0.0, 1.0)]) == 0.0


def test_a_message_a_stream_missed_fails_the_soak() -> None:
    soak = _soak()
    counts = soak.Counts()
    # Post 0 before the stream opened, 1 and 2 while it was open, 3 not acknowledged.
    counts.posts = [
        soak.Posted(0.5, 0.6, 200),
        soak.Posted(2.0, 2.1, 200),
        soak.Posted(3.0, 3.1, 200),
        soak.Posted(4.0, 0.0, 0),
    ]
    stream = soak.RoomStream(0)
    stream.opened_at, stream.closed_at = 1.0, 9.0
    stream._scan(b"data: soak-1. x\n\ndata: soak-")
    stream._scan(b"3. x\n\n")  # split across two reads, found whole; not expected, no harm
    counts.slow_cycles = 1
    soak._check(counts, [stream])
    assert counts.failures == ["long-lived stream 0 lost 1 of 2 messages"]
    stream._scan(b"data: soak-2. x\n\ndata: soak-2. x\n\n")
    counts.failures.clear()
    soak._check(counts, [stream])
    assert counts.failures == ["long-lived stream 0 got 1 messages twice"]
