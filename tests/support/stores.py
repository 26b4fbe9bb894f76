"""Stores of one kind on one real database, for the store tests of tests/chat/."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from sse.chat.store.base import Store
from sse.chat.store.postgres import PostgresStore
from sse.chat.store.sqlite import SqliteStore

__all__ = ["Backend"]


@dataclass
class Backend:
    """Stores of one kind on one database (a SQLite file, or a fresh PostgreSQL database)."""

    kind: str
    target: str  # the file, or the URL
    stores: list[Store]

    def make(self, **options: Any) -> Store:
        """A new store (a new node) on the test's database; closed after the test."""
        store: Store
        if self.kind == "sqlite":
            store = SqliteStore(Path(self.target), **options)
        else:
            store = PostgresStore(self.target, **options)
        self.stores.append(store)
        return store

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Run `sql` on the database directly, around the stores; the rows it returns."""
        if self.kind == "sqlite":
            db = sqlite3.connect(self.target, isolation_level=None)  # autocommit
            try:
                return [tuple(row) for row in db.execute(sql)]
            finally:
                db.close()
        conn = await asyncpg.connect(self.target)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()
