"""What both PostgreSQL clients share: storage/postgres.py (psycopg, every process) and
storage/libpq.py (libpq itself, the break-glass kill's one transaction, which must not pay
for psycopg's import nor for postgres.py's). Standard library only, and little of it."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

# pg_advisory_xact_lock's key for "a rollbot write is in progress" (b"rollbot\0" as an int64):
# advisory locks are per database, so two rollbot databases on one server never share it
WRITE_LOCK = 0x726F6C6C626F7400
PASSWORD_ENV = "ROLLBOT_DATABASE_PASSWORD"
CONNECT_TIMEOUT_S = 5

TOKENS = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|\?|%|:[A-Za-z_]\w*""")
INDEXED_BY = re.compile(r"\s+INDEXED\s+BY\s+\w+", re.IGNORECASE)
INSERT_INTO = re.compile(r"^\s*INSERT\s+(?:OR\s+\w+\s+)?INTO\s+(\w+)", re.IGNORECASE)
RETURNING = re.compile(r"\bRETURNING\b", re.IGNORECASE)


def connect_options() -> dict[str, str | int]:
    """libpq's connection options besides the URL, the same for psycopg and storage/libpq.py."""
    options: dict[str, str | int] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": "rollbot",
        # a server gone silent (a host lost, a partition) fails a statement within about 10 s
        # instead of hanging the process; libpq ignores these on a Unix socket
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": 10_000,
    }
    if os.environ.get(PASSWORD_ENV):  # never in the URL or the TOML (config.py refuses it)
        options["password"] = os.environ[PASSWORD_ENV]
    return options


def positional(sql: str) -> str:
    """SQLite's `?` placeholders to PostgreSQL's own `$1, $2, ...`, outside quotes and comments,
    the rest as written: what the server reads with no client-side parsing (libpq's
    PQexecParams, psycopg's RawCursor)."""
    n = 0

    def token(m: re.Match[str]) -> str:
        nonlocal n
        if m.group(0) != "?":
            return m.group(0)
        n += 1
        return f"${n}"

    return TOKENS.sub(token, sql)


def with_returning_id(sql: str, identity: frozenset[str] | set[str]) -> tuple[str, str | None]:
    """(the SQL, the table) with ` RETURNING id` added when it INSERTs into a table with an
    identity id and returns nothing itself: sqlite3's `lastrowid`, which PostgreSQL lacks.
    The table is None when nothing was added."""
    m = INSERT_INTO.match(sql)
    if m and m.group(1).lower() in identity and not RETURNING.search(sql):
        return sql + " RETURNING id", m.group(1)
    return sql, None


def begin_write(busy_timeout_ms: int) -> str:
    """A write transaction's start, in one round trip (a kill pays it once before its first
    row): BEGIN, how long to wait for another writer, the writers' lock."""
    return (
        f"BEGIN; SET LOCAL lock_timeout = {max(1, int(busy_timeout_ms))};"
        f" SELECT pg_advisory_xact_lock({WRITE_LOCK})"
    )


class Result:
    """What a statement returned, read at once: `rowcount`, `lastrowid` (the id an INSERT gave
    its row, as sqlite3's cursor has it), and the rows, if any."""

    def __init__(self, rowcount: int, rows: list[dict[str, Any]], lastrowid: int | None) -> None:
        self.rowcount = rowcount
        self.lastrowid = lastrowid
        self._rows = rows
        self._next = 0

    def fetchone(self) -> Any:
        if self._next >= len(self._rows):
            return None
        row = self._rows[self._next]
        self._next += 1
        return _Row(row)

    def fetchall(self) -> list[Any]:
        rows = [_Row(r) for r in self._rows[self._next :]]
        self._next = len(self._rows)
        return rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class _Row(dict):  # type: ignore[type-arg]
    """A row both ways, like sqlite3.Row: row["id"] and row[0]; unpacks as a tuple."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return iter(list(self.values()))

    def keys(self) -> Any:
        return super().keys()
