"""The server under test as a child process (`python server.py`), and where things are."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from sse.io.server import Server

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "ROOT", "MakeServer", "ServerProcess"]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_LISTENING = re.compile(r"listening on http://([^\s:]+|\[[^\]]+\]):(\d+)")


# The `make_server` fixture: start in-process servers with `Config` overrides.
MakeServer = Callable[..., Awaitable[Server]]


class ServerProcess:
    """`python server.py` (or `command`) in a child process, its log collected from stderr."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        command: Sequence[str] = (sys.executable, str(ROOT / "server.py")),
        cwd: Path = ROOT,
    ) -> None:
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.address: tuple[str, int] = ("", 0)
        self.proc = subprocess.Popen(
            [*command, *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(15):
            self.kill()
            raise AssertionError("server did not start:\n" + self.log)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            match = _LISTENING.search(line)
            if match and not self._ready.is_set():
                self.address = (match.group(1).strip("[]"), int(match.group(2)))
                self._ready.set()
        self._ready.set()

    @property
    def url(self) -> str:
        """The server's base URL, `http://host:port`."""
        host, port = self.address
        return f"http://{host}:{port}"

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for_log(self, text: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged within {timeout}s:\n{self.log}")
            time.sleep(0.01)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then the exit status (fails the test if it does not exit)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"server did not exit within {timeout}s:\n{self.log}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
