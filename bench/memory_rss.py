"""Resident memory of one `server.py` as its histories fill past their bounds (issue 11).

    python bench/memory_rss.py [--rounds 8] [-- extra server flags]

Starts the server from this checkout on a free loopback port, then: 200
conversations with one listener each, `--rounds` messages of 30,000 characters
to each (the echo model repeats each one, so every message is two events of
about 30 KB, plus small ones), 1,000 messages of 64 KB to the room, and one
stream resuming with `Last-Event-ID: bogus`. Prints VmRSS after each step, the
history that /healthz reports, and how many bytes the bogus resume received.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_DONE = b"event: done"


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+)", status)
    assert match is not None
    return round(int(match.group(1)) / 1024, 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _request(
    port: int, method: str, path: str, body: bytes = b"", json_body: bool = False
) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    kind = "content-type: application/json\r\n" if json_body else ""
    writer.write(
        f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n"
        f"connection: close\r\n{kind}\r\n".encode()
        + body
    )
    data = await reader.read()
    writer.close()
    return data.partition(b"\r\n\r\n")[2]


class _Listener:
    """One stream, read to the end; counts the replies it saw finish."""

    def __init__(self) -> None:
        self.done = 0
        self.received = 0

    async def run(self, port: int, path: str, headers: str = "") -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\n{headers}\r\n".encode())
        tail = b""
        while chunk := await reader.read(1 << 16):
            self.received += len(chunk)
            window = tail + chunk
            self.done += window.count(_DONE) - tail.count(_DONE)
            tail = window[-len(_DONE) :]


def _all_done(listeners: list[_Listener], replies: int) -> bool:
    return all(x.done >= replies for x in listeners)


async def _wait(predicate: Callable[[], bool], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        await asyncio.sleep(0.05)


def _start(port: int, folder: str, extra: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "server.py", "--port", str(port), "--no-join-announcement",
         "--db", f"{folder}/chat.sqlite3", "--echo-delay", "0", "--log-level", "warning",
         *extra],
        cwd=ROOT,
    )  # fmt: skip


async def _main(rounds: int, extra: list[str]) -> None:
    port = _free_port()
    with tempfile.TemporaryDirectory() as folder:
        proc = _start(port, folder, extra)
        tasks: list[asyncio.Task[None]] = []
        try:
            for _ in range(200):
                try:
                    await _request(port, "GET", "/healthz")
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            print(f"started: {_rss_mb(proc.pid)} MB")
            listeners: list[_Listener] = []
            cids = []
            for _ in range(200):
                cid = json.loads(await _request(port, "POST", "/conversations"))["id"]
                cids.append(cid)
                listener = _Listener()
                listeners.append(listener)
                tasks.append(
                    asyncio.create_task(listener.run(port, f"/conversations/{cid}/events"))
                )
            print(f"200 listeners: {_rss_mb(proc.pid)} MB")
            content = json.dumps({"content": "w" * 30_000}).encode()
            for n in range(1, rounds + 1):
                path = "/conversations/{}/messages"
                await asyncio.gather(
                    *(_request(port, "POST", path.format(c), content, True) for c in cids)
                )
                await _wait(functools.partial(_all_done, listeners, n), 60)
            print(f"200 conversations x {rounds} messages of 30,000 chars: {_rss_mb(proc.pid)} MB")
            message = json.dumps({"message": "m" * 64_000}).encode()
            for _ in range(1000):
                await _request(port, "POST", "/send-message", message, True)
            print(f"room, 1,000 messages of 64 KB: {_rss_mb(proc.pid)} MB")
            health = json.loads(await _request(port, "GET", "/healthz"))
            print(
                f"/healthz: history_events={health.get('history_events')} "
                f"history_bytes={health.get('history_bytes')}"
            )
            bogus = _Listener()
            tasks.append(
                asyncio.create_task(bogus.run(port, "/events", "last-event-id: bogus\r\n"))
            )
            await asyncio.sleep(2.0)  # a measurement, not a test: whatever came in 2 s
            print(f"bytes received for Last-Event-ID: bogus: {bogus.received}")
            print(f"end: {_rss_mb(proc.pid)} MB")
        finally:
            proc.terminate()
            proc.wait(15)
            for task in tasks:
                task.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("extra", nargs="*", help="flags for server.py, after --")
    args = parser.parse_args()
    asyncio.run(_main(args.rounds, args.extra))
