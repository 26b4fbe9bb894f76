"""`--workers N`: worker processes on one port, supervised; real processes and sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.client import request, wait_until
from tests.support.redis_server import RedisServer
from tests.support.servers import ROOT, ServerProcess

Spawn = Callable[..., ServerProcess]
_STARTED = re.compile(r"worker (\d+) started: pid (\d+)")


def _workers(redis: RedisServer, count: int = 2) -> tuple[str, ...]:
    return ("--workers", str(count), "--redis-url", redis.url, "--shutdown-timeout", "2")


def _started_pids(proc: ServerProcess) -> list[int]:
    """Every worker pid the supervisor logged, in the order they started."""
    return [int(m.group(2)) for m in _STARTED.finditer(proc.log)]


def _alive(pid: int) -> bool:
    """True while `pid` runs; a zombie no one has reaped yet counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def _pid_answering(address: tuple[str, int]) -> int | None:
    """The pid in `GET /healthz` on a fresh connection, or None if it was refused or cut."""
    try:
        response = await request(address, "GET", "/healthz")
    except (ConnectionError, EOFError, TimeoutError):
        return None  # a worker just killed, its queue of accepted connections reset
    health = response.json()
    assert isinstance(health, dict)
    pid = health["pid"]
    assert isinstance(pid, int)
    return pid


async def _pids_answering(
    address: tuple[str, int], want: Callable[[set[int]], bool], tries: int = 200
) -> set[int]:
    """Pids seen over fresh connections until `want(seen)`, within `tries` and 10 s."""
    seen: set[int] = set()
    deadline = time.monotonic() + 10
    for _ in range(tries):
        pid = await _pid_answering(address)
        if pid is not None:
            seen.add(pid)
        if want(seen) or time.monotonic() > deadline:
            break
    return seen


async def _start(spawn: Spawn, redis: RedisServer, *args: str) -> ServerProcess:
    """`--workers 2` up, with both workers listening."""
    proc = spawn(*_workers(redis), *args)
    await asyncio.to_thread(proc.wait_for_log, "(2 workers)", 15)
    return proc


async def test_two_workers_serve_one_port_and_both_answer(
    spawn: Spawn, redis_server: RedisServer
) -> None:
    proc = await _start(spawn, redis_server)
    host, port = proc.address
    assert f"ssechat listening on http://{host}:{port} (2 workers)" in proc.log
    workers = set(_started_pids(proc))
    assert len(workers) == 2
    assert proc.proc.pid not in workers  # the supervisor serves nothing itself
    seen = await _pids_answering(proc.address, lambda seen: len(seen) == 2)
    assert seen == workers
    # Each worker's lines say whose they are.
    for index, pid in enumerate(_started_pids(proc)):
        assert f"worker {index} [{pid}] ssechat: ssechat listening on" in proc.log
    assert await asyncio.to_thread(proc.terminate, 10) == 0


async def test_killed_worker_is_logged_and_replaced(
    spawn: Spawn, redis_server: RedisServer
) -> None:
    proc = await _start(spawn, redis_server)
    victim, survivor = _started_pids(proc)
    os.kill(victim, signal.SIGKILL)
    await asyncio.to_thread(proc.wait_for_log, f"(pid {victim}) was killed by SIGKILL", 5)
    assert "restarting it in 0.5s" in proc.log
    await wait_until(lambda: len(_started_pids(proc)) == 3, what="a new worker started")
    replacement = _started_pids(proc)[2]
    assert replacement not in (victim, survivor)
    await asyncio.to_thread(proc.wait_for_log, f"(pid {replacement}) is listening again", 10)
    seen = await _pids_answering(proc.address, lambda seen: replacement in seen)
    assert replacement in seen
    assert victim not in seen
    assert await asyncio.to_thread(proc.terminate, 10) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_sigterm_or_sigint_stops_every_worker_and_exits_zero(
    spawn: Spawn, redis_server: RedisServer, sig: signal.Signals
) -> None:
    proc = await _start(spawn, redis_server)
    workers = _started_pids(proc)
    started = time.monotonic()
    proc.proc.send_signal(sig)
    assert await asyncio.to_thread(proc.proc.wait, 10) == 0
    # shutdown_timeout_s is 2: nothing here waits for it, nor for SIGKILL.
    assert time.monotonic() - started < 5
    for pid in workers:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"worker pid {pid} still exists after the supervisor exited")
    # Its last line, written after every worker's: the log is read up to here.
    await asyncio.to_thread(proc.wait_for_log, "ssechat.workers: stopped")
    assert proc.log.count("ssechat: stopped") == 2
    assert "still running: SIGKILL" not in proc.log


async def test_open_stream_on_a_worker_ends_cleanly_at_sigterm(
    spawn: Spawn, redis_server: RedisServer
) -> None:
    proc = await _start(spawn, redis_server)
    reader, writer = await asyncio.open_connection(*proc.address)
    writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding: chunked" in head.lower()
    received = await asyncio.wait_for(reader.readuntil(b"data: A new user joined!\n\n"), 5)
    proc.proc.send_signal(signal.SIGTERM)
    received += await asyncio.wait_for(reader.read(), 10)
    # The final chunk (RFC 9112 section 7.1) and then EOF: ended, not cut.
    assert received.endswith(b"\r\n0\r\n\r\n")
    writer.close()
    assert await asyncio.to_thread(proc.terminate, 10) == 0


async def test_workers_stop_by_themselves_when_the_supervisor_is_killed(
    spawn: Spawn, redis_server: RedisServer
) -> None:
    proc = await _start(spawn, redis_server)
    workers = _started_pids(proc)
    proc.kill()  # SIGKILL: no chance to stop them
    await wait_until(
        lambda: not any(_alive(pid) for pid in workers), timeout=10, what="orphans exiting"
    )
    await asyncio.to_thread(proc.wait_for_log, "the supervisor is gone: stopping")


def test_worker_that_cannot_start_makes_the_supervisor_give_up(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # The database's folder is a file: every worker dies while starting.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    started = time.monotonic()
    result = _run("--db", str(blocker / "chat.sqlite3"), *_workers(redis_server), timeout=45)
    assert result.returncode == 1
    assert "cannot start: it died 5 times in a row" in result.stderr
    assert "giving up" in result.stderr
    assert "(2 workers)" not in result.stderr
    # Restarted after 0.5, 1, 2 and 4 s: about 7.5 s plus five starts, then done.
    assert time.monotonic() - started < 30
    for pid in (int(m.group(2)) for m in _STARTED.finditer(result.stderr)):
        assert not _alive(pid)


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`python server.py --port 0 ARGS` to its end, its stderr read; fails after `timeout`.

    On a timeout its workers are killed too: they would outlive it (and keep the
    pipe of its stderr open).
    """
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "server.py"), "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        so_far = (exc.stderr or b"").decode(errors="replace")
        for match in _STARTED.finditer(so_far):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(match.group(2)), signal.SIGKILL)
        proc.kill()
        _, err = proc.communicate()
        log = err.decode(errors="replace")
        raise AssertionError(f"server.py did not exit within {timeout}s:\n{log}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, None, err.decode())


def test_busy_port_exits_one_naming_the_address(
    spawn: Spawn, redis_server: RedisServer, tmp_path: Path
) -> None:
    single = spawn()
    db = str(tmp_path / "workers.sqlite3")
    result = _run(*_workers(redis_server), "--port", str(single.address[1]), "--db", db)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{single.address[1]}" in result.stderr
    assert "started: pid" not in result.stderr


def test_several_workers_without_redis_are_refused() -> None:
    result = _run("--workers", "2")
    assert result.returncode == 2
    assert "--workers 2 needs --redis-url" in result.stderr


def test_zero_workers_are_refused() -> None:
    result = _run("--workers", "0", "--redis-url", "redis://127.0.0.1:1/0")
    assert result.returncode == 2
    assert "workers must be at least 1, got 0" in result.stderr
