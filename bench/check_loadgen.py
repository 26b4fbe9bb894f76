"""Self-check of the load generator's parser against an adversarial fake server.

The fake server speaks the seed API but frames its event streams as awkwardly as
HTTP/1.1 allows: chunks of random sizes that cut lines and events anywhere,
several events per chunk, chunk extensions, upper-case hex, CRLF and LF line
ends, comment lines, `id:`, `event:` and `retry:` fields, and writes split at
random offsets. The generator must still count every message exactly once and
every join announcement.

    .venv/bin/python bench/check_loadgen.py [--loadgen bench/build/loadgen]

Exits 0 when the counts are exact, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
JOIN = "A new user joined!"


class FakeServer:
    """Seed API with hostile framing; `seed` makes every run reproducible."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.streams: list[_Stream] = []
        self.next_id = 1

    def broadcast(self, text: str) -> None:
        event_id = self.next_id
        self.next_id += 1
        for stream in self.streams:
            stream.push(self._event(event_id, text))

    def _event(self, event_id: int, text: str) -> bytes:
        rng = self.rng
        eol = "\r\n" if rng.random() < 0.3 else "\n"
        lines = []
        if rng.random() < 0.2:
            lines.append(":")  # a heartbeat-style comment before the event
        if rng.random() < 0.1:
            lines.append("event: message")
        lines += [f"id: {event_id}", f"data: {text}"]
        return (eol.join(lines) + eol + eol).encode()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0]
                if line.startswith(b"GET /events"):
                    await self._stream(reader, writer)
                    return
                length = 0
                for h in head.split(b"\r\n")[1:]:
                    if h.lower().startswith(b"content-length:"):
                        length = int(h.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.broadcast(json.loads(body)["message"])
                reply = b"Message sent successfully!"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(reply), reply)
                )
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = _Stream(writer, random.Random(self.rng.random()))
        self.streams.append(stream)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        stream.push(b"retry: 1500\n\n")
        self.broadcast(JOIN)
        task = asyncio.create_task(stream.run())
        try:
            await reader.read()  # the client closes its stream when it is done
        finally:
            self.streams.remove(stream)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task


class _Stream:
    def __init__(self, writer: asyncio.StreamWriter, rng: random.Random) -> None:
        self.writer = writer
        self.rng = rng
        self.pending = bytearray()
        self.wake = asyncio.Event()

    def push(self, payload: bytes) -> None:
        self.pending += payload
        self.wake.set()

    async def run(self) -> None:
        rng = self.rng
        while not self.writer.is_closing():
            await self.wake.wait()
            self.wake.clear()
            framed = bytearray()
            while self.pending:
                size = min(len(self.pending), rng.choice([1, 2, 3, 7, 20, 64, 500, 4096]))
                data = bytes(self.pending[:size])
                del self.pending[:size]
                hexsize = f"{size:x}".upper() if rng.random() < 0.5 else f"{size:x}"
                ext = ";ext=1" if rng.random() < 0.1 else ""
                framed += f"{hexsize}{ext}\r\n".encode() + data + b"\r\n"
            while framed:
                cut = rng.randint(1, max(1, min(len(framed), 300)))
                self.writer.write(bytes(framed[:cut]))
                del framed[:cut]
                if rng.random() < 0.2:
                    await self.writer.drain()
                    await asyncio.sleep(0.0005)
            await self.writer.drain()


async def _run(loadgen: Path, streams: int, messages: int, seed: int) -> int:
    fake = FakeServer(seed)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cmd = [
        str(loadgen),
        "--port",
        str(port),
        "--streams",
        str(streams),
        "--expect-joins",
        "--messages",
        str(messages),
        "--publishers",
        "3",
        "--connect-timeout",
        "30",
        "--drain-timeout",
        "10",
        "--max-seconds",
        "60",
    ]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    server.close()
    result = json.loads(out.decode().strip().splitlines()[-1])
    want_joins = streams * (streams + 1) // 2
    checks = {
        "ok": result["ok"] is True,
        "joins": result["connect"]["joins_received"] == want_joins,
        "unique": result["delivery"]["unique"] == streams * messages,
        "lost": result["delivery"]["lost"] == 0,
        "duplicates": result["delivery"]["duplicates"] == 0,
        "other_data": result["other_data"] == 0,
        "comments": result["comments"] > 0,
    }
    bad = [name for name, good in checks.items() if not good]
    print(
        f"seed {seed}: {streams} streams x {messages} messages: "
        + ("exact" if not bad else f"WRONG {bad}: {json.dumps(result)}")
    )
    return 1 if bad else 0


def main() -> int:
    """Run the check a few times with different seeds; 0 when every count is exact."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--loadgen", type=Path, default=HERE / "build" / "loadgen")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    if not args.loadgen.exists():
        sys.exit(f"{args.loadgen} is missing: build it with `make bench` or gcc")
    failures = 0
    for seed in range(args.rounds):
        failures += asyncio.run(_run(args.loadgen, 20 + 10 * seed, 50, seed))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
