"""Fixtures: servers on 127.0.0.1:0, in this process or as `python server.py`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from sse.config import Config
from sse.io.server import Server
from tests.support.client import forget_cookies
from tests.support.postgres_server import PostgresServer
from tests.support.redis_server import RedisServer
from tests.support.servers import CHROMIUM, CHROMIUM_ARGS, MakeServer, ServerProcess


@pytest.fixture(autouse=True)
def _no_cookies_from_other_tests() -> None:
    """Each test is a new person: the test client's cookie jars start empty."""
    forget_cookies()


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[MakeServer]:
    """Start in-process servers with `Config` overrides; all are stopped afterwards."""
    servers: list[Server] = []

    async def make(**overrides: Any) -> Server:
        settings: dict[str, Any] = {
            "port": 0,
            "shutdown_timeout_s": 2.0,
            "db_path": tmp_path / f"chat{len(servers)}.sqlite3",
            "echo_delay_s": 0.005,
            # One key for the test's servers, as nodes share one; kept out of the checkout.
            "session_secret_file": tmp_path / "session.secret",
            # One address makes every request here: the limits have tests of their own.
            "limits": "off",
        }
        settings.update(overrides)
        server = Server(Config(**settings))
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def server(make_server: MakeServer) -> Server:
    """A server on the embedded defaults, on a free port."""
    return await make_server()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start `python server.py` child processes on free ports; killed afterwards.

    Each gets its own database in the test's temporary folder unless `--db` is given.
    """
    procs: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        db = [] if "--db" in args else ["--db", str(tmp_path / f"chat{len(procs)}.sqlite3")]
        if "--session-secret-file" not in args and "--session-secret" not in args:
            db += ["--session-secret-file", str(tmp_path / "session.secret")]
        if "--limits" not in args:
            db += ["--limits", "off"]
        proc = ServerProcess("--port", "0", *db, *args, env=env)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, for every browser test module; never skipped."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: the browser tests need Debian's `chromium` package "
            "(`make system-deps`, or `apt-get install chromium`)"
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


OpenPage = Callable[..., Page]


@contextlib.contextmanager
def page_opener(browser: Browser, default_url: str) -> Iterator[OpenPage]:
    """Open pages in fresh contexts (`default_url` unless told); fail on uncaught JS errors."""
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    def open_(url: str | None = None, **context_options: Any) -> Page:
        context = browser.new_context(**context_options)
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
        page.goto(url or default_url)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert errors == [], "uncaught errors in the page"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh `redis-server` on a free port; fails (never skips) when it is not installed."""
    redis = RedisServer(tmp_path / "redis")
    yield redis
    redis.kill()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the whole session; fails (never skips) when it is not installed."""
    postgres = PostgresServer()
    yield postgres
    postgres.kill()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database on the session's PostgreSQL, dropped afterwards."""
    with postgres_server.database() as url:
        yield url
