"""The `backend` fixture of the store tests: each test on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.stores import Backend


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        target = str(tmp_path / "chat.sqlite3")
    else:
        target = request.getfixturevalue("postgres_url")
    found = Backend(request.param, target, [])
    yield found
    for store in found.stores:
        await store.close()
