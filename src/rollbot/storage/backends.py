"""Which database a config names: a SQLite file (storage/db.py) or PostgreSQL
(storage/postgres.py). Both give the same API, so nothing above storage/ asks which."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from rollbot.storage.db import Database

if TYPE_CHECKING:
    from rollbot.storage.postgres import PostgresDatabase


class DatabaseSettings(Protocol):  # config.DatabaseConfig, without importing pydantic here
    path: Path
    url: str | None
    busy_timeout_ms: int


def open_database(
    settings: DatabaseSettings, *, create: bool = True
) -> Database | PostgresDatabase:
    """`create=False` for readers of state: a missing or schema-less database is
    StateUnavailable, never a fresh one answering ACTIVE. psycopg is imported only for
    PostgreSQL: a SQLite kill never pays for it."""
    if settings.url is None:
        return Database(settings.path, settings.busy_timeout_ms, create=create)
    from rollbot.storage.postgres import PostgresDatabase

    return PostgresDatabase(settings.url, settings.busy_timeout_ms, create=create)
