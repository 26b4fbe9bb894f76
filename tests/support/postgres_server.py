"""A real PostgreSQL (Debian's `postgresql` package) on a free loopback port, for the tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.redis_server import free_port

# Debian keeps the server binaries off PATH, one folder per major version.
_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_SYSTEM_USER = "postgres"
USER = "postgres"


def _bin_dir() -> Path:
    """The newest installed version's bin folder.

    Raises:
        pytest.fail.Exception: the package is not installed (a test never skips).
    """
    found = [p for p in Path("/").glob(_BIN_GLOB.lstrip("/")) if (p / "postgres").exists()]
    if not found:
        pytest.fail(
            f"no PostgreSQL server under {_BIN_GLOB}: these tests need Debian's `postgresql` "
            "package (`make system-deps`, or `apt-get install postgresql`)"
        )
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


class PostgresServer:
    """`postgres` in a temporary folder of its own, trust auth, on 127.0.0.1 only.

    PostgreSQL refuses to run as root, so under root its programs run as the
    `postgres` system user, in a folder that user owns. The folder is made under the
    system's temporary directory, not pytest's: pytest's is private to root,
    so the `postgres` user could not reach it.
    """

    def __init__(self) -> None:
        self._bin = _bin_dir()
        self._as_root = os.geteuid() == 0
        self.folder = Path(tempfile.mkdtemp(prefix="ssechat-pg-"))
        self.data = self.folder / "data"
        self.sockets = self.folder / "sockets"
        self.sockets.mkdir()
        if self._as_root:
            shutil.chown(self.folder, _SYSTEM_USER, _SYSTEM_USER)
            shutil.chown(self.sockets, _SYSTEM_USER, _SYSTEM_USER)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",  # a throwaway cluster: no need to wait for the disk
        )
        self.start()

    def _as_owner(self) -> dict[str, Any]:
        # Popen switches user in the child itself (rather than through runuser),
        # so `self.proc` is the postmaster and our signals reach it directly.
        if not self._as_root:
            return {}
        return {"user": _SYSTEM_USER, "group": _SYSTEM_USER, "extra_groups": []}

    def _run(self, program: str, *args: str) -> str:
        done = subprocess.run(
            [str(self._bin / program), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            cwd=self.folder,
            **self._as_owner(),
        )
        if done.returncode != 0:
            raise AssertionError(f"{program} failed ({done.returncode}):\n{done.stderr}")
        return done.stdout

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        """A postgresql:// URL of `database` (trust auth lets any password through)."""
        user = USER if password is None else f"{USER}:{password}"
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start (again) on the same port and folder; returns once it takes connections."""
        log = open(self.folder / "postgres.log", "ab")  # noqa: SIM115 (the child keeps it)
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.sockets),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        self.proc = subprocess.Popen(
            [
                str(self._bin / "postgres"),
                "-D",
                str(self.data),
                *(arg for k, v in settings.items() for arg in ("-c", f"{k}={v}")),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
            **self._as_owner(),
        )
        log.close()
        deadline = time.monotonic() + 30
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("postgres did not start:\n" + self.log)
            time.sleep(0.05)

    @property
    def log(self) -> str:
        path = self.folder / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _answers(self) -> bool:
        # pg_isready, not a bare TCP connect: the postmaster accepts connections
        # while it is still starting up, and refuses the queries.
        done = subprocess.run(
            [str(self._bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command as the superuser; its unaligned output."""
        done = subprocess.run(
            [
                str(self._bin / "psql"),
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                USER,
                "-d",
                database,
                "-c",
                sql,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"psql {sql!r} failed:\n{done.stderr}")
        return done.stdout

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A new, empty database; its URL. Dropped afterwards, even with clients still on it."""
        name = f"test_{uuid.uuid4().hex}"
        # A linguistic collation (ICU's en-US), as production databases usually
        # have, so that text ordering which holds only under "C" shows up.
        self.psql(
            f"CREATE DATABASE {name} LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C' "
            "TEMPLATE template0"
        )
        try:
            yield self.url(name)
        finally:
            self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        """SIGTERM (a "smart" shutdown); waits until it has exited."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.proc = None

    def kill(self) -> None:
        """Stop it at once ("immediate" shutdown) and remove its folder."""
        if self.proc is not None and self.proc.poll() is None:
            # SIGQUIT, not SIGKILL: the postmaster then ends its own children too.
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        shutil.rmtree(self.folder, ignore_errors=True)
