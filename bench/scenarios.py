"""The load shapes the benchmark runs (S0 to S6-1p), with their sizes and deadlines."""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["GROUPS", "S6_RATE", "S6_STREAMS_PER_PROCESS", "SCENARIOS", "Scenario"]


@dataclass(frozen=True)
class Scenario:
    """One load shape; `joins` says whether it wants join announcements on."""

    key: str
    streams: int
    joins: bool
    messages: int = 0
    rate: float = 0.0
    duration_s: float = 0.0
    publishers: int = 4
    connect_timeout_s: float = 60.0
    drain_timeout_s: float = 10.0
    settle_s: float = 0.0  # idle time before measuring memory with the streams open
    budget_s: float = 110.0  # the loadgen's hard cap for the whole scenario
    inflight: int = 256  # streams connecting at once (per loadgen process)
    # Multi-process (S6): the streams split evenly over `nodes` ssechat processes,
    # each its own `server.py`, sharing one room through a Redis of the runner's own
    # when `redis`; every message is published to process 1. Such a scenario runs
    # only against ssechat (`ours_only`): other servers have no multi-process mode.
    nodes: int = 1
    redis: bool = False
    ours_only: bool = False

    @property
    def title(self) -> str:
        """What the scenario does, with its actual sizes."""
        n = f"{self.streams:,} streams"
        if self.key == "S0":
            return f"S0: {n} opened one at a time, join announcements on"
        if self.key == "S1a":
            return f"S1a: {n}, join announcements on"
        if self.key == "S1b":
            return f"S1b: {self.streams:,} idle streams, announcements off"
        rate = f"{self.rate:g} messages/s for {self.duration_s:g} s"
        wanted = f"{self.streams * self.rate:,.0f} events/s wanted"
        if self.nodes > 1:
            return (
                f"{self.key}: {n} over {self.nodes} ssechat processes "
                f"({self.streams // self.nodes:,} each) sharing one Redis, {rate} ({wanted}), "
                "every message published to process 1"
            )
        if self.ours_only:
            return (
                f"{self.key}: {n} on 1 ssechat process without Redis (the load of one S6 "
                f"process, for comparison), {rate} ({wanted})"
            )
        if self.rate:
            return f"{self.key}: {n}, {rate} ({wanted})"
        if self.key == "S4":
            return (
                f"S4: {n}, {self.messages:,} sends (POSTs, or frames on a WebSocket; at most "
                f"{self.duration_s:g} s) as fast as possible over {self.publishers} connections"
            )
        return f"{self.key}: {n}, {self.messages:,} messages as fast as possible"

    def quick(self) -> Scenario:
        """Ten times smaller, for a sanity run."""
        duration_s = self.duration_s / 5
        return replace(
            self,
            streams=max(self.streams // 10, 2),
            # A fixed rate keeps its rate and runs shorter; the rest send 10x fewer.
            messages=round(self.rate * duration_s) if self.rate else self.messages // 10,
            duration_s=duration_s,
            connect_timeout_s=30.0,
            drain_timeout_s=5.0,
            budget_s=45.0,
        )


# S6: streams per process, and the rate. On the 2-core VM, 3 messages/s keep the
# machine at about 1.5 busy cores (2 ssechat processes, Redis, 2 loadgen
# processes); at 5 (S3's 100,000 events/s) both cores are busy and latency is
# mostly waiting for a core (bench/README.md).
S6_STREAMS_PER_PROCESS = 10_000
S6_RATE = 3.0

SCENARIOS = [
    # Time to first event: each stream's first event is its own join announcement,
    # and with one connecting at a time nothing else is measured with it.
    Scenario(
        "S0",
        streams=500,
        joins=True,
        inflight=1,
    ),
    Scenario(
        "S1a",
        streams=2000,
        joins=True,
        connect_timeout_s=100.0,
        settle_s=0.5,
    ),
    Scenario(
        "S1b",
        streams=10_000,
        joins=False,
        settle_s=1.0,
    ),
    Scenario(
        "S2",
        streams=1000,
        joins=False,
        messages=2000,
        publishers=4,
        drain_timeout_s=15.0,
    ),
    Scenario(
        "S3",
        streams=5000,
        joins=False,
        rate=20.0,
        duration_s=15.0,
        messages=300,
        publishers=4,
    ),
    # S3's 100,000 events/s over 1,000 streams: latency at a load both transports
    # keep up with, where S2 measures each at its own (different) top speed.
    Scenario(
        "S5",
        streams=1000,
        joins=False,
        rate=100.0,
        duration_s=15.0,
        messages=1500,
        publishers=4,
    ),
    Scenario(
        "S4",
        streams=10,
        joins=False,
        messages=20_000,
        duration_s=10.0,
        publishers=8,
    ),
    # More streams than one process may hold (20,000 open files here), over two
    # processes sharing one Redis; then the same load per process on a single
    # process without Redis. `--scenarios S6` runs both.
    Scenario(
        "S6",
        streams=2 * S6_STREAMS_PER_PROCESS,
        joins=False,
        rate=S6_RATE,
        duration_s=15.0,
        messages=round(S6_RATE * 15.0),
        publishers=4,
        # Per loadgen process, that is per ssechat process: more than about 100
        # streams opening at once on a process that does not yet read the room
        # from Redis fail (redis-py's pool of 100 connections; see bench/README.md).
        inflight=64,
        nodes=2,
        redis=True,
        ours_only=True,
    ),
    Scenario(
        "S6-1p",
        streams=S6_STREAMS_PER_PROCESS,
        joins=False,
        rate=S6_RATE,
        duration_s=15.0,
        messages=round(S6_RATE * 15.0),
        publishers=4,
        inflight=64,
        ours_only=True,
    ),
]
# Scenario groups that --scenarios accepts by one name.
GROUPS = {"S1": ["S1a", "S1b"], "S6": ["S6", "S6-1p"]}
