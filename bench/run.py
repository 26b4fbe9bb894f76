"""Run the fan-out benchmark scenarios against ssechat and peer servers, side by side.

For every server, scenario and run: start the server on a free loopback port,
wait until it listens, measure its memory and CPU, drive it with the C load
generator (`bench/build/loadgen`, built by `make bench`), measure again, stop
it. Prints a markdown table of medians and writes the raw results to
`bench/out/<time>/`.

    make bench                                   # every scenario, ours vs node, 3 runs
    make bench BENCH_ARGS="--runs 1 --quick"     # sanity check in under a minute
    .venv/bin/python bench/run.py --scenarios S2,S4 --servers ours
    .venv/bin/python bench/run.py --scenarios S6 --servers ours   # 2 processes + Redis
    .venv/bin/python bench/run.py --peer other='/path/to/server --port {port}'

Standard library only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

from launch import REDIS_PACKAGE, raise_open_files, redis_server_path
from paths import LOADGEN, OUT, REPO
from procfs import QUIET_CORES
from results import RunResult, as_number, figure
from runner import run_least_noisy
from scenarios import GROUPS, S6_RATE, SCENARIOS, Scenario
from server_specs import BUILTIN_SERVERS, DEFAULT_SERVERS, ServerSpec

# Join announcements cost N(N+1)/2 deliveries. A server that cannot turn them off
# runs a scenario that wants them off only if that many fit in this budget, and
# then every join is delivered before publishing starts, so joins and messages
# are not measured together; above it the cell says N/A.
DEFAULT_JOIN_BUDGET = 3_000_000


# ----------------------------------------------------------------- table


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


# ----------------------------------------------------------------- main


def _parse_named(values: list[str], what: str) -> dict[str, str]:
    named: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name or not text:
            raise SystemExit(f"{what} wants NAME=TEXT, got {value!r}")
        named[name] = text
    return named


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--servers",
        default=None,
        help="comma-separated servers to compare: ours (SSE), ours-ws (WebSocket), "
        "ours-ws-deflate (permessage-deflate, shared), ours-ws-deflate-ctx (per-connection), "
        "node, and every --peer (default: ours,ours-ws,node and every --peer)",
    )
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="NAME=CMD",
        help="another server: a command with {port} (PORT is also set in its environment)",
    )
    p.add_argument(
        "--peer-no-join",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="arguments that turn a peer's join announcement off, appended when a scenario "
        "wants them off",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(s.key for s in SCENARIOS),
        help="comma-separated scenarios: S0, S1a, S1b (or S1 for both), S2, S3, S5, S4, "
        "S6 (2 ssechat processes sharing a Redis, then the same load per process on one "
        "process: S6-1p) (default: all)",
    )
    p.add_argument("--runs", type=int, default=3, help="runs per server and scenario (default 3)")
    p.add_argument(
        "--s6-rate",
        type=float,
        default=S6_RATE,
        metavar="R",
        help="messages/s in S6 and S6-1p (default %(default)g)",
    )
    p.add_argument("--quick", action="store_true", help="every scenario 10x smaller: a sanity run")
    p.add_argument(
        "--join-budget",
        type=int,
        default=DEFAULT_JOIN_BUDGET,
        help="most join deliveries a server without a no-join option may cost in a scenario "
        "that wants announcements off (default %(default)s)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="before each run, wait up to this long for the machine to be nearly idle "
        "(0: do not wait) (default 30, or 3 with --quick)",
    )
    p.add_argument(
        "--noisy-retries",
        type=int,
        default=None,
        metavar="N",
        help="run again, up to N times, a run during which other programs used more than "
        f"{QUIET_CORES} cores; the least noisy one counts (default 1, or 0 with --quick)",
    )
    p.add_argument("--out", type=Path, default=OUT, help="where raw results go (default bench/out)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run every selected server x scenario x run; print the table; 0 if all ran."""
    args = build_parser().parse_args(argv)
    if not LOADGEN.exists():
        raise SystemExit(f"{LOADGEN} is missing: run `make bench` (it builds it with gcc)")
    servers = dict(BUILTIN_SERVERS)
    no_join = _parse_named(args.peer_no_join, "--peer-no-join")
    for name, cmd in _parse_named(args.peer, "--peer").items():
        servers[name] = ServerSpec(name, cmd, no_join.get(name))
    for name, flag in no_join.items():
        if name in servers:
            servers[name] = replace(servers[name], no_join_args=flag)
    names = (
        args.servers.split(",")
        if args.servers
        else [
            *DEFAULT_SERVERS,
            *(n for n in servers if n not in DEFAULT_SERVERS and n not in BUILTIN_SERVERS),
        ]
    )
    unknown = [n for n in names if n not in servers]
    if unknown:
        raise SystemExit(f"unknown server(s) {unknown}; known: {sorted(servers)} (add with --peer)")
    by_key = {s.key: s for s in SCENARIOS}
    if not 0 < args.s6_rate <= 1000:
        raise SystemExit("--s6-rate wants messages/s in (0, 1000]")
    for key in GROUPS["S6"]:
        sc = by_key[key]
        by_key[key] = replace(sc, rate=args.s6_rate, messages=round(args.s6_rate * sc.duration_s))
    keys = [k.strip() for k in args.scenarios.split(",") if k.strip()]
    # A group's members once each, even when also named (as the default does).
    keys = list(dict.fromkeys(part for k in keys for part in GROUPS.get(k, [k])))
    if bad := [k for k in keys if k not in by_key]:
        raise SystemExit(f"unknown scenario(s) {bad}; known: {list(by_key)}")
    scenarios = [by_key[k].quick() if args.quick else by_key[k] for k in keys]
    wants_redis = any(sc.redis for sc in scenarios) and any(servers[n].ssechat for n in names)
    if wants_redis and redis_server_path() is None:
        raise SystemExit(
            "S6 runs ssechat's processes over a Redis of its own, and redis-server is missing: "
            f"install Debian's {REDIS_PACKAGE} package (sudo apt-get install {REDIS_PACKAGE}), "
            "or leave S6 out with --scenarios"
        )
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    if "node" in names and not (REPO / "bench/peers/node-express/node_modules").exists():
        raise SystemExit("bench/peers/node-express/node_modules is missing: run `make bench`")

    quiet_wait = args.quiet_wait if args.quiet_wait is not None else (3.0 if args.quick else 30.0)
    retries = args.noisy_retries if args.noisy_retries is not None else (0 if args.quick else 1)
    limit = raise_open_files()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out / stamp
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    machine = f"{platform.node()}: {os.cpu_count()} cores, {platform.platform()}"
    log(f"bench: {', '.join(names)} x {', '.join(keys)} x {args.runs} run(s); open files {limit}")
    results: list[RunResult] = []
    started = time.monotonic()
    for sc in scenarios:
        for run in range(1, args.runs + 1):
            for name in names:
                results.append(
                    run_least_noisy(
                        servers[name], sc, run, logs, args.join_budget, log, quiet_wait, retries
                    )
                )
    table = render_table(results, names, scenarios, args.runs)
    command = "bench/run.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    header = f"`{command}` on {machine}, {time.monotonic() - started:.0f} s"
    (out / "results.json").write_text(
        json.dumps(
            {
                "command": command,
                "machine": machine,
                "servers": {n: asdict(servers[n]) for n in names},
                "scenarios": [{**asdict(s), "title": s.title} for s in scenarios],
                "results": [asdict(r) for r in results],
            },
            indent=1,
            default=str,
        )
    )
    (out / "table.md").write_text(header + "\n\n" + table + "\n")
    print(header + "\n\n" + table)
    log(f"raw results: {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0 if all(r.status != "failed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
