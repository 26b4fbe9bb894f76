"""CPU a broadcast costs per delivery: `/events`' Stream against a one-channel `/stream`.

S2 over real sockets on a shared VM moves by more than the difference between
the two. This isolates it: one hub, N sinks of each kind on transports that only
count bytes, the same JSON room events (as `room:<name>` carries them), the
hub's batches of B events. CPU time (`time.process_time`), so another program
on the machine slows both alike; the kinds alternate, and the best of the runs
counts. No sockets: the write system call, the same for both, is left out, so
this is the in-Python part of a delivery only.

    .venv/bin/python bench/stream_cost.py                 # 1,000 sinks, 2,000 events
    .venv/bin/python bench/stream_cost.py --sinks 100 --batch 16 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sse.io.mux import MuxResume, MuxStream, MuxWriter
from sse.io.stream import Stream
from sse.pubsub.hub import Hub, Resume

TOPIC = "room:lobby"


class _CountingTransport:
    """What a stream writes to: counts the bytes, never blocks."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


def _ignore(*args: object) -> None:
    """Abort, finish and detach: never called while nothing is slow."""


async def _run(kind: str, sinks: int, events: int, batch: int) -> tuple[float, float]:
    """CPU ns and bytes per delivery for `kind` ("events" or "stream")."""
    # Publishes wait for `flush`, as the server's hub does: batches are built here.
    hub = Hub(history_size=100, epoch="1796186217888", schedule=_no_schedule)
    writer = MuxWriter(asyncio.get_running_loop())
    transports = []
    for _ in range(sinks):
        transport = _CountingTransport()
        transports.append(transport)
        key = uuid.uuid4()
        if kind == "events":
            stream = Stream(
                transport,  # type: ignore[arg-type]
                key,
                TOPIC,
                chunked=True,
                limit_bytes=1 << 20,
                abort=_ignore,
                finish=_ignore,
            )
            hub.subscribe(TOPIC, key, stream)
            continue
        mux = MuxStream(
            transport,  # type: ignore[arg-type]
            key,
            [(TOPIC, TOPIC)],
            chunked=True,
            limit_bytes=1 << 20,
            writer=writer,
            abort=_ignore,
            finish=_ignore,
            detach=_ignore,
        )
        mux.start(b"", MuxResume((Resume(()),), (hub.last_id(TOPIC),)))
        hub.subscribe(TOPIC, key, mux.sinks[0])
    for transport in transports:
        transport.bytes = 0
    payloads = [
        json.dumps(
            {
                "id": f"m{i}",
                "room": "lobby",
                "text": f"{i} 1796186217888000000",
                "from": {"id": "g", "name": "guest"},
                "at": "2026-12-02T04:40:00Z",
            }
        )
        for i in range(events)
    ]
    pending: list[str] = []
    started = time.process_time()
    for payload in payloads:
        pending.append(payload)
        if len(pending) == batch:
            _publish_batch(hub, pending)
            pending = []
    if pending:
        _publish_batch(hub, pending)
    took = time.process_time() - started
    deliveries = sinks * events
    return took * 1e9 / deliveries, sum(t.bytes for t in transports) / deliveries


def _publish_batch(hub: Hub, payloads: list[str]) -> None:
    for payload in payloads:
        hub.publish(TOPIC, payload, event="message")
    hub.flush()


def _no_schedule(flush: Callable[[], int]) -> None:
    """The hub asks for a flush; `_publish_batch` does it."""


def main() -> int:
    """Print ns and bytes per delivery of each kind, best of the runs."""
    p = argparse.ArgumentParser(prog="bench/stream_cost.py", description=__doc__)
    p.add_argument("--sinks", type=int, default=1000, help="streams of each kind (default 1000)")
    p.add_argument("--events", type=int, default=2000, help="events broadcast (default 2000)")
    p.add_argument("--batch", type=int, default=1, help="events per hub flush (default 1)")
    p.add_argument("--runs", type=int, default=3, help="runs of each kind; the best counts")
    args = p.parse_args()
    if not (0 < args.sinks <= 20_000 and 0 < args.events <= 100_000 and 0 < args.batch <= 1000):
        raise SystemExit("--sinks 1..20000, --events 1..100000, --batch 1..1000, please")
    best: dict[str, tuple[float, float]] = {}
    for _ in range(max(1, min(args.runs, 20))):
        for kind in ("events", "stream"):
            ns, size = asyncio.run(_run(kind, args.sinks, args.events, args.batch))
            if kind not in best or ns < best[kind][0]:
                best[kind] = (ns, size)
    for kind, (ns, size) in best.items():
        print(f"{kind:7s} {ns:7.0f} ns  {size:5.0f} bytes per delivery")
    ratio = best["stream"][0] / best["events"][0]
    print(f"/stream costs {ratio:.2f}x /events per delivery, in Python (writes excluded)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
