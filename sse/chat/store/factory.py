"""The conversation store the configuration asks for."""

from __future__ import annotations

from sse.chat.store.base import Store
from sse.chat.store.postgres import PostgresStore
from sse.chat.store.sqlite import SqliteStore
from sse.config import Config

__all__ = ["build_store"]


def build_store(config: Config) -> Store:
    """PostgreSQL when `config.db_url` is set, else the SQLite file `config.db_path`."""
    if config.db_url is not None:
        return PostgresStore(config.db_url)
    return SqliteStore(config.db_path)
