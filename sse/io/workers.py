"""`--workers N`: N server processes on one port (SO_REUSEPORT), supervised.

The supervisor is the process the user started. It reserves the port, then runs
the same program (`ssechat`, `server.py`) again for each worker with the same
arguments plus the concrete port and `--workers 1`. Each worker is a whole server
with its own event loop and binds the port with SO_REUSEPORT, so the kernel
spreads new connections over the workers. Events cross workers only through Redis (`--redis-url`).

Each worker gets one end of a socket pair, its lifeline: it writes one byte on
it once it listens, and the supervisor's end reaching EOF tells it that the
supervisor is gone (even by SIGKILL), so it stops gracefully instead of holding
the port as an orphan.

With --metrics-listen the supervisor serves /metrics, not a worker: it is the one process
that lives as long as the server, so a scrape is answered while worker 0 restarts, and it
takes no public traffic. Before the first worker starts it points PROMETHEUS_MULTIPROC_DIR
at a fresh directory (wiped; its own, removed at the end, unless the variable was set); the
workers, started as new programs, import prometheus-client with it set and write their
values there, and the supervisor sums them (`sse.io.metrics`). A worker that exits is
marked dead, so the live-gauges (open streams) stop counting it; its counters stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, auto

from prometheus_client.multiprocess import mark_process_dead

from sse.config import Config
from sse.io.metrics import MetricsListener, multiprocess_registry

__all__ = [
    "METRICS_DIR_ENV",
    "WORKER_ENV",
    "Lifeline",
    "Supervisor",
    "WorkerSlot",
    "reserve_port",
    "supervise",
    "worker_slot_from_env",
]

log = logging.getLogger("ssechat.workers")

# Where prometheus-client's multiprocess mode keeps each process's values.
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Set by the supervisor for each worker: "<index>:<fd of its lifeline>". An
# environment variable rather than a hidden flag: every flag is in --help.
WORKER_ENV = "SSECHAT_WORKER"
_READY = b"R"
# Restart delays: doubling from the first, capped, back to the first once a
# worker stayed up _STABLE_S.
_BACKOFF_FIRST_S = 0.5
_BACKOFF_CAP_S = 10.0
_STABLE_S = 30.0
# A worker that dies before it listens, or within _QUICK_S of starting, this
# many times in a row cannot start: the supervisor gives up rather than loop.
_QUICK_S = 1.0
_MAX_QUICK_DEATHS = 5
# Time a worker gets beyond its own shutdown_timeout_s before SIGKILL.
_STOP_MARGIN_S = 5.0


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    """Who a worker process is: its index among the workers and its lifeline's fd."""

    index: int
    lifeline_fd: int


def worker_slot_from_env(environ: Mapping[str, str]) -> WorkerSlot | None:
    """The slot the supervisor gave this process, or None when it is not a worker.

    Raises:
        ValueError: the variable is set but malformed.
    """
    value = environ.get(WORKER_ENV)
    if value is None:
        return None
    index, _, fd = value.partition(":")
    return WorkerSlot(int(index), int(fd))


class Lifeline:
    """The worker's end of its socket pair with the supervisor."""

    def __init__(self, slot: WorkerSlot) -> None:
        self._sock = socket.socket(fileno=slot.lifeline_fd)
        self._sock.setblocking(False)
        self._watching = False

    def ready(self) -> None:
        """Tell the supervisor this worker listens."""
        # One byte on a fresh socket pair: the send buffer always has room. A
        # supervisor already gone is noticed by `watch`, which stops us.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._sock.send(_READY)

    def watch(self, supervisor_gone: Callable[[], None]) -> None:
        """Call `supervisor_gone` once the supervisor's end is closed."""
        loop = asyncio.get_running_loop()
        loop.add_reader(self._sock.fileno(), self._readable, supervisor_gone)
        self._watching = True

    def _readable(self, supervisor_gone: Callable[[], None]) -> None:
        try:
            data = self._sock.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return  # the supervisor sends nothing; ignore rather than guess
        log.warning("the supervisor is gone: stopping")
        self.close()
        supervisor_gone()

    def close(self) -> None:
        """Stop watching and close the socket; idempotent."""
        if self._watching:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._watching = False
        self._sock.close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _describe_exit(returncode: int) -> str:
    # asyncio reports death by a signal as the negated signal number.
    if returncode < 0:
        return f"was killed by {_signal_name(-returncode)}"
    return f"exited with status {returncode}"


def reserve_port(host: str, port: int) -> list[socket.socket]:
    """Bind, without listening, a SO_REUSEPORT socket on every address of `host`.

    With port 0 the first bind picks the port and the others take the same one.
    The sockets keep the port reserved while workers come and go: anyone
    without SO_REUSEPORT (and the same user) is refused it, and a socket that
    does not listen is never handed a connection.

    Raises:
        OSError: the address cannot be resolved or bound.
    """
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )
    reserved: list[socket.socket] = []
    seen: set[tuple[int, str]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, str(address[0])) in seen:
                continue
            seen.add((family, str(address[0])))
            sock = socket.socket(family, kind, proto)
            reserved.append(sock)
            # The same options as the workers' listeners (asyncio's create_server).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if reserved[0] is not sock:
                port = reserved[0].getsockname()[1]
            sock.bind((address[0], port, *address[2:]))
    except OSError:
        for sock in reserved:
            sock.close()
        raise
    return reserved


class _State(Enum):
    """Where a worker slot is: DOWN -> STARTING -> LISTENING -> DOWN, until stopped."""

    DOWN = auto()  # no process: not started yet, or waiting to restart
    STARTING = auto()  # its process runs but has not said it listens
    LISTENING = auto()


@dataclass(slots=True)
class _Worker:
    """One worker slot and the process currently filling it."""

    index: int
    state: _State = _State.DOWN
    proc: asyncio.subprocess.Process | None = None
    lifeline: socket.socket | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    delay_s: float = _BACKOFF_FIRST_S


class Supervisor:
    """Runs `config.workers` workers, restarts them, stops them on a signal.

    `reserved` are the sockets `reserve_port` bound; the supervisor closes them
    when it is done. Each worker runs `command` followed by
    `--port PORT --workers 1`, PORT being the reserved one.
    """

    def __init__(
        self,
        config: Config,
        command: Sequence[str],
        reserved: Sequence[socket.socket],
        metrics_dir: str | None = None,
    ) -> None:
        self.config = config
        self._metrics_dir = metrics_dir
        self.metrics = (
            MetricsListener(config.metrics_listen, multiprocess_registry(metrics_dir))
            if config.metrics_listen is not None and metrics_dir is not None
            else None
        )
        self._reserved = tuple(reserved)
        self.address: tuple[str, int] = self._reserved[0].getsockname()[:2]
        self._command = (*command, "--port", str(self.address[1]), "--workers", "1")
        self._workers = [_Worker(i) for i in range(config.workers)]
        self._stopping = asyncio.Event()
        self._kill_timer: asyncio.TimerHandle | None = None
        self._announced = False
        self._failure: str | None = None

    async def run(self) -> int:
        """Serve until SIGINT or SIGTERM (exit status 0) or a worker cannot start (1)."""
        loop = asyncio.get_running_loop()
        try:
            if self.metrics is not None:
                try:
                    await self.metrics.start()
                except OSError as exc:
                    log.error(
                        "cannot listen on --metrics-listen %s: %s", self.config.metrics_listen, exc
                    )
                    return 1
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.stop)
            async with asyncio.TaskGroup() as group:
                for worker in self._workers:
                    group.create_task(self._keep_running(worker))
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            if self._kill_timer is not None:
                self._kill_timer.cancel()
            for sock in self._reserved:
                sock.close()
            if self.metrics is not None:
                await self.metrics.close()
        log.info("stopped")
        return 0 if self._failure is None else 1

    def stop(self) -> None:
        """SIGTERM every worker; SIGKILL those still running after their grace time."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        grace_s = self.config.shutdown_timeout_s + _STOP_MARGIN_S
        log.info("stopping %d workers (SIGKILL after %.1fs)", len(self._workers), grace_s)
        for worker in self._workers:
            self._signal(worker, signal.SIGTERM)
        self._kill_timer = asyncio.get_running_loop().call_later(grace_s, self._kill_stragglers)

    def _kill_stragglers(self) -> None:
        for worker in self._workers:
            if worker.proc is not None and worker.proc.returncode is None:
                log.warning("worker %d (pid %d) still running: SIGKILL", *_who(worker))
                self._signal(worker, signal.SIGKILL)

    @staticmethod
    def _signal(worker: _Worker, sig: signal.Signals) -> None:
        if worker.proc is not None and worker.proc.returncode is None:
            # It may have exited since asyncio last looked; nothing to stop then.
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(sig)

    async def _keep_running(self, worker: _Worker) -> None:
        """Start the worker, and again after each unexpected exit, until stopping."""
        while not self._stopping.is_set():
            proc = await self._start(worker)
            returncode = await proc.wait()
            if self._metrics_dir is not None:
                mark_process_dead(proc.pid, self._metrics_dir)  # type: ignore[no-untyped-call]  # unannotated
            listened = worker.state is _State.LISTENING
            worker.state = _State.DOWN
            self._cut_lifeline(worker)
            if self._stopping.is_set():
                return
            uptime_s = time.monotonic() - worker.started_at
            how = _describe_exit(returncode)
            if not listened or uptime_s < _QUICK_S:
                worker.quick_deaths += 1
            else:
                worker.quick_deaths = 0
            if worker.quick_deaths >= _MAX_QUICK_DEATHS:
                self._failure = (
                    f"worker {worker.index} cannot start: it died {worker.quick_deaths} times "
                    f"in a row before listening or within {_QUICK_S:g}s (last: pid "
                    f"{proc.pid} {how})"
                )
                log.error("%s; giving up", self._failure)
                self.stop()
                return
            if uptime_s >= _STABLE_S:
                worker.delay_s = _BACKOFF_FIRST_S
            log.error(
                "worker %d (pid %d) %s after %.1fs; restarting it in %.1fs",
                worker.index,
                proc.pid,
                how,
                uptime_s,
                worker.delay_s,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), worker.delay_s)
            worker.delay_s = min(worker.delay_s * 2, _BACKOFF_CAP_S)

    async def _start(self, worker: _Worker) -> asyncio.subprocess.Process:
        """A new process for the slot, with a fresh lifeline."""
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        env = {**os.environ, WORKER_ENV: f"{worker.index}:{theirs.fileno()}"}
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command,
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
                pass_fds=(theirs.fileno(),),
                # Its own process group: Ctrl-C in a terminal reaches only the
                # supervisor, which stops the workers in order.
                process_group=0,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the worker has its copy; ours would hide its exit
        worker.proc = proc
        worker.lifeline = ours
        worker.started_at = time.monotonic()
        worker.state = _State.STARTING
        asyncio.get_running_loop().add_reader(ours.fileno(), self._lifeline_readable, worker)
        log.info("worker %d started: pid %d", worker.index, proc.pid)
        if self._stopping.is_set():
            # stop() ran while the process was being created, and missed it.
            self._signal(worker, signal.SIGTERM)
        return proc

    def _lifeline_readable(self, worker: _Worker) -> None:
        assert worker.lifeline is not None
        try:
            data = worker.lifeline.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            # The worker is exiting; its exit status comes from wait().
            asyncio.get_running_loop().remove_reader(worker.lifeline.fileno())
            return
        if _READY in data and worker.state is _State.STARTING:
            worker.state = _State.LISTENING
            if self._announced:
                log.info("worker %d (pid %d) is listening again", *_who(worker))
            elif all(w.state is _State.LISTENING for w in self._workers):
                self._announced = True
                host, port = self.address
                log.info(
                    "ssechat listening on http://%s:%d (%d workers)",
                    _url_host(host),
                    port,
                    len(self._workers),
                )

    def _cut_lifeline(self, worker: _Worker) -> None:
        if worker.lifeline is not None:
            asyncio.get_running_loop().remove_reader(worker.lifeline.fileno())
            worker.lifeline.close()
            worker.lifeline = None


def _who(worker: _Worker) -> tuple[int, int]:
    return worker.index, worker.proc.pid if worker.proc is not None else 0


def supervise(config: Config, command: Sequence[str], args: Sequence[str]) -> int:
    """Run `config.workers` workers of `command` on one port; returns the exit status.

    Each worker runs `command` with `args`, then the reserved port and
    `--workers 1` (argparse keeps the last of a repeated flag).
    """
    try:
        reserved = reserve_port(config.host, config.port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        return 1
    if config.metrics_listen is None:
        return asyncio.run(Supervisor(config, [*command, *args], reserved).run())
    given = os.environ.get(METRICS_DIR_ENV)
    metrics_dir = given or tempfile.mkdtemp(prefix="ssechat-metrics-")
    try:
        _wipe(metrics_dir)
        # Before any worker starts: each imports prometheus-client with it set.
        os.environ[METRICS_DIR_ENV] = metrics_dir
        log.info("metrics: the workers write their values in %s", metrics_dir)
        supervisor = Supervisor(config, [*command, *args], reserved, metrics_dir)
        return asyncio.run(supervisor.run())
    finally:
        if not given:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _wipe(folder: str) -> None:
    """Remove the value files of an earlier run: a new run's counters start at zero."""
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.endswith(".db"):
            os.unlink(os.path.join(folder, name))
