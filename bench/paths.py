"""Where the benchmark's pieces live: the repository, the load generator, the results."""

from __future__ import annotations

from pathlib import Path

__all__ = ["BENCH", "LOADGEN", "OUT", "REPO"]

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LOADGEN = BENCH / "build" / "loadgen"  # built by `make bench` from loadgen.c
OUT = BENCH / "out"  # git-ignored: one folder per invocation
