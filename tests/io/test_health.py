"""Honest health: /healthz past the connection cap, and a failing store over real sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sqlite3
from collections.abc import Mapping
from pathlib import Path

import asyncpg
import pytest
from websockets.asyncio.client import connect

from sse.app.router import App
from sse.app.values import OpenSocket, OpenStream, Reply, Request, Route
from sse.chat.store.sqlite import SqliteStore
from sse.config import Config
from sse.errors import StoreUnavailable
from sse.io.server import Server
from tests.support.client import EventStream, cookie_headers, json_object, request, wait_until
from tests.support.servers import MakeServer

JSON = [("content-type", "application/json")]


def _sqlite(server: Server) -> SqliteStore:
    store = server.store
    assert isinstance(store, SqliteStore)
    return store


async def _health(server: Server) -> dict[str, object]:
    response = await request(server.address, "GET", "/healthz")
    assert response.status == 200
    return json_object(response)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_healthz_answers_200_past_the_connection_cap_then_closes(
    make_server: MakeServer,
) -> None:
    server = await make_server(max_connections=1)
    held = await EventStream.open(server.address)
    await wait_until(lambda: len(server.streams) == 1)
    health = await request(server.address, "GET", "/healthz")
    assert health.status == 200
    assert health.headers["connection"] == "close"
    assert json_object(health)["status"] == "ok"
    post = await request(server.address, "POST", "/send-message", JSON, b'{"message": "m"}')
    assert post.status == 503
    await held.close()


async def test_a_full_disk_answers_503_with_its_cause_and_health_is_degraded(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server()
    created = await request(server.address, "POST", "/conversations")
    cid = json_object(created)["id"]
    # Fault injection on the live connection: SQLite cannot grow the file past
    # its present size (a limit below it is raised to it), as on a full disk.
    await _sqlite(server)._run(lambda db: db.execute("PRAGMA max_page_count = 1"))
    body = json.dumps({"content": "x" * 20_000}).encode()  # needs new pages
    for _ in range(2):  # the failure released the conversation: a retry is no 409
        posted = await request(server.address, "POST", f"/conversations/{cid}/messages", JSON, body)
        assert posted.status == 503
        assert posted.headers["content-type"] == "application/json"
        assert "database or disk is full" in json_object(posted)["error"]
    health = await _health(server)
    assert health["status"] == "degraded"
    store = health["store"]
    assert isinstance(store, dict)
    assert store["ok"] is False
    assert store["error"] == "database or disk is full"
    assert health["causes"] == ["store: database or disk is full"]
    assert _errors(caplog) == []  # the database's fault, not a bug with a traceback


async def test_deleting_the_database_folder_refuses_writes_and_health_says_why(
    make_server: MakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "data"
    server = await make_server(db_path=folder / "chat.sqlite3")
    created = await request(server.address, "POST", "/conversations")
    cid = json_object(created)["id"]
    assert (await _health(server))["store"] == {"ok": True}
    shutil.rmtree(folder)
    # SQLite would take the write into the unlinked file, lost at the next start.
    refused = await request(server.address, "POST", "/conversations")
    assert refused.status == 503
    assert "was removed while the server runs" in json_object(refused)["error"]
    health = await _health(server)
    assert health["status"] == "degraded"
    store = health["store"]
    assert isinstance(store, dict)
    assert store["ok"] is False
    assert "chat.sqlite3 was removed" in str(store["error"])
    # What the open file holds can still be read.
    assert (await request(server.address, "GET", f"/conversations/{cid}")).status == 200
    await _health(server)
    errors = _errors(caplog)
    assert len(errors) == 1, errors  # once per incident, however often it is seen
    assert "conversations are no longer saved" in errors[0]
    assert "was removed" in errors[0]


async def test_a_replaced_database_file_is_reported(
    make_server: MakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "chat.sqlite3"
    server = await make_server(db_path=path)
    other = tmp_path / "other.sqlite3"
    sqlite3.connect(other).close()
    os.replace(other, path)
    health = await _health(server)
    assert health["status"] == "degraded"
    assert "replaced by another file" in str(health["causes"])
    assert len(_errors(caplog)) == 1


async def test_a_removed_file_is_noticed_without_requests_and_its_return_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "chat.sqlite3"
    store = SqliteStore(path, lease_interval_s=0.05, stale_after_s=0.5)
    await store.open()
    try:
        aside = tmp_path / "aside.sqlite3"
        path.rename(aside)
        await wait_until(lambda: bool(_errors(caplog)), what="an ERROR from the lease timer")
        assert store.health()["ok"] is False
        aside.rename(path)  # the same file back: nothing was lost
        await wait_until(lambda: store.health()["ok"] is True, what="the store to recover")
        await wait_until(
            lambda: any("is back" in r.getMessage() for r in caplog.records), what="the log"
        )
        assert len(_errors(caplog)) == 1
    finally:
        await store.close()


async def test_a_postgresql_that_cannot_write_answers_503_with_its_cause(
    postgres_url: str, make_server: MakeServer
) -> None:
    # postgres_url first: its database is dropped only after the server stopped.
    server = await make_server(db_url=postgres_url)
    assert (await request(server.address, "POST", "/conversations")).status == 201
    name = postgres_url.rsplit("/", 1)[-1]
    admin = await asyncpg.connect(postgres_url)
    try:
        # New sessions cannot write; the pool's present ones are cut, so the
        # next request meets either the cut or a read-only reconnection.
        await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await admin.close()
    for _ in range(2):
        refused = await request(server.address, "POST", "/conversations")
        assert refused.status == 503
        assert json_object(refused)["error"].startswith("the conversations cannot be stored")
    health = await _health(server)
    assert health["status"] == "degraded"
    assert "read-only" in str(health["causes"])


async def test_a_bad_statement_is_our_bug_and_leaves_the_store_healthy(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "chat.sqlite3")
    await store.open()
    try:
        # sqlite3 calls a syntax error an OperationalError too: it must stay a 500.
        with pytest.raises(sqlite3.OperationalError):
            await store._run(lambda db: db.execute("SELEC 1"), write=True)
        assert store.health() == {"ok": True}
    finally:
        await store.close()


async def test_a_full_disk_answers_a_socket_post_with_a_503_error_frame(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server()
    cid = json_object(await request(server.address, "POST", "/conversations"))["id"]
    await _sqlite(server)._run(lambda db: db.execute("PRAGMA max_page_count = 1"))
    host, port = server.address
    async with connect(
        f"ws://{host}:{port}/conversations/{cid}/ws",
        additional_headers=cookie_headers(server.address),
    ) as ws:
        await ws.send(json.dumps({"type": "message", "content": "x" * 20_000}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert answer["type"] == "error"
    assert answer["status"] == 503
    assert "database or disk is full" in answer["error"]
    assert _errors(caplog) == []


async def _failing(req: Request, body: bytes, params: Mapping[str, str]) -> Reply:
    raise StoreUnavailable("disk I/O error")


@pytest.mark.parametrize(
    ("path", "status", "content_type"),
    [("/x/events", 200, "text/event-stream"), ("/x", 503, "application/json")],
)
async def test_a_failing_store_gives_a_stream_a_retry_and_a_request_a_503(
    path: str, status: int, content_type: str
) -> None:
    # An EventSource gives up for good on a 503; a retry brings it back later.
    config = Config(overload_retry_ms=15_000)
    app = App(config, [Route(path, {"GET": _failing})], {}, dict)
    pending = app.handle(Request("GET", path, {}, {}), b"")
    assert not isinstance(pending, Reply | OpenStream | OpenSocket)
    reply = await pending
    assert isinstance(reply, Reply)
    assert (reply.status, reply.content_type) == (status, content_type)
    if status == 200:
        assert reply.body == b"retry: 15000\n"
    else:
        assert json.loads(reply.body) == {
            "error": "the conversations cannot be stored or read now: disk I/O error"
        }
