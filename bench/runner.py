"""One run of one scenario against one server, start to stop; again while the machine is noisy."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from launch import BenchError, Started, free_port, start, start_redis, stop_all
from measure import drive
from procfs import QUIET_CORES, wait_for_quiet
from results import RunResult, join_notes
from scenarios import Scenario
from server_specs import ServerSpec

__all__ = ["run_least_noisy", "run_one"]


def _log_problems(path: Path) -> list[str]:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    marks = ("Traceback", "ERROR", "Error:", "WARNING", "warning:")
    bad = [line for line in lines if any(m in line for m in marks)]
    return bad[:5] + ([f"... {len(bad) - 5} more"] if len(bad) > 5 else [])


def run_one(
    spec: ServerSpec,
    sc: Scenario,
    run: int,
    logs: Path,
    join_budget: int,
    log: Callable[[str], None],
    quiet_wait_s: float = 0.0,
    attempt: int = 0,
) -> RunResult:
    """Start `spec`, run `sc` against it once, stop it."""
    joins_on = sc.joins or not spec.no_join_args
    result = RunResult(spec.name, sc.key, run, "ok", joins_on=joins_on)
    wait_joins = joins_on
    if sc.ours_only and not spec.ssechat:
        result.status = "n/a"
        result.note = (
            "compares ssechat's multi-process mode (processes sharing a room through Redis) "
            "with one ssechat process; this server has no such mode"
        )
        return result
    if joins_on and not sc.joins:
        deliveries = sc.streams * (sc.streams + 1) // 2
        if deliveries > join_budget:
            result.status = "n/a"
            result.note = (
                f"cannot turn join announcements off: {sc.streams:,} streams would cost "
                f"{deliveries:,} join deliveries (budget --join-budget {join_budget:,})"
            )
            return result
        result.note = f"announcements on: all {deliveries:,} joins delivered before measuring"
    if quiet_wait_s:
        result.server_metrics["machine_busy_at_start_cores"] = wait_for_quiet(quiet_wait_s, log)
    tag = f"{spec.name}-{sc.key}-run{run}" + (f"-retry{attempt}" if attempt else "")
    workdir = logs.parent / "work" / tag
    workdir.mkdir(parents=True, exist_ok=True)
    servers: dict[str, Started] = {}
    helpers: dict[str, Started] = {}
    redis_dir: str | None = None
    try:
        extra: list[str] = []
        if sc.redis:
            # A folder of its own, which the runner removes: Redis writes nothing to
            # it (no snapshots, no append-only file), but it is Redis's working dir.
            redis_dir = tempfile.mkdtemp(prefix="ssechat-bench-redis-")
            helpers["redis"] = start_redis(logs / f"{tag}-redis.log", redis_dir)
            extra += ["--redis-url", f"redis://127.0.0.1:{helpers['redis'].port}/0"]
        if sc.ours_only:
            # Past the default 10,000: a process's streams, its publishers and slack.
            per_node = -(-sc.streams // sc.nodes)
            extra += ["--max-connections", str(per_node + sc.publishers + 64)]
        for k in range(1, sc.nodes + 1):
            name = "server" if sc.nodes == 1 else f"process{k}"
            node_dir = workdir if sc.nodes == 1 else workdir / name
            node_dir.mkdir(exist_ok=True)
            port = free_port(avoid={s.port for s in (*servers.values(), *helpers.values())})
            argv = spec.argv(port, sc.joins, node_dir) + extra
            log_name = f"{tag}.log" if sc.nodes == 1 else f"{tag}-{name}.log"
            servers[name] = start(name, argv, port, logs / log_name, spec.cwd)
        drive(servers, helpers, spec, sc, wait_joins, result, log)
    except BenchError as exc:
        result.status = "failed"
        logs_named = ", ".join(str(s.log_path) for s in (*servers.values(), *helpers.values()))
        result.note = join_notes(result.note, f"{exc} (logs: {logs_named})")
    finally:
        # The servers first: they would log Redis going away.
        stop_all([s.proc for s in servers.values()])
        stop_all([s.proc for s in helpers.values()])
        if redis_dir is not None:
            shutil.rmtree(redis_dir, ignore_errors=True)
    for started in servers.values():
        result.server_log_problems += _log_problems(started.log_path)
    return result


def run_least_noisy(
    spec: ServerSpec,
    sc: Scenario,
    run: int,
    logs: Path,
    join_budget: int,
    log: Callable[[str], None],
    quiet_wait_s: float,
    retries: int,
) -> RunResult:
    """`run_one`, repeated (bounded) while other programs disturb it; the least noisy wins."""
    best: RunResult | None = None
    for attempt in range(retries + 1):
        t = time.monotonic()
        r = run_one(spec, sc, run, logs, join_budget, log, quiet_wait_s, attempt)
        other = r.server_metrics.get("other_cpu_cores", 0.0)
        log(
            f"  {sc.key} {spec.name} run {run}: {r.status} in {time.monotonic() - t:.1f} s"
            + (f", other programs used {other:.2f} cores" if other > QUIET_CORES else "")
            + (f" ({r.note})" if r.note else "")
        )
        if best is None or (r.status == "ok" and _noise(r) < _noise(best)):
            best = r
        if r.status != "ok" or other <= QUIET_CORES:
            break
        if attempt < retries:
            log(f"  noisy: running {sc.key} {spec.name} again ({attempt + 1} of {retries})")
    assert best is not None
    return best


def _noise(r: RunResult) -> float:
    return r.server_metrics.get("other_cpu_cores", 0.0) if r.status == "ok" else float("inf")
