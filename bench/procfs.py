"""What a process and the machine spent, read from /proc (proc(5)): memory and CPU."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "CLK_TCK",
    "QUIET_CORES",
    "cpu_s",
    "machine_jiffies",
    "peak_rss_kb",
    "rss_kb",
    "wait_for_quiet",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [pid], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kb(pid: int) -> int:
    """Resident memory (VmRSS) of `pid` and its descendants, in KiB."""
    return sum(_status_kb(p, "VmRSS:") for p in _descendants(pid))


def peak_rss_kb(pid: int) -> int:
    """VmHWM of `pid` (its own high-water mark), in KiB."""
    return _status_kb(pid, "VmHWM:")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of `pid`, its reaped children and live descendants."""
    total = 0.0
    for i, p in enumerate(_descendants(pid)):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # proc(5) fields 14-17: utime, stime, cutime, cstime; after the ')' the
        # first item is field 3, so field n is at index n - 3.
        ticks = int(fields[11]) + int(fields[12])
        if i == 0:
            ticks += int(fields[13]) + int(fields[14])
        total += ticks / CLK_TCK
    return total


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs together, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


QUIET_CORES = 0.3


def wait_for_quiet(max_wait_s: float, log: Callable[[str], None]) -> float:
    """Wait (bounded) until the machine is nearly idle; returns the last busy cores seen.

    Other programs sharing the machine skew every figure, so a run starts in a
    quiet second when there is one within `max_wait_s`.
    """
    deadline = time.monotonic() + max_wait_s
    said = False
    while True:
        busy0, total0 = machine_jiffies()
        time.sleep(1.0)
        busy1, total1 = machine_jiffies()
        cores = (busy1 - busy0) / max(total1 - total0, 1) * (os.cpu_count() or 1)
        if cores < QUIET_CORES or time.monotonic() >= deadline:
            if said:
                log(f"  machine at {cores:.2f} busy cores; starting")
            return cores
        if not said:
            log(f"  machine busy ({cores:.2f} cores in use by others): waiting for quiet")
            said = True
