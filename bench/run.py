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
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from launch import REDIS_PACKAGE, raise_open_files, redis_server_path
from paths import LOADGEN, OUT, REPO
from procfs import QUIET_CORES
from results import RunResult
from runner import run_least_noisy
from scenarios import GROUPS, S6_RATE, SCENARIOS
from server_specs import BUILTIN_SERVERS, DEFAULT_SERVERS, STREAM_PATH, ServerSpec
from table import render_table

# Join announcements cost N(N+1)/2 deliveries. A server that cannot turn them off
# runs a scenario that wants them off only if that many fit in this budget, and
# then every join is delivered before publishing starts, so joins and messages
# are not measured together; above it the cell says N/A.
DEFAULT_JOIN_BUDGET = 3_000_000


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
        "ours-stream (GET /stream, see --stream-path), node, and every --peer "
        "(default: ours,ours-ws,node and every --peer)",
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
    p.add_argument(
        "--stream-path",
        default=STREAM_PATH,
        metavar="TARGET",
        help="what each stream of ours-stream opens (default %(default)s): a multiplexed "
        "stream of channels that POST /send-message feeds",
    )
    p.add_argument("--out", type=Path, default=OUT, help="where raw results go (default bench/out)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run every selected server x scenario x run; print the table; 0 if all ran."""
    args = build_parser().parse_args(argv)
    if not LOADGEN.exists():
        raise SystemExit(f"{LOADGEN} is missing: run `make bench` (it builds it with gcc)")
    servers = dict(BUILTIN_SERVERS)
    servers["ours-stream"] = replace(
        servers["ours-stream"], loadgen_args=("--path", args.stream_path)
    )
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
