"""The C load generator's side of a run: its command line, and its output read line by line.

It prints `CONNECTED ...` once every stream is up and waits for `go` on stdin
(`--sync`), then prints one JSON object with everything it measured.
"""

from __future__ import annotations

import os
import selectors
import time
from collections.abc import Sequence
from typing import IO

from paths import LOADGEN
from scenarios import Scenario
from server_specs import ServerSpec

__all__ = ["LineReader", "loadgen_argv"]


class LineReader:
    """Lines of a child's stdout with a deadline, without threads."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self._buf = b""
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._fd, selectors.EVENT_READ)
        self.eof = False

    def readline(self, deadline: float) -> str | None:
        """The next line, or None at EOF or when the deadline passes."""
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if self.eof or left <= 0 or not self._sel.select(left):
                return None
            chunk = os.read(self._fd, 65536)
            if not chunk:
                self.eof = True
                if not self._buf:
                    return None
                chunk = b"\n"
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(errors="replace")

    def close(self) -> None:
        """Forget the selector."""
        self._sel.close()


def loadgen_argv(
    sc: Scenario,
    ports: Sequence[int],
    wait_joins: bool,
    label: str,
    spec: ServerSpec | None = None,
) -> list[str]:
    """The loadgen command line for one scenario (against `spec`'s transport).

    With several ports the streams are split evenly over them and every message
    is published to the first.
    """
    where = ["--port", str(ports[0])]
    if len(ports) > 1:
        where = ["--ports", ",".join(map(str, ports)), "--publish-ports", str(ports[0])]
    argv = [
        str(LOADGEN),
        *where,
        "--streams",
        str(sc.streams),
        "--inflight",
        str(sc.inflight),
        "--transport",
        spec.transport if spec else "sse",
        *(spec.loadgen_args if spec else ()),
        "--connect-timeout",
        str(sc.connect_timeout_s),
        "--drain-timeout",
        str(sc.drain_timeout_s),
        "--max-seconds",
        str(sc.budget_s),
        "--sync",
        "--label",
        label,
    ]
    if wait_joins:
        argv.append("--expect-joins")
    if sc.messages:
        argv += ["--messages", str(sc.messages), "--publishers", str(sc.publishers)]
    if sc.rate:
        argv += ["--rate", str(sc.rate)]
    if sc.duration_s:
        argv += ["--duration", str(sc.duration_s)]
    return argv
