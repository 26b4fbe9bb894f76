"""The markdown table: one row per metric, one column per server, medians over the runs."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence

from procfs import QUIET_CORES
from results import RunResult, as_number, figure
from scenarios import Scenario

__all__ = ["METRICS", "render_table"]


def _kb_per_stream(r: RunResult) -> float:
    m = r.server_metrics
    streams = figure(r, "streams")
    if "rss_connected_kb" not in m or not streams:
        return float("nan")
    return (m["rss_connected_kb"] - m["rss_before_kb"]) / streams


def _rate_achieved(r: RunResult) -> float:
    duration = figure(r, "publish.duration_s")
    return figure(r, "publish.acked") / duration if duration else float("nan")


def _server_pct(r: RunResult, phase: str, proc: str = "") -> float:
    """CPU of the server (or of one started process: `proc`) in a phase, % of a core."""
    m = r.server_metrics
    wall = m.get(f"{phase}_wall_s", 0.0)
    key = f"{proc}_cpu_{phase}_s" if proc else f"cpu_{phase}_s"
    return 100.0 * m[key] / wall if wall and key in m else float("nan")


def _port_latency(r: RunResult, index: int, quantile: str) -> float:
    """A latency quantile (ms) over the streams of the `index`-th port (S6's processes)."""
    per_port = r.loadgen.get("per_port")
    if not isinstance(per_port, list) or index >= len(per_port):
        return float("nan")
    latency = per_port[index].get("latency_ms") if isinstance(per_port[index], dict) else None
    return as_number(latency.get(quantile)) if isinstance(latency, dict) else float("nan")


# A metric's value: one number, or several shown as "a / b / c" (each the median
# of its own runs).
Value = float | tuple[float, ...]
Metric = tuple[str, Callable[[RunResult], Value], str]

_MACHINE_RUN: Metric = (
    f"whole machine busy while publishing (cores, of {os.cpu_count()})",
    lambda r: r.server_metrics.get("machine_run_cores", float("nan")),
    ".2f",
)
# "{rate}" in a label is the scenario's rate (S6's can be set with --s6-rate).
_S6_PUBLISH_METRICS: list[Metric] = [
    ("messages/s achieved ({rate} wanted)", _rate_achieved, ".1f"),
    ("delivered events/s", lambda r: figure(r, "delivery.events_per_s"), ",.0f"),
    ("lost events", lambda r: figure(r, "delivery.lost"), ",.0f"),
    (
        "latency p50 / p99 / max (ms), all streams",
        lambda r: tuple(figure(r, f"latency_ms.{q}") for q in ("p50", "p99", "max")),
        ".1f",
    ),
]

# What a scenario publishing at a fixed rate (S3, S5) delivered, and how fast.
_RATE_DELIVERY_METRICS: list[Metric] = [
    ("delivered events/s", lambda r: figure(r, "delivery.events_per_s"), ",.0f"),
    ("lost events", lambda r: figure(r, "delivery.lost"), ",.0f"),
    ("latency p50 (ms)", lambda r: figure(r, "latency_ms.p50"), ".1f"),
    ("latency p99 (ms)", lambda r: figure(r, "latency_ms.p99"), ".1f"),
]

METRICS: dict[str, list[Metric]] = {
    "S0": [
        ("time to first event p50 (ms)", lambda r: figure(r, "first_event_ms.p50"), ".2f"),
        ("time to first event p99 (ms)", lambda r: figure(r, "first_event_ms.p99"), ".2f"),
        ("all streams up (s)", lambda r: figure(r, "connect.all_up_s"), ".2f"),
    ],
    "S1a": [
        ("all up and every join delivered (s)", lambda r: figure(r, "connect.joins_done_s"), ".1f"),
        ("all streams up (s)", lambda r: figure(r, "connect.all_up_s"), ".1f"),
        ("joins delivered", lambda r: figure(r, "connect.joins_received"), ",.0f"),
        ("server memory per stream (KB)", _kb_per_stream, ".1f"),
        ("server CPU while connecting (% of a core)", lambda r: _server_pct(r, "connect"), ".0f"),
    ],
    "S1b": [
        ("all streams up (s)", lambda r: figure(r, "connect.all_up_s"), ".2f"),
        ("server memory per idle stream (KB)", _kb_per_stream, ".1f"),
    ],
    "S2": [
        ("delivered events/s", lambda r: figure(r, "delivery.events_per_s"), ",.0f"),
        ("latency p50 (ms)", lambda r: figure(r, "latency_ms.p50"), ".1f"),
        ("latency p99 (ms)", lambda r: figure(r, "latency_ms.p99"), ".1f"),
        ("latency max (ms)", lambda r: figure(r, "latency_ms.max"), ".1f"),
        ("lost events", lambda r: figure(r, "delivery.lost"), ",.0f"),
        ("sends/s answered", lambda r: figure(r, "publish.posts_per_s"), ",.0f"),
        ("server CPU while publishing (% of a core)", lambda r: _server_pct(r, "run"), ".0f"),
    ],
    "S3": [
        # Answered messages over the scheduled window: below 20, the rate was not kept.
        ("messages/s achieved (20 wanted)", _rate_achieved, ".1f"),
        *_RATE_DELIVERY_METRICS,
        (
            "one broadcast to every stream, timed by the server: p50 / max (ms)",
            lambda r: (
                r.server_metrics.get("broadcast_p50_ms", float("nan")),
                r.server_metrics.get("broadcast_max_ms", float("nan")),
            ),
            ".1f",
        ),
        ("all streams up (s)", lambda r: figure(r, "connect.all_up_s"), ".2f"),
        ("server CPU while publishing (% of a core)", lambda r: _server_pct(r, "run"), ".0f"),
    ],
    "S5": [
        ("messages/s achieved (100 wanted)", _rate_achieved, ".1f"),
        *_RATE_DELIVERY_METRICS,
        ("server CPU while publishing (% of a core)", lambda r: _server_pct(r, "run"), ".0f"),
    ],
    "S6": [
        *_S6_PUBLISH_METRICS,
        (
            "latency p50 / p99 (ms), process 1's streams (messages published here)",
            lambda r: (_port_latency(r, 0, "p50"), _port_latency(r, 0, "p99")),
            ".1f",
        ),
        (
            "latency p50 / p99 (ms), process 2's streams (through Redis)",
            lambda r: (_port_latency(r, 1, "p50"), _port_latency(r, 1, "p99")),
            ".1f",
        ),
        ("all streams up (s)", lambda r: figure(r, "connect.all_up_s"), ".2f"),
        (
            "CPU while publishing (% of a core): process 1 / process 2 / Redis",
            lambda r: tuple(_server_pct(r, "run", p) for p in ("process1", "process2", "redis")),
            ".0f",
        ),
        _MACHINE_RUN,
    ],
    "S6-1p": [
        *_S6_PUBLISH_METRICS,
        ("all streams up (s)", lambda r: figure(r, "connect.all_up_s"), ".2f"),
        ("CPU while publishing (% of a core): the process", lambda r: _server_pct(r, "run"), ".0f"),
        _MACHINE_RUN,
    ],
    "S4": [
        ("sends/s answered", lambda r: figure(r, "publish.posts_per_s"), ",.0f"),
        ("send round trip mean (ms)", lambda r: figure(r, "publish.post_rtt_mean_ms"), ".2f"),
        ("lost events", lambda r: figure(r, "delivery.lost"), ",.0f"),
        ("server CPU while publishing (% of a core)", lambda r: _server_pct(r, "run"), ".0f"),
    ],
}


def _other_cores(r: RunResult) -> float:
    return r.server_metrics.get("other_cpu_cores", float("nan"))


def _gen_cpu(r: RunResult) -> str:
    cpu = r.loadgen.get("gen_cpu")
    if not isinstance(cpu, dict):
        return "?"
    text = f"{as_number(cpu.get('connect_pct')):.0f} / {as_number(cpu.get('run_pct')):.0f}"
    return text + (" SATURATED" if r.loadgen.get("saturated") else "")


def _cell(runs: list[RunResult], fn: Callable[[RunResult], Value], fmt: str) -> str:
    ok = [r for r in runs if r.status == "ok"]
    if not ok:
        if runs and all(r.status == "n/a" for r in runs):
            return "N/A"
        return "failed"
    rows = [v if isinstance(v, tuple) else (v,) for v in (fn(r) for r in ok)]
    parts = []
    for column in zip(*rows, strict=True):
        values = [v for v in column if v == v]  # drop NaN
        parts.append(format(statistics.median(values), fmt) if values else "?")
    text = " / ".join(parts)
    return text + (f" ({len(ok)}/{len(runs)} runs)" if len(ok) < len(runs) else "")


def render_table(
    results: list[RunResult], servers: Sequence[str], scenarios: Sequence[Scenario], runs: int
) -> str:
    """Markdown: one row per metric, one column per server, medians over the runs."""
    head = "| scenario | metric | " + " | ".join(servers) + " |"
    rule = "|---|---|" + "---|" * len(servers)
    lines = [f"Medians of {runs} run(s).", "", head, rule]
    notes: list[str] = []
    for sc in scenarios:
        by_server = {
            s: [r for r in results if r.server == s and r.scenario == sc.key] for s in servers
        }
        first = True
        for label, fn, fmt in METRICS[sc.key]:
            cells = [_cell(by_server[s], fn, fmt) for s in servers]
            label = label.replace("{rate}", f"{sc.rate:g}")
            lines.append(f"| {sc.title if first else ''} | {label} | " + " | ".join(cells) + " |")
            first = False
        gens = [
            "; ".join(_gen_cpu(r) for r in by_server[s] if r.status == "ok") or "-" for s in servers
        ]
        lines.append("| | generator CPU, connect / run (% of a core) | " + " | ".join(gens) + " |")
        others = [_cell(by_server[s], _other_cores, ".2f") for s in servers]
        lines.append(
            "| | CPU used outside server and generator (cores) | " + " | ".join(others) + " |"
        )
        for s in servers:
            for r in by_server[s]:
                other = r.server_metrics.get("other_cpu_cores", 0.0)
                if other > QUIET_CORES:
                    notes.append(
                        f"- {sc.key} {s} run {r.run}: noisy: other programs used {other:.2f} "
                        "cores meanwhile"
                    )
                if r.note and r.status == "n/a":  # the same for every run: said once
                    notes.append(f"- {sc.key} {s}: n/a: {r.note}")
                elif r.note:
                    notes.append(f"- {sc.key} {s} run {r.run}: {r.status}: {r.note}")
                for problem in r.server_log_problems:
                    notes.append(f"- {sc.key} {s} run {r.run}: server log: {problem}")
    if notes:
        lines += ["", "Notes:", *dict.fromkeys(notes)]
    return "\n".join(lines)
