"""Readiness over real sockets: /readyz follows Redis and PostgreSQL down and up, fails draining."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import h11

from sse.io.server import Server
from tests.support.client import Connection, EventStream, json_object, request, wait_until
from tests.support.postgres_server import PostgresServer
from tests.support.redis_server import RedisServer
from tests.support.servers import MakeServer


async def _readyz(server: Server) -> tuple[int, dict[str, object]]:
    response = await request(server.address, "GET", "/readyz")
    assert response.headers["cache-control"] == "no-store"
    return response.status, json_object(response)


async def test_readyz_is_503_with_a_reason_while_redis_is_down_and_200_again_after(
    make_server: MakeServer, redis_server: RedisServer
) -> None:
    server = await make_server(redis_url=redis_server.url)
    assert await _readyz(server) == (200, {"status": "ready"})
    redis_server.stop()

    async def not_ready() -> bool:
        return (await _readyz(server))[0] == 503

    await wait_until(not_ready, timeout=10, what="/readyz to fail with Redis stopped")
    _, body = await _readyz(server)
    assert body["status"] == "not ready"
    reasons = body["reasons"]
    assert isinstance(reasons, list)
    assert len(reasons) == 1
    assert str(reasons[0]).startswith("redis: ")
    # Liveness is not readiness: the process itself is fine, and says what is wrong.
    health = await request(server.address, "GET", "/healthz")
    assert health.status == 200
    body = json_object(health)
    assert body["status"] == "degraded"
    assert body["causes"] == ["redis: down (events are not carried between nodes)"]
    redis_server.start()

    async def ready() -> bool:
        return (await _readyz(server))[0] == 200

    await wait_until(ready, timeout=10, what="/readyz to pass with Redis back")


async def test_readyz_with_sqlite_and_no_broker_is_ready(make_server: MakeServer) -> None:
    server = await make_server()
    assert await _readyz(server) == (200, {"status": "ready"})


async def test_readyz_runs_a_query_on_postgresql(
    make_server: MakeServer, postgres_url: str
) -> None:
    server = await make_server(db_url=postgres_url)
    assert await _readyz(server) == (200, {"status": "ready"})


async def test_readyz_is_503_when_the_sqlite_file_is_gone_and_200_when_it_is_back(
    make_server: MakeServer, tmp_path: Path
) -> None:
    path = tmp_path / "chat.sqlite3"
    server = await make_server(db_path=path)
    assert await _readyz(server) == (200, {"status": "ready"})
    aside = tmp_path / "aside.sqlite3"
    path.rename(aside)

    async def not_ready() -> bool:
        return (await _readyz(server))[0] == 503

    await wait_until(not_ready, timeout=10, what="/readyz to fail without the file")
    _, body = await _readyz(server)
    reasons = body["reasons"]
    assert isinstance(reasons, list)
    assert len(reasons) == 1
    assert str(reasons[0]).startswith("database: ")
    assert "chat.sqlite3" in str(reasons[0])
    aside.rename(path)

    async def ready() -> bool:
        return (await _readyz(server))[0] == 200

    await wait_until(ready, timeout=10, what="/readyz to pass with the file back")


async def test_readyz_is_answered_past_the_connection_cap_then_closes(
    make_server: MakeServer,
) -> None:
    server = await make_server(max_connections=1)
    held = await EventStream.open(server.address)
    await wait_until(lambda: len(server.streams) == 1)
    response = await request(server.address, "GET", "/readyz")
    assert response.status == 200
    assert response.headers["connection"] == "close"
    assert json_object(response) == {"status": "ready"}
    await held.close()


async def test_readyz_is_503_while_the_server_drains(make_server: MakeServer) -> None:
    server = await make_server()
    conn = await Connection.open(server.address)
    # Half a request: the draining server waits for it instead of closing the connection.
    conn.writer.write(b"GET /readyz HTTP/1.1\r\n")
    await conn.writer.drain()
    # Once the server has read those bytes, shutting down waits for the rest.
    await wait_until(
        lambda: [getattr(c, "_got_bytes", False) for c in server.connections] == [True]
    )
    stopping = asyncio.create_task(server.stop())
    await wait_until(lambda: server.draining)
    # h11 on the client side must know what was sent: feed it the same request.
    conn.h11.send(h11.Request(method="GET", target="/readyz", headers=[("host", "x")]))
    conn.h11.send(h11.EndOfMessage())
    conn.writer.write(b"host: x\r\n\r\n")
    await conn.writer.drain()
    response = await conn.read_response()
    assert response.status == 503
    assert json_object(response) == {"status": "not ready", "reasons": ["draining for shutdown"]}
    assert response.headers["connection"] == "close"
    await conn.close()
    await stopping


async def test_readyz_is_503_while_postgresql_is_down_and_200_again_after(
    make_server: MakeServer,
) -> None:
    # A cluster of its own: stopping the session's would fail every other test using it.
    postgres = PostgresServer()
    try:
        with postgres.database() as url:
            server = await make_server(db_url=url)
            assert await _readyz(server) == (200, {"status": "ready"})
            assert postgres.proc is not None
            # A "fast" shutdown (SIGINT): it ends the server's open connections, which a
            # "smart" one (SIGTERM) would wait for.
            postgres.proc.send_signal(signal.SIGINT)
            postgres.proc.wait(30)

            async def not_ready() -> bool:
                return (await _readyz(server))[0] == 503

            await wait_until(not_ready, timeout=15, what="/readyz to fail with PostgreSQL down")
            _, body = await _readyz(server)
            assert body["status"] == "not ready"
            reasons = body["reasons"]
            assert isinstance(reasons, list)
            assert len(reasons) == 1
            assert str(reasons[0]).startswith("database: ")
            # Liveness stays: /healthz touches no database.
            assert (await request(server.address, "GET", "/healthz")).status == 200
            postgres.start()

            async def ready() -> bool:
                return (await _readyz(server))[0] == 200

            await wait_until(ready, timeout=15, what="/readyz to pass with PostgreSQL back")
    finally:
        postgres.kill()
