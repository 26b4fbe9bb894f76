"""Soak: everything at once for minutes, against a fresh server; did anything leak or get lost?

`make soak` (SOAK_MINUTES=10) or `python bench/soak.py --minutes 10` starts `python server.py` on
a free loopback port with a temporary SQLite file, `--limits off` and `--log-level warning`, then
runs, together and each bounded in count and time:

- long-lived room streams (`--streams`, 200) opened first and read promptly for the whole run;
- churn: short room streams (`--churn-per-s`, 20 a second), each open 0.3 to 1.5 s;
- room posts (`--posts-per-s`, 50 a second) on a few keep-alive connections, each text carrying
  its number (`soak-<n>.`);
- conversations (`--replies-per-s`, 2 replies a second) with the echo model, each reply read on
  the conversation's stream up to its `done`;
- a slow reader, every `--slow-every-s` (60 s): a conversation stream with a 4 KiB receive
  buffer that reads 16 bytes a second while large messages are posted to its conversation; the
  server must cut it (backlog over --backlog-limit-bytes) while a normal reader of the same
  conversation gets every reply.

Every 5 s it samples the server's RSS and open files (/proc/<pid>/status, /proc/<pid>/fd) and the
`streams` count of /healthz. At the end it prints a markdown table (first, last, max and least
squares slope per minute of each sample; then the checks) and exits 1 if a check failed:
every room message answered 200 reached every long-lived stream open for it, no such stream was
cut, every conversation reply reached `done`, every slow reader was cut, no request failed, and
the server logged no ERROR.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import h11
from launch import free_port, stop, wait_listening
from paths import REPO

sys.path.insert(0, str(REPO))

from tests.support.client import Connection, CookieJar, EventStream, json_object

HOST = "127.0.0.1"
# Loopback source addresses the clients spread over (several "machines").
SOURCES = [f"127.0.0.{i}" for i in range(2, 10)]
MAX_OPEN_FILES = 20_000  # the brief's ceiling; the plan must stay well below it
_TOKEN = re.compile(rb"soak-(\d+)\.")
IDLE_REUSE_S = 5.0  # well under the server's keep-alive idle time (--header-timeout, 10 s)
SLOW_FEED_BYTES = 5 * 1024 * 1024
_TAIL = 32  # longer than any token, so one split across two reads is found whole


@dataclass
class Plan:
    """How much of each kind of traffic, and for how long."""

    seconds: float
    streams: int = 200
    churn_per_s: float = 20.0
    posts_per_s: float = 50.0
    posters: int = 16
    replies_per_s: float = 2.0
    conversation_workers: int = 4
    slow_every_s: float = 120.0
    sample_every_s: float = 5.0
    pad_chars: int = 100

    def open_files(self) -> int:
        """Most sockets the client holds at once (the server holds as many, plus its own)."""
        churn = int(self.churn_per_s * 1.5) + 10
        return self.streams + churn + self.posters + 2 * self.conversation_workers + 8


@dataclass
class Posted:
    """One room post: when it went out, when its answer came, which answer."""

    sent_at: float
    acked_at: float = 0.0
    status: int = 0


@dataclass
class Counts:
    """What every part of the run counted, and what went wrong (each entry fails the run)."""

    posts: list[Posted] = field(default_factory=list)
    churn_opened: int = 0
    churn_failed: int = 0
    replies_posted: int = 0
    replies_done: int = 0
    slow_cycles: int = 0
    slow_cut: int = 0
    slow_drained_kib: list[int] = field(default_factory=list)
    slow_companion_done: int = 0
    slow_companion_posted: int = 0
    failures: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        if len(self.failures) < 1000:
            self.failures.append(what)


class RoomStream:
    """A long-lived `GET /events`: which post numbers it saw, read as soon as they come."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.seen = bytearray()
        self.duplicates = 0
        self.opened_at = 0.0
        self.closed_at = float("inf")
        self.cut: str | None = None  # why it ended before we closed it
        self._tail = b""

    def _scan(self, data: bytes) -> None:
        buf = self._tail + data
        end = 0
        for match in _TOKEN.finditer(buf):
            n = int(match[1])
            if n >= len(self.seen):
                self.seen.extend(bytes(n + 1024 - len(self.seen)))
            if self.seen[n]:
                self.duplicates += 1
            self.seen[n] = 1
            end = match.end()
        self._tail = buf[max(end, len(buf) - _TAIL) :]

    def count(self, numbers: list[int]) -> int:
        """How many of `numbers` it saw."""
        seen, size = self.seen, len(self.seen)
        return sum(1 for n in numbers if n < size and seen[n])

    async def run(self, address: tuple[str, int], opened: asyncio.Event) -> None:
        """Open, then read until cancelled; an end before that is recorded as a cut."""
        src = SOURCES[self.index % len(SOURCES)]
        try:
            reader, writer = await asyncio.open_connection(*address, local_addr=(src, 0))
        except OSError as exc:
            self.cut = f"could not open: {exc}"
            opened.set()
            return
        conn = h11.Connection(h11.CLIENT)
        try:
            writer.write(_room_stream_request(conn))
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(262144)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Response):
                    if event.status_code != 200:
                        self.cut = f"status {event.status_code}"
                        return
                    self.opened_at = time.monotonic()
                    opened.set()
                elif isinstance(event, h11.Data):
                    self._scan(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    self.cut = "the server ended the stream"
                    return
        except (ConnectionError, h11.RemoteProtocolError) as exc:
            self.cut = f"{type(exc).__name__}: {exc}"
        finally:
            self.closed_at = time.monotonic()
            opened.set()
            writer.close()


def _room_stream_request(conn: h11.Connection) -> bytes:
    """The bytes of `GET /events` asking for an event stream, framed by `conn`."""
    head = h11.Request(
        method="GET", target="/events", headers=[("host", HOST), ("accept", "text/event-stream")]
    )
    return conn.send(head) + conn.send(h11.EndOfMessage())


def _post_body(n: int, pad: str) -> bytes:
    return json.dumps({"message": f"soak-{n}. {pad}"}).encode()


async def _paced(rate_per_s: float, until: float, step: Callable[[], Awaitable[None]]) -> None:
    """Call `step` `rate_per_s` times a second until `until`; when late, skip, never burst."""
    interval = 1.0 / rate_per_s
    next_at = time.monotonic()
    while next_at < until:
        await step()
        next_at += interval
        now = time.monotonic()
        if next_at < now:
            next_at = now
        await asyncio.sleep(next_at - now)


async def posters(address: tuple[str, int], plan: Plan, counts: Counts, until: float) -> None:
    """`posts_per_s` room posts a second, open loop, over at most `posters` keep-alive connections.

    A post does not wait for the one before it, so a slow answer does not lower the rate; when
    every connection is busy the next post waits for one (and the reached rate shows it).
    """
    pad = "x" * plan.pad_chars
    pool: asyncio.Queue[Connection | None] = asyncio.Queue()
    for _ in range(plan.posters):
        pool.put_nowait(None)
    tasks: set[asyncio.Task[None]] = set()
    last_used: dict[Connection, float] = {}

    async def one(n: int, post: Posted) -> None:
        conn = await pool.get()
        if conn is not None and time.monotonic() - last_used.pop(conn) > IDLE_REUSE_S:
            await conn.close()  # the server may be closing it (--header-timeout): a new one
            conn = None
        try:
            if conn is None:
                conn = await Connection.open(address, None)
            answer = await conn.request(
                "POST",
                "/send-message",
                [("content-type", "application/json")],
                _post_body(n, pad),
                timeout=10.0,
            )
        except (ConnectionError, TimeoutError, h11.RemoteProtocolError) as exc:
            counts.fail(f"post {n}: {type(exc).__name__}: {exc}")
            if conn is not None:
                await conn.close()
            pool.put_nowait(None)
            return
        post.acked_at, post.status = time.monotonic(), answer.status
        if answer.status != 200:
            counts.fail(f"post {n}: {answer.status} {answer.body[:200]!r}")
        if answer.headers.get("connection", "").lower() == "close":
            await conn.close()
            conn = None
        else:
            last_used[conn] = time.monotonic()
        pool.put_nowait(conn)

    async def spawn() -> None:
        if pool.empty():  # every connection busy: wait for one rather than pile up
            await pool.put(await pool.get())
        n = len(counts.posts)
        post = Posted(time.monotonic())
        counts.posts.append(post)
        task = asyncio.create_task(one(n, post))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        await _paced(plan.posts_per_s, until, spawn)
        if tasks:
            await asyncio.wait(tasks, timeout=30.0)
    finally:
        while not pool.empty():
            conn = pool.get_nowait()
            if conn is not None:
                await conn.close()


async def churn_one(address: tuple[str, int], counts: Counts) -> None:
    """One short room stream: 200, some of the room's events, then we close it."""
    lifetime_s = random.uniform(0.3, 1.5)
    src = random.choice(SOURCES)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(*address, local_addr=(src, 0)), 10.0
        )
    except (OSError, TimeoutError) as exc:
        counts.churn_failed += 1
        counts.fail(f"churn stream: {type(exc).__name__}: {exc}")
        return
    conn = h11.Connection(h11.CLIENT)
    try:
        writer.write(_room_stream_request(conn))
        deadline = time.monotonic() + lifetime_s
        status = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                left = deadline - time.monotonic()
                if status and left <= 0:
                    break
                try:
                    data = await asyncio.wait_for(
                        reader.read(65536), max(left, 0.01) + 10 * (not status)
                    )
                except TimeoutError:
                    if status:
                        break
                    raise
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
                if status != 200:
                    raise ConnectionError(f"status {status}")
                counts.churn_opened += 1
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                raise ConnectionError("the server ended a short stream")
    except (ConnectionError, TimeoutError, h11.RemoteProtocolError) as exc:
        counts.churn_failed += 1
        counts.fail(f"churn stream: {type(exc).__name__}: {exc}")
    finally:
        writer.close()


async def churn(address: tuple[str, int], plan: Plan, counts: Counts, until: float) -> None:
    """`churn_per_s` short streams a second, each in its own task, all awaited at the end."""
    tasks: set[asyncio.Task[None]] = set()
    bound = asyncio.Semaphore(int(plan.churn_per_s * 1.5) + 10)

    async def guarded() -> None:
        async with bound:
            await churn_one(address, counts)

    async def spawn() -> None:
        task = asyncio.create_task(guarded())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    await _paced(plan.churn_per_s, until, spawn)
    if tasks:
        await asyncio.wait(tasks, timeout=30.0)


async def _new_conversation(address: tuple[str, int], jar: CookieJar) -> str:
    conn = await Connection.open(address, jar)
    try:
        answer = await conn.request("POST", "/conversations", timeout=10.0)
    finally:
        await conn.close()
    if answer.status != 201:
        raise ConnectionError(f"POST /conversations: {answer.status} {answer.body[:200]!r}")
    return str(json_object(answer)["id"])


async def _post_content(conn: Connection, cid: str, content: str) -> tuple[int, dict[str, object]]:
    answer = await conn.request(
        "POST",
        f"/conversations/{cid}/messages",
        [("content-type", "application/json")],
        json.dumps({"content": content}).encode(),
        timeout=10.0,
    )
    return answer.status, (json_object(answer) if answer.status == 202 else {})


async def _until_done(stream: EventStream, reply_id: str, within_s: float) -> dict[str, object]:
    deadline = time.monotonic() + within_s
    while True:
        event = await stream.next_event(max(deadline - time.monotonic(), 0.001))
        if event.type in ("done", "error"):
            data = json.loads(event.data)
            if data.get("message_id") == reply_id or event.type == "error":
                return {"type": event.type, **data}


async def conversation_worker(
    address: tuple[str, int], plan: Plan, counts: Counts, until: float, index: int
) -> None:
    """A person chatting: a conversation, its stream, a message, the reply to `done`; again."""
    jar = CookieJar()
    stream: EventStream | None = None
    conn: Connection | None = None
    cid = ""
    sent_here = 0

    async def one() -> None:
        nonlocal stream, conn, cid, sent_here
        try:
            if stream is None or sent_here >= 20:  # a new conversation now and then
                if stream is not None:
                    await stream.close()
                cid = await _new_conversation(address, jar)
                stream = await EventStream.open(address, f"/conversations/{cid}/events", jar=jar)
                if stream.status != 200:
                    raise ConnectionError(f"conversation stream: {stream.status}")
                sent_here = 0
            if conn is None:
                conn = await Connection.open(address, jar)
            status, body = await _post_content(conn, cid, f"soak reply {index}-{sent_here}")
            sent_here += 1
            if status != 202:
                raise ConnectionError(f"POST messages: {status}")
            counts.replies_posted += 1
            done = await _until_done(stream, str(body["reply_id"]), 30.0)
            if done["type"] != "done" or done.get("finish_reason") != "stop":
                raise ConnectionError(f"reply ended with {done}")
            counts.replies_done += 1
        except (ConnectionError, TimeoutError, EOFError, h11.RemoteProtocolError) as exc:
            counts.fail(f"conversation {index}: {type(exc).__name__}: {exc}")
            for held in (stream, conn):
                if held is not None:
                    await held.close()
            stream = conn = None

    await asyncio.sleep(index / plan.replies_per_s)
    try:
        await _paced(plan.replies_per_s / plan.conversation_workers, until, one)
    finally:
        for held in (stream, conn):
            if held is not None:
                await held.close()


async def _reply_states(
    address: tuple[str, int], jar: CookieJar, cid: str, ids: set[str]
) -> dict[str, int]:
    """How many of the replies `ids` the transcript shows in each status (for a failure)."""
    conn = await Connection.open(address, jar)
    try:
        transcript = json_object(await conn.request("GET", f"/conversations/{cid}", timeout=30.0))
    finally:
        await conn.close()
    states: dict[str, int] = {}
    for message in transcript.get("messages", []):
        if message["id"] in ids:
            states[message["status"]] = states.get(message["status"], 0) + 1
    return states


async def _slow_socket(address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A small receive buffer (set before connecting: it also fixes the window) so the server's
    # backlog, not the kernels', holds what this reader does not take.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    sock.bind((SOURCES[-1], 0))
    await asyncio.get_running_loop().sock_connect(sock, address)
    return sock


async def slow_cycle(address: tuple[str, int], counts: Counts) -> None:
    """A slow reader on a conversation fed with large messages: the server must cut it alone."""
    counts.slow_cycles += 1
    jar = CookieJar()
    cid = await _new_conversation(address, jar)
    companion = await EventStream.open(address, f"/conversations/{cid}/events", jar=jar)
    sock = await _slow_socket(address)
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    cookie = jar.header() or ""
    writer.write(
        f"GET /conversations/{cid}/events HTTP/1.1\r\nhost: {HOST}\r\n"
        f"accept: text/event-stream\r\ncookie: {cookie}\r\n\r\n".encode()
    )
    got = bytearray()

    async def sip() -> None:  # 16 bytes a second
        while True:
            try:
                chunk = await reader.read(16)
            except ConnectionError:
                return  # cut; the drain below sees it again
            if not chunk:
                return
            got.extend(chunk)
            await asyncio.sleep(1.0)

    done: set[str] = set()

    async def follow() -> None:  # the companion, a normal reader of the same conversation
        while True:
            event = await companion.next_event(60.0)
            if event.type == "done":
                done.add(str(json.loads(event.data)["message_id"]))
            if companion._cursor == len(companion.items):  # keep none of these large events
                companion.items.clear()
                companion._cursor = 0
            companion.raw.clear()

    sipping = asyncio.create_task(sip())
    following = asyncio.create_task(follow())
    conn = await Connection.open(address, jar)
    reply_ids: list[str] = []
    # One word: the echo model answers it in three pieces. The most --max-content-chars allows.
    big = "y" * 32000
    fed, feed_until = 0, time.monotonic() + 60.0
    try:
        # More than the server may hold for it: its backlog (--backlog-limit-bytes, 256 KiB) and
        # the kernel's send buffer in front of it (on loopback, with its 64 KiB segments, Linux
        # starts that near 3 MiB).
        while fed < SLOW_FEED_BYTES and time.monotonic() < feed_until:
            status, body = await _post_content(conn, cid, big)
            if status == 409:  # the previous reply still streams
                await asyncio.sleep(0.02)
                continue
            if status != 202:
                counts.fail(f"slow reader's conversation: POST messages {status}")
                break
            reply_ids.append(str(body["reply_id"]))
            fed += 2 * len(big)
        counts.slow_companion_posted += len(reply_ids)
        deadline = time.monotonic() + 30.0
        while not set(reply_ids) <= done and not following.done():
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        got_done = len(done & set(reply_ids))
        counts.slow_companion_done += got_done
        if got_done < len(reply_ids):
            why = f" ({following.exception()!r})" if following.done() else ""
            states = await _reply_states(address, jar, cid, set(reply_ids) - done)
            counts.fail(
                f"slow reader's companion got {got_done} of {len(reply_ids)} replies{why}; "
                f"the others are {states}"
            )
        # Feeding stopped, so only a cut can end the slow stream. The server closes it, and
        # its kernel still delivers what it had queued, then the FIN: drain it fast, expect the
        # end. A stream that was not cut would catch up and go on.
        sipping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sipping
        drained = len(got)
        try:
            async with asyncio.timeout(20.0):
                while chunk := await reader.read(262144):
                    drained += len(chunk)
            counts.slow_cut += 1
            counts.slow_drained_kib.append(drained // 1024)
        except ConnectionError:
            counts.slow_cut += 1
            counts.slow_drained_kib.append(drained // 1024)
        except TimeoutError:
            counts.fail(f"the slow reader was not cut after {fed // 1024} KiB were fed to it")
    except (ConnectionError, TimeoutError, EOFError, h11.RemoteProtocolError) as exc:
        counts.fail(f"slow reader cycle: {type(exc).__name__}: {exc}")
    finally:
        sipping.cancel()
        following.cancel()
        writer.close()
        await conn.close()
        await companion.close()


async def slow_readers(address: tuple[str, int], plan: Plan, counts: Counts, until: float) -> None:
    """A slow reader cycle right away, then every `slow_every_s` while time remains."""
    await asyncio.sleep(1.0)
    while True:
        started = time.monotonic()
        try:
            await slow_cycle(address, counts)
        except (ConnectionError, TimeoutError, EOFError, h11.RemoteProtocolError) as exc:
            counts.fail(f"slow reader cycle: {type(exc).__name__}: {exc}")
        next_at = started + plan.slow_every_s
        if next_at + 20.0 > until:
            return
        await asyncio.sleep(next_at - time.monotonic())


@dataclass
class Sample:
    """One look at the server process."""

    t_s: float
    rss_kb: int
    open_files: int
    streams: int


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _healthz(address: tuple[str, int]) -> dict[str, object]:
    conn = await Connection.open(address, None)
    try:
        return json_object(await conn.request("GET", "/healthz", timeout=10.0))
    finally:
        await conn.close()


async def sampler(
    address: tuple[str, int], pid: int, plan: Plan, samples: list[Sample], stop_at: asyncio.Event
) -> None:
    """Every `sample_every_s`: RSS, open files, /healthz streams."""
    start = time.monotonic()
    while True:
        health = await _healthz(address)
        streams = health.get("streams")
        samples.append(
            Sample(
                time.monotonic() - start,
                _rss_kb(pid),
                len(os.listdir(f"/proc/{pid}/fd")),
                streams if isinstance(streams, int) else -1,
            )
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_at.wait(), plan.sample_every_s)
            return


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least squares slope of (seconds, value) points, per minute; 0 for fewer than two."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return 0.0
    return 60.0 * sum((t - mx) * (v - my) for t, v in points) / sxx


def _expected(posts: list[Posted], stream: RoomStream) -> list[int]:
    """Numbers of the posts answered 200 while `stream` was open (sent after it opened)."""
    return [
        n
        for n, p in enumerate(posts)
        if p.status == 200 and p.sent_at >= stream.opened_at and p.acked_at <= stream.closed_at
    ]


def render(
    plan: Plan, samples: list[Sample], counts: Counts, streams: list[RoomStream], took_s: float
) -> str:
    """The markdown tables for the README."""

    def row(name: str, values: list[float], scale: float = 1.0, fmt: str = "{:.0f}") -> str:
        pts = [(s.t_s, v / scale) for s, v in zip(samples, values, strict=True)]
        vs = [v for _, v in pts]
        cells = [fmt.format(vs[0]), fmt.format(vs[-1]), fmt.format(max(vs))] if vs else ["-"] * 3
        return f"| {name} | {' | '.join(cells)} | {slope_per_min(pts):+.2f} |"

    acked = sum(1 for p in counts.posts if p.status == 200)
    expected = seen = 0
    for s in streams:
        numbers = _expected(counts.posts, s)
        expected += len(numbers)
        seen += s.count(numbers)
    cut = sum(1 for s in streams if s.cut)
    lines = [
        f"Soak: {took_s / 60:.1f} min, {plan.streams} long-lived streams, "
        f"{plan.churn_per_s:g} short streams/s, {plan.posts_per_s:g} posts/s, "
        f"{plan.replies_per_s:g} replies/s, a slow reader every {plan.slow_every_s:g} s; "
        f"{len(samples)} samples, every {plan.sample_every_s:g} s. Reached: "
        f"{len(counts.posts) / plan.seconds:.1f} posts/s, "
        f"{counts.churn_opened / plan.seconds:.1f} short streams/s, "
        f"{counts.replies_posted / plan.seconds:.1f} replies/s.",
        "",
        "| server | first | last | max | slope per minute |",
        "|---|---:|---:|---:|---:|",
        row("RSS (MiB)", [s.rss_kb for s in samples], 1024.0, "{:.1f}"),
        row("open files", [s.open_files for s in samples]),
        row("streams (/healthz)", [s.streams for s in samples]),
        "",
        "| check | result |",
        "|---|---|",
        f"| room posts answered 200 | {acked} of {len(counts.posts)} |",
        f"| deliveries to long-lived streams (seen / expected) | {seen} / {expected} |",
        f"| lost | {expected - seen} |",
        f"| duplicates | {sum(s.duplicates for s in streams)} |",
        f"| long-lived streams cut | {cut} of {len(streams)} |",
        f"| short streams opened (failed) | {counts.churn_opened} ({counts.churn_failed}) |",
        f"| conversation replies done / posted | {counts.replies_done} / {counts.replies_posted} |",
        f"| slow readers cut by the server (KiB it got in all) | {counts.slow_cut} of "
        f"{counts.slow_cycles} ({', '.join(map(str, counts.slow_drained_kib)) or '-'}) |",
        f"| its companion's replies done / posted | "
        f"{counts.slow_companion_done} / {counts.slow_companion_posted} |",
        f"| failures | {len(counts.failures)} |",
    ]
    return "\n".join(lines)


def _check(counts: Counts, streams: list[RoomStream]) -> None:
    for s in streams:
        if s.cut:
            counts.fail(f"long-lived stream {s.index} was cut: {s.cut}")
        numbers = _expected(counts.posts, s)
        missing = len(numbers) - s.count(numbers)
        if missing:
            counts.fail(f"long-lived stream {s.index} lost {missing} of {len(numbers)} messages")
        if s.duplicates:
            counts.fail(f"long-lived stream {s.index} got {s.duplicates} messages twice")
    if counts.replies_done < counts.replies_posted:
        counts.fail(f"{counts.replies_posted - counts.replies_done} replies never reached done")
    if counts.slow_cycles == 0:
        counts.fail("no slow reader ran")
    if not counts.posts:
        counts.fail("no room post was sent")


async def _all_delivered(posts: list[Posted], streams: list[RoomStream], within_s: float) -> None:
    """Wait until every open long-lived stream has seen every post acknowledged so far."""
    pending = [(s, _expected(posts, s)) for s in streams if not s.cut]
    deadline = time.monotonic() + within_s
    while pending and time.monotonic() < deadline:
        pending = [(s, numbers) for s, numbers in pending if s.count(numbers) < len(numbers)]
        await asyncio.sleep(0.5)


async def soak(address: tuple[str, int], pid: int, plan: Plan) -> tuple[str, list[str]]:
    """Run the plan against the server at `address` (process `pid`); the table and failures."""
    counts = Counts()
    samples: list[Sample] = []
    started = time.monotonic()

    streams = [RoomStream(i) for i in range(plan.streams)]
    opened = [asyncio.Event() for _ in streams]
    readers = []
    for i, (s, ev) in enumerate(zip(streams, opened, strict=True)):
        readers.append(asyncio.create_task(s.run(address, ev)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # in waves, so the accept queue never overflows
    async with asyncio.timeout(30.0):
        for ev in opened:
            await ev.wait()
    # The samples start once the long-lived streams are open: the slopes measure the run, not
    # the ramp up to it.
    sampling_done = asyncio.Event()
    sampling = asyncio.create_task(sampler(address, pid, plan, samples, sampling_done))

    until = time.monotonic() + plan.seconds
    load = [
        posters(address, plan, counts, until),
        churn(address, plan, counts, until),
        *(
            conversation_worker(address, plan, counts, until, i)
            for i in range(plan.conversation_workers)
        ),
        slow_readers(address, plan, counts, until),
    ]
    async with asyncio.timeout(plan.seconds + 120.0):
        await asyncio.gather(*load)
    await _all_delivered(counts.posts, streams, 30.0)
    took_s = time.monotonic() - started
    sampling_done.set()
    await sampling
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    # We closed them: whatever they had not cut on their own is no cut.
    _check(counts, streams)
    return render(plan, samples, counts, streams, took_s), counts.failures


def _start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    log_path = workdir / "server.log"
    argv = [
        sys.executable,
        str(REPO / "server.py"),
        "--host",
        HOST,
        "--port",
        str(port),
        "--db",
        str(workdir / "soak.sqlite3"),
        "--limits",
        "off",
        "--log-level",
        "warning",
    ]
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
    wait_listening(proc, port, 30.0)
    return proc, port, log_path


def _open_files_fit(plan: Plan) -> None:
    need = plan.open_files()
    if need * 2 > MAX_OPEN_FILES:
        raise SystemExit(
            f"the plan holds about {need} sockets; keep it under {MAX_OPEN_FILES // 2}"
        )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(soft, 4 * need + 256), hard, MAX_OPEN_FILES)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # the server inherits it
    if want < 2 * need:
        raise SystemExit(f"RLIMIT_NOFILE is {want}; the soak needs about {2 * need}")


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, start the server, soak it, print the table; 1 if a check failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, default=None, help="how long (default: 10)")
    length.add_argument("--seconds", type=float, default=None, help="how long, in seconds")
    parser.add_argument("--streams", type=int, default=Plan.streams)
    parser.add_argument("--churn-per-s", type=float, default=Plan.churn_per_s)
    parser.add_argument("--posts-per-s", type=float, default=Plan.posts_per_s)
    parser.add_argument("--replies-per-s", type=float, default=Plan.replies_per_s)
    parser.add_argument("--slow-every-s", type=float, default=Plan.slow_every_s)
    parser.add_argument("--sample-every-s", type=float, default=Plan.sample_every_s)
    args = parser.parse_args(argv)
    if args.seconds is not None:
        seconds = args.seconds
    else:
        minutes = (
            args.minutes
            if args.minutes is not None
            else float(os.environ.get("SOAK_MINUTES", "10"))
        )
        seconds = 60.0 * minutes
    plan = Plan(
        seconds=seconds,
        streams=args.streams,
        churn_per_s=args.churn_per_s,
        posts_per_s=args.posts_per_s,
        replies_per_s=args.replies_per_s,
        slow_every_s=args.slow_every_s,
        sample_every_s=args.sample_every_s,
    )
    _open_files_fit(plan)
    with tempfile.TemporaryDirectory(prefix="ssechat-soak-") as tmp:
        proc, port, log_path = _start_server(Path(tmp))
        try:
            try:
                table, failures = asyncio.run(soak((HOST, port), proc.pid, plan))
            except (OSError, TimeoutError, EOFError, h11.RemoteProtocolError) as exc:
                table, failures = "", [f"the soak broke off: {type(exc).__name__}: {exc}"]
            if proc.poll() is not None:
                failures.append(f"the server exited with {proc.returncode}")
        finally:
            stop(proc)
        log = log_path.read_text(errors="replace")
    bad = [line for line in log.splitlines() if "ERROR" in line or "Traceback" in line]
    failures.extend(f"server log: {line}" for line in bad[:20])
    if failures and not table:
        failures.extend(f"server log: {line}" for line in log.splitlines()[-20:])
    print(table)
    if failures:
        print(f"\nFAILED: {len(failures)} problem(s)", file=sys.stderr)
        for what in failures[:50]:
            print(f"- {what}", file=sys.stderr)
        return 1
    print("\nOK: no message lost, every reply done, the slow reader cut, nothing failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
