"""One scenario against servers already started: drive them with the loadgen, measure them.

Memory and CPU are read around the loadgen's phases (connecting, then publishing),
and what the loadgen printed at the end becomes the run's result and notes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable

from launch import BenchError, Started, wait_listening
from loadgen import LineReader, loadgen_argv
from procfs import CLK_TCK, cpu_s, machine_jiffies, peak_rss_kb, rss_kb
from results import RunResult, as_number, join_notes
from scenarios import Scenario
from server_specs import ServerSpec

__all__ = ["broadcast_ms", "drive"]


def drive(
    servers: dict[str, Started],
    helpers: dict[str, Started],
    spec: ServerSpec,
    sc: Scenario,
    wait_joins: bool,
    result: RunResult,
    log: Callable[[str], None],
) -> None:
    """Run the loadgen against `servers` (one, or the processes of S6), measuring them.

    The `server_metrics` keys without a prefix add up every server process;
    `<name>_...` keys are each server's and helper's (Redis) own.
    """
    for started in servers.values():
        wait_listening(started.proc, started.port, 30.0)
    time.sleep(0.3)  # let start-up allocations settle before the baseline
    everyone = {**servers, **helpers}

    def rss() -> int:
        return sum(rss_kb(s.proc.pid) for s in servers.values())

    def cpu() -> dict[str, float]:
        return {name: cpu_s(s.proc.pid) for name, s in everyone.items()}

    def server_cpu(c: dict[str, float]) -> float:
        return sum(c[name] for name in servers)

    m = result.server_metrics
    m["rss_before_kb"] = rss()
    busy0, total0 = machine_jiffies()
    cpu0, t0 = cpu(), time.monotonic()
    ports = [s.port for s in servers.values()]
    argv = loadgen_argv(sc, ports, wait_joins, f"{spec.name}/{sc.key}/{result.run}", spec)
    gen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert gen.stdin is not None
    assert gen.stdout is not None
    reader = LineReader(gen.stdout)
    deadline = time.monotonic() + sc.budget_s + 30
    final: dict[str, object] | None = None
    cpu1, t1 = cpu0, t0
    run_busy0, run_total0 = busy0, total0
    try:
        while final is None:
            line = reader.readline(deadline)
            if line is None:
                break
            if line.startswith("CONNECTED "):
                if sc.settle_s:
                    time.sleep(sc.settle_s)
                m["rss_connected_kb"] = rss()
                now = cpu()
                m["cpu_connect_s"] = server_cpu(now) - server_cpu(cpu0)
                m["connect_wall_s"] = time.monotonic() - t0
                for name in everyone:
                    m[f"{name}_cpu_connect_s"] = now[name] - cpu0[name]
                cpu1, t1 = cpu(), time.monotonic()
                run_busy0, run_total0 = machine_jiffies()
                gen.stdin.write(b"go\n")
                gen.stdin.flush()
            elif line.startswith("{"):
                final = json.loads(line)
                if "cpu_connect_s" in m:
                    now = cpu()
                    m["cpu_run_s"] = server_cpu(now) - server_cpu(cpu1)
                    m["run_wall_s"] = time.monotonic() - t1
                    for name in everyone:
                        m[f"{name}_cpu_run_s"] = now[name] - cpu1[name]
                    # Every process on the machine, softirq included: how much of the
                    # machine the run took (S6 shares 2 cores among 5 processes).
                    run_busy1, run_total1 = machine_jiffies()
                    m["machine_run_cores"] = (
                        (run_busy1 - run_busy0)
                        / max(run_total1 - run_total0, 1)
                        * (os.cpu_count() or 1)
                    )
    finally:
        reader.close()
        if gen.poll() is None:
            try:
                gen.wait(max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                gen.kill()
                gen.wait(5)
    if spec.ssechat:
        m.update(broadcast_ms(next(iter(servers.values())).port))
    m["rss_after_kb"] = rss()
    m["rss_peak_kb"] = sum(peak_rss_kb(s.proc.pid) for s in servers.values())
    cpu_end = cpu()
    m["cpu_total_s"] = server_cpu(cpu_end) - server_cpu(cpu0)
    helpers_cpu_s = sum(cpu_end[name] - cpu0[name] for name in helpers)
    busy1, total1 = machine_jiffies()
    m["wall_s"] = time.monotonic() - t0
    # What else kept the machine busy (other programs, and softirq time the kernel
    # charges to no process): a noise gauge for this run's numbers.
    machine_cpu_s = (busy1 - busy0) / CLK_TCK
    gen_cpu = final.get("gen_cpu") if final else None
    gen_s = as_number(gen_cpu.get("cpu_s")) if isinstance(gen_cpu, dict) else 0.0
    m["other_cpu_cores"] = (
        max(machine_cpu_s - m["cpu_total_s"] - helpers_cpu_s - gen_s, 0.0) / m["wall_s"]
    )
    m["machine_busy_cores"] = (busy1 - busy0) / max(total1 - total0, 1) * (os.cpu_count() or 1)
    for name, started in everyone.items():
        if started.proc.poll() is not None:
            what = "the server" if name == "server" else name
            raise BenchError(f"{what} died during the scenario (status {started.proc.returncode})")
    if final is None:
        raise BenchError(f"the loadgen gave no result (exit status {gen.returncode})")
    result.loadgen = final
    if not final.get("ok"):
        result.status = "failed"
        result.note = join_notes(result.note, str(final.get("error")))
    closed = as_number(final.get("streams_closed"))
    if closed:
        result.note = join_notes(
            result.note, f"the server closed {closed:,.0f} stream(s) during the run"
        )
    publish = final.get("publish")
    if isinstance(publish, dict) and (publish.get("post_errors") or publish.get("post_bad_status")):
        result.note = join_notes(
            result.note,
            f"{as_number(publish.get('post_errors')):,.0f} POSTs cut off, "
            f"{as_number(publish.get('post_bad_status')):,.0f} answered "
            f"{publish.get('first_bad_status')} ({publish.get('first_bad_body')})",
        )
    acked = as_number(publish.get("acked")) if isinstance(publish, dict) else 0.0
    if sc.messages and not acked:
        result.status = "failed"
    # S4 stops at its duration by design; elsewhere every message should go out.
    if sc.messages and acked < sc.messages and (sc.rate or not sc.duration_s):
        stopped = publish.get("stopped_by") if isinstance(publish, dict) else "?"
        result.note = join_notes(
            result.note,
            f"only {acked:,.0f} of {sc.messages:,} messages published (stopped by {stopped}); "
            "delivered events/s and loss cover those",
        )
    if final.get("saturated"):
        log(f"  SATURATED: the generator was the bottleneck in {spec.name} {sc.key}")


def broadcast_ms(port: int) -> dict[str, float]:
    """ssechat's own timing of its recent broadcasts (GET /healthz), as metrics.

    How long one broadcast spent writing to every stream, measured inside the
    server: S3's latency is this plus the wait for it and the generator's reading.
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            took = json.load(answer).get("broadcast_ms", {})
    except (OSError, ValueError):
        return {}
    if not took.get("count"):
        return {}
    return {"broadcast_p50_ms": float(took["p50"]), "broadcast_max_ms": float(took["max"])}
