"""The folder tree is the architecture: imports in `sse/` run one way, and never in a circle.

From the top: `main` -> `cli` -> `io` -> `app` -> `chat` -> `pubsub` -> `protocol` -> `config` ->
`errors`. A module may import its own folder and any folder below it. Imports
under `TYPE_CHECKING` count too: a cycle hidden there is still a cycle of design.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.support.servers import ROOT

PACKAGE = ROOT / "sse"
LAYERS = (
    "errors",
    "config",
    "metrics",
    "protocol",
    "pubsub",
    "chat",
    "auth",
    "limits",
    "app",
    "io",
    "cli",
    "main",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    """Every `sse...` module that `path` imports, wherever the import stands."""
    tree = ast.parse(path.read_text(), str(path))
    package = (
        _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "sse")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module.split(".")[0] != "sse":
                continue
            yield module
            for alias in node.names:  # `from sse.pubsub import hub` imports a module
                if (
                    (PACKAGE.parent / (module + "." + alias.name).replace(".", "/"))
                    .with_suffix(".py")
                    .exists()
                ):
                    yield f"{module}.{alias.name}"


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) < 2:
        return -1  # the package itself: its docstring is the map
    return LAYERS.index(parts[1])


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        graph[_module_name(path)] = set(_imports(path))
    return graph


def test_every_module_is_in_a_layer() -> None:
    for module in _graph():
        if module != "sse":
            assert module.split(".")[1] in LAYERS, f"{module} is in no layer of {LAYERS}"


def test_no_import_runs_upward() -> None:
    upward = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in targets
        if module != "sse" and _layer(target) > _layer(module)
    ]
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_no_import_circle() -> None:
    graph = _graph()
    # Modules of one package import its __init__ implicitly; only real edges count.
    edges = {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                circles.append(
                    [*trail[trail.index(target) :], target] if target in trail else [node, target]
                )
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)
