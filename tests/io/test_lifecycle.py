"""Slow clients, graceful shutdown and the command line, over real sockets and processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from sse.cli import build_parser
from sse.io.server import Server
from tests.support.client import Connection, EventStream, post_message, request, wait_until
from tests.support.servers import ROOT, MakeServer, ServerProcess

Spawn = Callable[..., ServerProcess]


async def _never_reading_stream(address: tuple[str, int]) -> socket.socket:
    """A stream whose client sends its request and then never reads again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, address)
    sock.send(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


async def test_client_that_never_reads_is_dropped_while_others_keep_receiving(
    make_server: MakeServer,
) -> None:
    server = await make_server(join_announcement=False, backlog_limit_bytes=64 * 1024)
    fast = await EventStream.open(server.address)
    slow = await _never_reading_stream(server.address)
    await wait_until(lambda: len(server.streams) == 2, what="both streams open")
    payload = "x" * 16_000
    sent = 0
    # Bounded: 2,000 x 16 kB is far more than the kernel buffers plus the backlog.
    while len(server.streams) == 2 and sent < 2000:
        response = await post_message(server.address, f"{sent} {payload}")
        assert response.status == 200
        event = await fast.next_event()
        assert event.data == f"{sent} {payload}"
        sent += 1
    assert len(server.streams) == 1, f"slow stream still open after {sent} messages"
    # The fast client goes on as before.
    await post_message(server.address, "after")
    assert (await fast.next_event()).data == "after"
    slow.close()
    await fast.close()


async def test_backlog_of_a_stopped_reader_stays_bounded(make_server: MakeServer) -> None:
    # No flush pacing: each publish below is flushed on the next loop iteration.
    server = await make_server(
        join_announcement=False, backlog_limit_bytes=64 * 1024, max_flush_delay_s=0
    )
    slow = await _never_reading_stream(server.address)
    await wait_until(lambda: len(server.streams) == 1)
    (stream,) = server.streams.values()
    transport = stream._transport
    biggest = 0
    for i in range(2000):
        server.hub.publish("room", f"{i} " + "y" * 8000)
        if not server.streams:
            break
        biggest = max(biggest, transport.get_write_buffer_size() + stream._pending_bytes)
        await asyncio.sleep(0)  # let the loop flush to the kernel, as between requests
    assert not server.streams
    assert biggest <= server.config.backlog_limit_bytes
    slow.close()


async def test_replay_larger_than_the_backlog_is_sent_under_flow_control(
    make_server: MakeServer,
) -> None:
    server = await make_server(
        join_announcement=False, backlog_limit_bytes=16 * 1024, history_size=500
    )
    start = server.hub.last_id("room")
    for i in range(300):
        server.hub.publish("room", f"{i} " + "z" * 1000)
    stream = await EventStream.open(server.address, headers=[("last-event-id", start)])
    events = await stream.events(300, timeout=20)
    assert [e.data.split(" ", 1)[0] for e in events] == [str(i) for i in range(300)]
    await stream.close()


async def test_graceful_shutdown_ends_streams_finishes_requests_and_exits_zero(
    spawn: Spawn,
) -> None:
    proc = spawn("--retry-ms", "1000", "--retry-jitter-ms", "500")
    address = proc.address
    stream = await EventStream.open(address)
    await stream.next_event()
    idle = await Connection.open(address)
    busy = await Connection.open(address)
    body = json.dumps({"message": "in flight"}).encode()
    busy.writer.write(
        b"POST /send-message HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    await busy.writer.drain()

    async def connected() -> bool:
        health = (await request(address, "GET", "/healthz")).json()
        assert isinstance(health, dict)
        return health["connections"] == 4  # stream, idle, busy and this one

    await wait_until(connected, what="all connections accepted")
    proc.proc.terminate()
    await asyncio.to_thread(proc.wait_for_log, "shutting down")
    # The stream is ended cleanly: a jittered retry, then the final chunk.
    await stream.wait_ended()
    assert stream.decoder.retry_ms is not None
    assert 1000 <= stream.decoder.retry_ms <= 1500
    assert bytes(stream.raw).endswith(b"\n")
    # The idle keep-alive connection is closed.
    assert await asyncio.wait_for(idle.reader.read(), 5) == b""
    # The request in flight is answered, then its connection closed.
    busy.writer.write(body)
    h11_response = await busy.read_response()
    assert h11_response.status == 200
    assert h11_response.headers["connection"] == "close"
    assert await asyncio.to_thread(proc.terminate) == 0
    assert "stopped" in proc.log
    for conn in (idle, busy):
        await conn.close()
    await stream.close()


def test_help_explains_every_option() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    parser = build_parser()
    for action in parser._actions:
        for flag in action.option_strings:
            assert flag in result.stdout
        assert action.help, f"{action.option_strings} has no help text"
    assert "Server-Sent Events" in " ".join(result.stdout.split())


def test_readme_options_table_lists_every_option() -> None:
    # The table is written by hand from --help: this keeps it from going stale.
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| option | default |") : readme.index("## Architecture")]
    listed = set(re.findall(r"^\| `(--[a-z-]+)", table, re.MULTILINE))
    flags = {
        max(a.option_strings, key=len)
        for a in build_parser()._actions
        if a.option_strings and a.dest != "help"
    }
    assert listed == flags


def test_port_comes_from_the_environment(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = ServerProcess("--db", str(tmp_path / "chat.sqlite3"), env={"PORT": str(port)})
    try:
        assert proc.address == ("127.0.0.1", port)
    finally:
        assert proc.terminate() == 0


async def test_config_file_and_environment_reach_the_running_server(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    file = tmp_path / "ssechat.toml"
    db = json.dumps(str(tmp_path / "chat.sqlite3"))
    file.write_text(f"port = 1\nmax-body-bytes = 65536\nhistory-size = 7\ndb = {db}\n")
    # The variables beat the file, and SSECHAT_PORT beats the older PORT.
    env = {"SSECHAT_PORT": str(port), "PORT": "2", "SSECHAT_MAX_BODY_BYTES": "64"}
    printed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(ROOT / "server.py"), "--config", str(file), "--print-config"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )
    assert printed.returncode == 0, printed.stderr
    effective = tomllib.loads(printed.stdout)
    assert (effective["port"], effective["max-body-bytes"], effective["history-size"]) == (
        port,
        64,
        7,
    )
    proc = ServerProcess("--config", str(file), env=env)
    try:
        assert proc.address == ("127.0.0.1", port)
        assert (await post_message(proc.address, "hi")).status == 200
        assert (await post_message(proc.address, "x" * 64)).status == 413
    finally:
        assert await asyncio.to_thread(proc.terminate) == 0


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--history-size", "0"], "history_size must be positive"),
        (["--port", "70000"], "port must be 0..65535"),
        (["--max-body-bytes", "-1"], "max_body_bytes must be positive"),
        (["--max-replay-bytes", "0"], "max_replay_bytes must be positive"),
        (
            ["--history-bytes", "2048", "--history-total-bytes", "1024"],
            "must not exceed history_total_bytes",
        ),
    ],
)
def test_impossible_settings_are_refused_with_a_message(args: list[str], complaint: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert complaint in result.stderr


def test_busy_port_exits_one_naming_the_address(spawn: Spawn) -> None:
    first = spawn()
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "server.py"),
            "--port",
            str(first.address[1]),
            "--db",
            ":memory:",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{first.address[1]}" in result.stderr


async def test_in_process_server_stops_with_streams_open(make_server: MakeServer) -> None:
    server: Server = await make_server()
    stream = await EventStream.open(server.address)
    await post_message(server.address, "x")
    await server.stop()
    await stream.wait_ended()
    assert not server.connections
    await stream.close()
