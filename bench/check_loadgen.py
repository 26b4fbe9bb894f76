"""Self-check of the load generator's parser against an adversarial fake server.

The fake server speaks the seed API but frames its event streams as awkwardly as
HTTP/1.1 allows: chunks of random sizes that cut lines and events anywhere,
several events per chunk, chunk extensions, upper-case hex, CRLF and LF line
ends, comment lines, `id:`, `event:` and `retry:` fields, and writes split at
random offsets. The generator must still count every message exactly once and
every join announcement.

With `--transport ws` the same checks run over WebSockets (RFC 6455): frames
with 7-, 16- and 64-bit lengths split anywhere, several per write, pings the
generator must answer, and, every other round, permessage-deflate (RFC 7692)
with a compression context kept across messages; publishers' masked frames are
unmasked and answered with ack frames.

A last round splits the streams over three ports of one fake room (`--ports`,
as for several server processes) with the publishers on two of them
(`--publish-ports`), and checks each port's share in `per_port`.

    .venv/bin/python bench/check_loadgen.py [--loadgen bench/build/loadgen]

Exits 0 when the counts are exact, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import random
import socket
import struct
import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
JOIN = "A new user joined!"


_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class FakeServer:
    """Seed API with hostile framing; `seed` makes every run reproducible."""

    def __init__(self, seed: int, deflate: bool = False) -> None:
        self.rng = random.Random(seed)
        self.streams: list[_Stream] = []
        self.sockets: list[_Socket] = []
        self.next_id = 1
        self.deflate = deflate
        self.pongs = 0

    def broadcast(self, text: str) -> None:
        event_id = self.next_id
        self.next_id += 1
        for stream in self.streams:
            stream.push(self._event(event_id, text))
        for sock in self.sockets:
            sock.event(event_id, text)

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
                if line.startswith(b"GET /ws"):
                    await self._socket(head, reader, writer)
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

    async def _socket(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        headers = {}
        for h in head.split(b"\r\n")[1:]:
            name, _, value = h.partition(b":")
            headers[name.strip().lower()] = value.strip()
        key = headers[b"sec-websocket-key"]
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
        deflate = self.deflate and b"permessage-deflate" in headers.get(
            b"sec-websocket-extensions", b""
        )
        extension = b"Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else b""
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: %s\r\n%s\r\n" % (accept, extension)
        )
        sock = _Socket(writer, random.Random(self.rng.random()), deflate)
        self.sockets.append(sock)
        self.broadcast(JOIN)
        task = asyncio.create_task(sock.run())
        try:
            while True:  # masked client frames: messages to publish, and pongs
                first, second = await reader.readexactly(2)
                size = second & 0x7F
                if size == 126:
                    (size,) = struct.unpack("!H", await reader.readexactly(2))
                elif size == 127:
                    (size,) = struct.unpack("!Q", await reader.readexactly(8))
                mask = await reader.readexactly(4) if second & 0x80 else b"\0\0\0\0"
                data = await reader.readexactly(size)
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
                opcode = first & 0x0F
                if opcode == 0xA:
                    self.pongs += 1
                elif opcode == 0x1:
                    self.broadcast(json.loads(payload)["message"])
                    sock.push(_ws_frame(b'{"type":"ack","id":"x"}'))
                elif opcode == 0x8:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.sockets.remove(sock)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task


def _ws_frame(payload: bytes, opcode: int = 0x1, compressed: bool = False) -> bytes:
    """One unmasked server frame (RFC 6455 section 5.2), in the shortest length form."""
    first = 0x80 | opcode | (0x40 if compressed else 0)
    if len(payload) < 126:
        return struct.pack("!BB", first, len(payload)) + payload
    if len(payload) < 1 << 16:
        return struct.pack("!BBH", first, 126, len(payload)) + payload
    return struct.pack("!BBQ", first, 127, len(payload)) + payload


class _Socket:
    """One WebSocket: events as JSON text frames, pings, all written in random cuts."""

    def __init__(self, writer: asyncio.StreamWriter, rng: random.Random, deflate: bool) -> None:
        self.writer = writer
        self.rng = rng
        self.pending = bytearray()
        self.wake = asyncio.Event()
        # Context takeover (RFC 7692 section 7.2.1): the client must keep its inflater.
        self.compressor = zlib.compressobj(6, zlib.DEFLATED, -15) if deflate else None

    def push(self, frame: bytes) -> None:
        self.pending += frame
        self.wake.set()

    def event(self, event_id: int, text: str) -> None:
        rng = self.rng
        message: dict[str, str] = {"id": f"e-{event_id}", "event": "message", "data": text}
        if rng.random() < 0.1:
            # After "data": long frames need 16- or 64-bit lengths.
            message["pad"] = "p" * rng.choice([200, 70_000])
        # Both spellings of JSON: compact (ours) and with spaces (Python's default).
        separators = (",", ":") if rng.random() < 0.5 else (", ", ": ")
        payload = json.dumps(message, separators=separators).encode()
        if rng.random() < 0.1:
            self.push(_ws_frame(b"", 0x9))  # a ping, which the generator must answer
        if self.compressor is not None and rng.random() < 0.8:
            data = self.compressor.compress(payload) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
            self.push(_ws_frame(data[:-4], compressed=True))
        else:
            self.push(_ws_frame(payload))

    async def run(self) -> None:
        rng = self.rng
        while not self.writer.is_closing():
            await self.wake.wait()
            self.wake.clear()
            framed, self.pending = self.pending, bytearray()
            while framed and not self.writer.is_closing():
                cut = rng.randint(1, max(1, min(len(framed), 300)))
                self.writer.write(bytes(framed[:cut]))
                del framed[:cut]
                if rng.random() < 0.2:
                    await self.writer.drain()
                    await asyncio.sleep(0.0005)
            await self.writer.drain()


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


async def _run(
    loadgen: Path, streams: int, messages: int, seed: int, transport: str, nports: int = 1
) -> int:
    deflate = transport == "ws" and seed % 2 == 1
    fake = FakeServer(seed, deflate)
    # Several listeners, one room: like nodes that share their events through a broker.
    servers = [await asyncio.start_server(fake.handle, "127.0.0.1", 0) for _ in range(nports)]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    cmd = [
        str(loadgen),
        *(["--port", str(ports[0])] if nports == 1 else ["--ports", ",".join(map(str, ports))]),
        *(["--publish-ports", f"{ports[-1]},{ports[0]}"] if nports > 1 else []),
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
        "--transport",
        transport,
        *(["--ws-deflate"] if deflate else []),
    ]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    for server in servers:
        server.close()
    result = json.loads(out.decode().strip().splitlines()[-1])
    want_joins = streams * (streams + 1) // 2
    if transport == "ws":
        # The 3 publishers are WebSockets on the room too: each announces itself.
        want_joins += 3 * streams
    checks = {
        "ok": result["ok"] is True,
        "joins": result["connect"]["joins_received"] == want_joins,
        "unique": result["delivery"]["unique"] == streams * messages,
        "lost": result["delivery"]["lost"] == 0,
        "duplicates": result["delivery"]["duplicates"] == 0,
        "other_data": result["other_data"] == 0,
    }
    # Equal blocks of streams, one per port, each with every message.
    shares = [(k + 1) * streams // nports - k * streams // nports for k in range(nports)]
    per_port = result["per_port"]
    checks["per_port"] = [(p["port"], p["streams"], p["unique"], p["lost"]) for p in per_port] == [
        (port, n, n * messages, 0) for port, n in zip(ports, shares, strict=True)
    ] and all(p["latency_ms"]["p50"] > 0 for p in per_port)
    if nports > 1:
        checks["publish_ports"] = result["publish_ports"] == [ports[-1], ports[0]]
        checks["procs"] = result["procs"] == nports
    if transport == "ws":
        checks["pongs"] = fake.pongs > 0
        checks["deflate"] = result["ws_deflated_streams"] == (streams if deflate else 0)
    else:
        checks["comments"] = result["comments"] > 0
    bad = [name for name, good in checks.items() if not good]
    print(
        f"{transport} seed {seed}{' deflate' if deflate else ''}"
        f"{f' over {nports} ports' if nports > 1 else ''}: "
        f"{streams} streams x {messages} messages: "
        + ("exact" if not bad else f"WRONG {bad}: {json.dumps(result)}")
    )
    return 1 if bad else 0


def main() -> int:
    """Run the check a few times with different seeds; 0 when every count is exact."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--loadgen", type=Path, default=HERE / "build" / "loadgen")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--transport", choices=["sse", "ws", "both"], default="both", help="what to check"
    )
    args = p.parse_args()
    if not args.loadgen.exists():
        sys.exit(f"{args.loadgen} is missing: build it with `make bench` or gcc")
    failures = 0
    transports = ["sse", "ws"] if args.transport == "both" else [args.transport]
    for transport in transports:
        for seed in range(args.rounds):
            failures += asyncio.run(_run(args.loadgen, 20 + 10 * seed, 50, seed, transport))
        failures += asyncio.run(_run(args.loadgen, 31, 50, args.rounds, transport, nports=3))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
