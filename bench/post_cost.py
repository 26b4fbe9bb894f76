"""CPU instructions one POST /send-message costs in ssechat's Python code, without sockets.

S4's POSTs/s moves by ±10% from run to run on a shared VM, more than most
changes to the request path do. This counts instead: it feeds keep-alive POSTs
straight into an `HttpConnection` of a started server (a transport that only
counts bytes; the store open, since a lobby post is kept before it is
acknowledged, and callgrind counts the store's thread too), runs that under
valgrind's callgrind for two request counts, and prints the difference per
request, which start-up cancels out of. Same code, same count.

    .venv/bin/python bench/post_cost.py           # instructions per POST (needs valgrind)
    .venv/bin/python bench/post_cost.py --h11     # the same for h11 alone, for scale
    .venv/bin/python bench/post_cost.py --limits  # with the per-client limits counting
                                                  # (set too high to refuse any of them)
    .venv/bin/python bench/post_cost.py --run N   # just feed N requests (what callgrind runs)
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL, LARGE = 500, 2500
SENT = b"Message sent successfully!"
REQUEST = (
    b"POST /send-message HTTP/1.1\r\nHost: 127.0.0.1:3000\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
)


def requests(n: int) -> list[bytes]:
    """`n` POSTs shaped like the load generator's: a sequence number and a timestamp."""
    bodies = [b'{"message":"%d 1732470000123456789"}' % i for i in range(n)]
    return [REQUEST % (len(body), body) for body in bodies]


class CountingTransport:
    """Just enough of an asyncio transport for `HttpConnection`: writes and answers are counted."""

    def __init__(self) -> None:
        self.written = 0
        self.answered = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.answered += data.count(SENT)

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def feed_server(n: int, limits: bool) -> None:
    sys.path.insert(0, str(ROOT))
    from sse.config import Config
    from sse.io.http import HttpConnection
    from sse.io.server import Server

    # One address sends every request, as the load generator does: with limits on,
    # they are counted against limits too high to refuse any of them.
    high = {"room_posts_per_s": 1e9, "room_post_burst": 10**9, "requests_per_s": 1e9}
    with tempfile.TemporaryDirectory() as scratch:
        # Started, store and all: a lobby post is kept before it is acknowledged.
        config = Config(
            port=0,
            db_path=Path(scratch) / "post_cost.sqlite3",
            join_announcement=False,
            limits="on" if limits else "off",
            **high,
        )
        server = Server(config)
        await server.start()
        conn = HttpConnection(server)
        transport = CountingTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        for request in requests(n):
            conn.data_received(request)
        deadline = time.monotonic() + 120.0
        while transport.answered < n and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        conn.connection_lost(None)
        await server.stop()
    if transport.answered < n:
        raise SystemExit(f"only {transport.answered} of {n} requests were answered")


def feed_h11(n: int) -> None:
    import h11

    conn = h11.Connection(h11.SERVER)
    body = b"Message sent successfully!"
    head = h11.Response(
        status_code=200,
        headers=[("content-type", "text/plain; charset=utf-8"), ("content-length", "26")],
    )
    for request in requests(n):
        conn.receive_data(request)
        while type(conn.next_event()) is not h11.EndOfMessage:
            pass
        conn.send(head)
        conn.send(h11.Data(data=body))
        conn.send(h11.EndOfMessage())
        conn.start_next_cycle()


def instructions(n: int, h11_only: bool, limits: bool) -> int:
    argv = [sys.executable, __file__, "--run", str(n), *(["--h11"] if h11_only else [])]
    argv += ["--limits"] if limits else []
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no count:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--h11", action="store_true", help="count h11 alone, not the server")
    p.add_argument("--run", type=int, metavar="N", help="feed N requests and exit")
    p.add_argument("--limits", action="store_true", help="with the per-client limits on")
    args = p.parse_args()
    if args.run is not None:
        if args.h11:
            feed_h11(args.run)
        else:
            import uvloop

            uvloop.run(feed_server(args.run, args.limits))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is missing: apt-get install valgrind", file=sys.stderr)
        return 2
    large = instructions(LARGE, args.h11, args.limits)
    per_post = (large - instructions(SMALL, args.h11, args.limits)) // (LARGE - SMALL)
    what = "h11 alone" if args.h11 else "ssechat, limits on" if args.limits else "ssechat"
    print(f"{what}: {per_post:,} instructions per POST /send-message (callgrind)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
