"""What one run of one scenario against one server gave, and how to read numbers out of it."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RunResult", "as_number", "figure", "join_notes"]


@dataclass
class RunResult:
    """One server x scenario x run: the loadgen's JSON and the server's own figures."""

    server: str
    scenario: str
    run: int
    status: str  # ok, failed, n/a
    note: str = ""
    joins_on: bool = False
    loadgen: dict[str, object] = field(default_factory=dict)
    server_metrics: dict[str, float] = field(default_factory=dict)
    server_log_problems: list[str] = field(default_factory=list)


def as_number(value: object) -> float:
    """`value` if the loadgen's JSON held a number there, else 0."""
    return float(value) if isinstance(value, int | float) else 0.0


def figure(r: RunResult, path: str) -> float:
    """The number at a dotted `path` in the loadgen's JSON (`"latency_ms.p99"`), else 0."""
    node: object = r.loadgen
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return as_number(node)


def join_notes(*parts: str) -> str:
    """Notes about a run, the empty ones left out, as one line."""
    return "; ".join(p for p in parts if p)
