"""`pip install .` gives a working `ssechat` command, the page shipped inside the package.

The install tests are marked `network`: they build and install the project into a fresh
virtual environment, and pip fetches the build backend and the dependencies from PyPI
(through its cache, so a second run takes a few seconds of building only). Without PyPI
they fail with pip's own message; deselect them explicitly with `-m "not network"`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.support.client import request
from tests.support.redis_server import RedisServer
from tests.support.servers import ROOT, ServerProcess

_PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
_PIP_TIMEOUT_S = 300
_PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)")


def _pins(path: Path) -> dict[str, str]:
    """`name[extras]` -> version for each `name==version` line of a requirements file."""
    pins = {}
    for line in path.read_text().splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_declared_dependencies_admit_exactly_the_pinned_runtime() -> None:
    pins = _pins(ROOT / "requirements.txt")
    declared = {}
    for spec in _PYPROJECT["project"]["dependencies"]:
        req = Requirement(spec)
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        declared[f"{req.name.lower()}{extras}"] = req
    assert declared.keys() == pins.keys()
    outside = [f"{name}=={pins[name]} not in {req}" for name, req in declared.items()
               if not req.specifier.contains(pins[name])]  # fmt: skip
    assert not outside, outside


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the project installed by `pip install <repo>`; its bin folder."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # Constrained to the versions every other test runs (the ranges are checked above).
    lock = ROOT / "requirements-lock.txt"
    argv = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
            "--disable-pip-version-check", str(ROOT), "-c", str(lock)]  # fmt: skip
    pip = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=_PIP_TIMEOUT_S,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    assert pip.returncode == 0, f"pip install failed (needs PyPI):\n{pip.stdout}{pip.stderr}"
    return venv / "bin"


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=cwd, check=True)


@pytest.mark.network
@pytest.mark.timeout(_PIP_TIMEOUT_S + 60)
def test_installed_command_answers_help_and_version(installed: Path, tmp_path: Path) -> None:
    ssechat = str(installed / "ssechat")
    helped = _run(ssechat, "--help", cwd=tmp_path)
    assert helped.stdout.startswith("usage: ssechat ")
    assert "--workers" in helped.stdout
    version = _run(ssechat, "--version", cwd=tmp_path)
    assert version.stdout == f"ssechat {_PYPROJECT['project']['version']}\n"


@pytest.mark.network
@pytest.mark.timeout(_PIP_TIMEOUT_S + 60)
def test_installed_package_finds_its_own_copy_of_the_page(installed: Path, tmp_path: Path) -> None:
    found = _run(
        str(installed / "python"), "-c", "import sse.config; print(sse.config.CLIENT_DIR)",
        cwd=tmp_path,
    )  # fmt: skip
    client = Path(found.stdout.strip())
    assert client.parent.name == "sse"
    assert client.is_relative_to(installed.parent)
    assert (client / "index.html").read_bytes() == (ROOT / "client" / "index.html").read_bytes()


@pytest.mark.network
@pytest.mark.timeout(_PIP_TIMEOUT_S + 60)
async def test_installed_command_serves_the_page_and_health(
    installed: Path, tmp_path: Path
) -> None:
    proc = await asyncio.to_thread(
        ServerProcess,
        "--port", "0", "--db", str(tmp_path / "chat.sqlite3"),
        command=[str(installed / "ssechat")], cwd=tmp_path,
    )  # fmt: skip
    try:
        page = await request(proc.address, "GET", "/")
        assert page.status == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.body == (ROOT / "client" / "index.html").read_bytes()
        # The vendored libraries come along (client/vendor/, make vendor).
        library = await request(proc.address, "GET", "/vendor/markdown-it.mjs")
        assert library.status == 200
        assert library.body == (ROOT / "client" / "vendor" / "markdown-it.mjs").read_bytes()
        health = await request(proc.address, "GET", "/healthz")
        assert health.status == 200
        assert json.loads(health.body)["status"] == "ok"
    finally:
        assert await asyncio.to_thread(proc.terminate) == 0
    assert "stopped" in proc.log


@pytest.mark.network
@pytest.mark.timeout(_PIP_TIMEOUT_S + 60)
async def test_installed_command_runs_workers(
    installed: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    # Started inside the checkout: the workers must still run the installed copy (-P).
    proc = await asyncio.to_thread(
        ServerProcess,
        "--port", "0", "--workers", "2", "--redis-url", redis_server.url,
        "--shutdown-timeout", "2", "--db", str(tmp_path / "chat.sqlite3"),
        command=[str(installed / "ssechat")], cwd=ROOT,
    )  # fmt: skip
    try:
        await asyncio.to_thread(proc.wait_for_log, "(2 workers)", 15)
        health = await request(proc.address, "GET", "/healthz")
        assert health.status == 200
        page = await request(proc.address, "GET", "/")
        assert page.status == 200
    finally:
        assert await asyncio.to_thread(proc.terminate) == 0
    assert proc.log.count("started: pid") == 2
