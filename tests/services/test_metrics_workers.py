"""`/metrics` with `--workers 2` and Redis: the supervisor reports the sum over both workers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

from tests.support.client import EventStream, request, wait_until
from tests.support.metrics import Scrape, metrics_address, scrape
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerProcess

Spawn = Callable[..., ServerProcess]
_FOLDER = re.compile(r"metrics: the workers write their values in (\S+)")
_STREAMS = 16  # SO_REUSEPORT spreads them: all on one worker has odds of 2 in 65536


async def _start(spawn: Spawn, redis: RedisServer) -> ServerProcess:
    proc = spawn(
        "--workers", "2", "--redis-url", redis.url, "--shutdown-timeout", "2",
        "--metrics-listen", "127.0.0.1:0",
    )  # fmt: skip
    await asyncio.to_thread(proc.wait_for_log, "(2 workers)", 15)
    return proc


async def _health_by_pid(address: tuple[str, int], tries: int = 200) -> tuple[dict[int, int], int]:
    """Each worker's open streams (pid -> /healthz "streams") and how many requests it took."""
    seen: dict[int, int] = {}
    made = 0
    while len(seen) < 2 and made < tries:
        response = await request(address, "GET", "/healthz", jar=None)
        made += 1
        health = response.json()
        assert isinstance(health, dict)
        seen[int(health["pid"])] = int(health["streams"])
    assert len(seen) == 2, f"only {seen} answered in {made} requests"
    return seen, made


async def _until(where: tuple[str, int], check: Callable[[Scrape], bool], what: str) -> Scrape:
    last: list[Scrape] = []

    async def holds() -> bool:
        last[:] = [await scrape(where)]
        return check(last[0])

    await wait_until(holds, 10.0, what)
    return last[0]


async def test_two_workers_sum_their_requests_and_streams(
    spawn: Spawn, redis_server: RedisServer
) -> None:
    proc = await _start(spawn, redis_server)
    where = metrics_address(proc)
    assert where != proc.address
    assert f"metrics on http://127.0.0.1:{where[1]}/metrics" in proc.log
    # The workers do not listen for metrics themselves: only the supervisor logged it.
    assert proc.log.count("metrics on http://") == 1

    by_pid, made = await _health_by_pid(proc.address)
    healthz = {"route": "/healthz", "method": "GET", "status": "200"}
    counted = await _until(
        where,
        lambda s: s.value("ssechat_http_requests_total", **healthz) == made,
        f"{made} /healthz requests answered by both workers, summed",
    )
    assert counted.value("ssechat_build_info", version="0.1.0") == 1
    assert counted.value("ssechat_broker_up") == 1

    streams = [await EventStream.open(proc.address, jar=None) for _ in range(_STREAMS)]
    assert all(s.status == 200 for s in streams)
    opened = await _until(
        where,
        lambda s: s.value("ssechat_streams_open", transport="sse") == _STREAMS,
        f"{_STREAMS} streams open over both workers",
    )
    assert opened.value("ssechat_streams_opened_total", transport="sse") == _STREAMS
    by_pid, _ = await _health_by_pid(proc.address)
    assert sum(by_pid.values()) == _STREAMS
    assert all(count > 0 for count in by_pid.values()), by_pid

    # A post on one worker reaches the streams of both, through Redis: each worker counts
    # what it sent, and the sum is one event per stream.
    before = opened.value("ssechat_events_sent_total", transport="sse")
    body = b'{"message": "to everyone"}'
    headers = [("content-type", "application/json")]
    assert (await request(proc.address, "POST", "/send-message", headers, body)).status == 200
    for stream in streams:
        while (await stream.next_event(5.0)).data != "to everyone":
            pass
    await _until(
        where,
        lambda s: s.value("ssechat_events_sent_total", transport="sse") >= before + _STREAMS,
        "the post sent to every stream, summed over the workers",
    )

    # A worker killed: its streams leave the gauge (marked dead), its counters stay.
    victim = next(pid for pid, count in by_pid.items() if count > 0)
    requests_before = (await scrape(where)).total("ssechat_http_requests_total")
    os.kill(victim, signal.SIGKILL)
    await asyncio.to_thread(proc.wait_for_log, f"(pid {victim}) was killed by SIGKILL", 10)
    left = await _until(
        where,
        lambda s: s.value("ssechat_streams_open", transport="sse") == _STREAMS - by_pid[victim],
        "the dead worker's streams no longer open",
    )
    assert left.total("ssechat_http_requests_total") >= requests_before
    for stream in streams:
        await stream.close()
    await _until(
        where,
        lambda s: s.value("ssechat_streams_open", transport="sse") == 0,
        "every stream closed",
    )
    # The supervisor's metrics folder is its own, and gone once it stops.
    found = _FOLDER.search(proc.log)
    assert found is not None
    folder = Path(found.group(1))
    assert await asyncio.to_thread(lambda: any(folder.glob("*.db")))
    assert await asyncio.to_thread(proc.terminate) == 0
    assert not await asyncio.to_thread(folder.exists)
