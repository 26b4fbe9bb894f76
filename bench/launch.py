"""Starting and stopping the processes a run needs: the servers under test and Redis.

Every process is one the runner started itself, and it stops them by PID.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "REDIS_PACKAGE",
    "BenchError",
    "Started",
    "free_port",
    "raise_open_files",
    "redis_server_path",
    "start",
    "start_redis",
    "stop",
    "stop_all",
    "wait_listening",
    "wait_redis",
]


class BenchError(Exception):
    """A run could not be carried out (server would not start, loadgen broke)."""


def free_port(avoid: frozenset[int] | set[int] = frozenset()) -> int:
    """A loopback TCP port nobody listens on right now, and not in `avoid`."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in avoid:
            return port
    raise BenchError("no free loopback port")


def raise_open_files() -> int:
    """Raise RLIMIT_NOFILE to its hard limit (children inherit it); returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> None:
    """Poll until something accepts on `port`.

    Raises:
        BenchError: the server exited or did not listen in time.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the server exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"the server did not listen on port {port} within {timeout_s:.0f} s")


def stop(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM the process we started, then SIGKILL it if it lingers."""
    stop_all([proc], grace_s)


def stop_all(procs: Sequence[subprocess.Popen[bytes]], grace_s: float = 15.0) -> None:
    """SIGTERM every process we started (by PID), together; SIGKILL those that linger."""
    live = [p for p in procs if p.poll() is None]
    for proc in live:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in live:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Started:
    """A process the runner started and must stop: a server, one of its nodes, Redis."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path


def start(name: str, argv: list[str], port: int, log_path: Path, cwd: Path) -> Started:
    """Start `argv` with stdout and stderr to `log_path` and PORT in its environment."""
    env = dict(os.environ, PORT=str(port))
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return Started(name, proc, port, log_path)


REDIS_PACKAGE = "redis-server"  # Debian's package; it installs /usr/bin/redis-server


def redis_server_path() -> str | None:
    """Where redis-server is, or None."""
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


def start_redis(log_path: Path, workdir: str) -> Started:
    """A throwaway redis-server on a free loopback port, working in `workdir`, answering PING.

    Raises:
        BenchError: redis-server is missing, exited, or does not answer.
    """
    path = redis_server_path()
    if path is None:
        raise BenchError(
            f"redis-server is missing: install Debian's {REDIS_PACKAGE} package "
            f"(apt-get install {REDIS_PACKAGE})"
        )
    port = free_port()
    argv = [
        path,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", workdir,
        "--save", "",  # memory only: no snapshots, no append-only file
        "--appendonly", "no",
        "--daemonize", "no",
        "--loglevel", "warning",
    ]  # fmt: skip
    started = start("redis", argv, port, log_path, Path(workdir))
    try:
        wait_redis(started.proc, port, 10.0)
    except BenchError:
        stop(started.proc)
        raise
    return started


def wait_redis(proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> None:
    """Poll until Redis on `port` answers PING with PONG.

    Raises:
        BenchError: Redis exited or did not answer in time.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"redis-server exited with status {proc.returncode} at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise BenchError(f"redis-server did not answer PING on port {port} within {timeout_s:.0f} s")
