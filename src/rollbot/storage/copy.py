"""`rollbot db copy --to URL`: a one-host SQLite history moved whole into another database,
with its hash chain intact, then verified there.

The source is SQLite by definition (what a one-host desk runs), so its tables, columns and
foreign keys are read with sqlite-utils, in one read snapshot (WAL: the bot and the clock keep
writing meanwhile; what they wrote after the snapshot is reported, not silently dropped). The
target is written only through the Database API (write(), query(), one(), execute()) with
portable SQL, so a SQLite and a PostgreSQL target go through the same code; PostgreSQL's
identity sequences are then moved past the copied ids, so the next event links on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from rollbot.errors import BadInput, StorageError
from rollbot.storage.audit import Verdict, verify
from rollbot.storage.db import Database

ROWS_PER_INSERT = 200
MAX_PARAMS = 900  # under SQLite's oldest limit of 999 bound parameters per statement


@dataclass
class Target:
    db: Database
    url: str
    dialect: str  # "sqlite" | "postgresql"
    path: Path | None = None  # a SQLite target's file


def open_target(url: str, busy_timeout_ms: int = 5000) -> Target:
    """The database a URL names, created and migrated to this version's schema.

    sqlite:///relative/path or sqlite:////absolute/path (SQLAlchemy's form), or
    postgresql://USER@HOST:PORT/DB: the database must exist (an empty one: CREATE DATABASE);
    its password comes from ROLLBOT_DATABASE_PASSWORD or PGPASSWORD, never the URL (a command
    line is visible to every user of the host, and lands in shell histories)."""
    text = url.strip()
    if text.startswith("sqlite:///"):
        raw = text[len("sqlite:///") :]
        if not raw or raw.endswith("/"):
            raise BadInput(f"--to {url!r}: name a database file, e.g. sqlite:////srv/rollbot.db")
        path = Path(raw)
        return Target(Database(path, busy_timeout_ms), text, "sqlite", path)
    if text.startswith(("postgresql://", "postgres://")):
        return Target(_open_postgres(text, busy_timeout_ms), redact_url(text), "postgresql")
    raise BadInput(
        f"--to {redact_url(url)!r} is not a database URL: use sqlite:///PATH or"
        " postgresql://USER@HOST/DB (the password from the environment)"
    )


def _open_postgres(url: str, busy_timeout_ms: int) -> Database:
    from urllib.parse import parse_qs, urlsplit

    try:
        parts = urlsplit(url)
        password = parts.password is not None or "password" in parse_qs(parts.query)
        database = parts.path.strip("/")
    except ValueError as exc:
        raise BadInput(f"--to {redact_url(url)!r} is not a valid PostgreSQL URL ({exc})") from None
    if password:
        raise BadInput(
            f"--to {redact_url(url)!r}: a password in the URL is refused (it would show in the"
            " process list and shell history). Put it in ROLLBOT_DATABASE_PASSWORD or"
            " PGPASSWORD. Nothing was copied."
        )
    if not database:
        raise BadInput(
            f"--to {redact_url(url)!r} names no database: postgresql://USER@HOST:PORT/DATABASE"
        )
    from rollbot.storage.postgres import PostgresDatabase

    # created=True: an empty database gets this version's schema (the migrations) first
    return cast("Database", PostgresDatabase(url, busy_timeout_ms))


def redact_url(url: str) -> str:
    """A password typed into a URL is never echoed (secrets come from the environment)."""
    if "password=" in url:
        url = re.sub(r"password=[^&]*", "password=***", url)
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if sep and at and ":" in creds:
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


@dataclass
class Copied:
    tables: dict[str, int] = field(default_factory=dict)
    verdict: Verdict | None = None
    source_moved_on: int = 0  # events the source took after the snapshot: not in the target


@dataclass(frozen=True)
class Table:
    name: str
    columns: list[str]
    parents: set[str]  # tables its foreign keys point at
    self_refs: list[str]  # its columns that point at its own rows (written after all rows)


def _tables(source: Database) -> list[Table]:
    """Every table of the source, parents before children (foreign keys)."""
    utils = source.utils
    found = {}
    for name in utils.table_names():
        if name.startswith("sqlite_"):
            continue
        table = utils[name]
        fks = table.foreign_keys
        found[name] = Table(
            name,
            [c.name for c in table.columns],
            {fk.other_table for fk in fks if fk.other_table != name},
            [fk.column for fk in fks if fk.other_table == name],
        )
    ordered: list[Table] = []
    placed: set[str] = set()
    while len(ordered) < len(found):
        ready = sorted(n for n, t in found.items() if n not in placed and t.parents <= placed | {n})
        if not ready:  # a cycle between tables: rollbot's schema has none
            raise StorageError(f"tables {sorted(set(found) - placed)} refer to each other")
        for n in ready:
            ordered.append(found[n])
            placed.add(n)
    return ordered


@contextmanager
def _snapshot(source: Database) -> Iterator[None]:
    """One read transaction on the source: every table as of one moment."""
    with source._lock:
        source.conn.execute("BEGIN")
        try:
            yield
        finally:
            source.conn.execute("COMMIT")


def _rows(source: Database, table: Table) -> Iterator[list[Any]]:
    cols = ", ".join(table.columns)
    cursor = source.conn.execute(f"SELECT {cols} FROM {table.name} ORDER BY rowid")
    while batch := cursor.fetchmany(1000):
        yield from (list(r) for r in batch)


def _insert(target: Database, table: Table, rows: list[list[Any]]) -> None:
    cols = ", ".join(table.columns)
    one = "(" + ", ".join("?" * len(table.columns)) + ")"
    sql = f"INSERT INTO {table.name} ({cols}) VALUES " + ", ".join([one] * len(rows))
    target.execute(sql, tuple(v for row in rows for v in row))


def _empty(target: Database, tables: list[Table]) -> None:
    for table in tables:
        if target.one(f"SELECT 1 AS x FROM {table.name} LIMIT 1") is not None:
            raise BadInput(
                f"the target is not empty (table {table.name} has rows): db copy writes only"
                " into a new, empty database. Nothing was copied."
            )


def copy_database(
    source: Database, target: Target, progress: Callable[[str, int], None] | None = None
) -> Copied:
    """Every row of every table, in one write transaction on the target (all or nothing),
    then the target's chain verified from its first event."""
    if target.path is not None and target.path.resolve() == source.path.resolve():
        raise BadInput("--to names the source database itself. Nothing was copied.")
    tables = _tables(source)
    _empty(target.db, tables)
    copied = Copied()
    with _snapshot(source):
        head = source.conn.execute("SELECT MAX(seq) FROM events").fetchone()[0] or 0
        with target.db.write():
            for table in tables:
                per = max(1, min(ROWS_PER_INSERT, MAX_PARAMS // len(table.columns)))
                late: list[tuple[Any, list[Any]]] = []
                count, batch = 0, []
                refs = [table.columns.index(c) for c in table.self_refs]
                for row in _rows(source, table):
                    if target.dialect == "postgresql":
                        _storable_on_postgresql(table, row)
                    if refs and any(row[i] is not None for i in refs):
                        # points at its own table's rows, maybe later ones: set once all are in
                        late.append((row[table.columns.index("id")], [row[i] for i in refs]))
                        for i in refs:
                            row[i] = None
                    batch.append(row)
                    if len(batch) == per:
                        _insert(target.db, table, batch)
                        count, batch = count + len(batch), []
                if batch:
                    _insert(target.db, table, batch)
                    count += len(batch)
                for row_id, values in late:
                    sets = ", ".join(f"{c} = ?" for c in table.self_refs)
                    target.db.execute(
                        f"UPDATE {table.name} SET {sets} WHERE id = ?", (*values, row_id)
                    )
                copied.tables[table.name] = count
                if progress:
                    progress(table.name, count)
            if target.dialect == "postgresql":
                _advance_sequences(target.db, tables)
    now = source.one("SELECT MAX(seq) AS n FROM events")
    copied.source_moved_on = int((now or {}).get("n") or 0) - int(head)
    copied.verdict = verify(target.db)
    return copied


def _storable_on_postgresql(table: Table, row: list[Any]) -> None:
    """PostgreSQL text cannot hold a NUL character, which SQLite text can: such a row is named
    and nothing is copied (stored otherwise, the hash chain over it would no longer verify)."""
    for column, value in zip(table.columns, row, strict=True):
        if isinstance(value, str) and "\x00" in value:
            raise BadInput(
                f"table {table.name}, row {table.columns[0]} = {row[0]!r}: column {column} holds"
                " a NUL character, which PostgreSQL text cannot store. Nothing was copied; the"
                " SQLite database is unchanged and stays the desk's database."
            )


def _advance_sequences(target: Database, tables: list[Table]) -> None:
    """Rows came with their ids: PostgreSQL's identity sequences must start after them, or the
    next event (or hold, timer, outbox row) would be refused as a duplicate id. SQLite's
    AUTOINCREMENT follows by itself. Only identity columns have a sequence: incidents,
    approvals and the like are keyed by text."""
    copied = {t.name for t in tables if "id" in t.columns}
    identity = target.query(
        "SELECT table_name FROM information_schema.columns WHERE table_schema ="
        " current_schema() AND column_name = 'id' AND is_identity = 'YES'"
    )
    for name in sorted({r["table_name"] for r in identity} & copied):
        target.execute(
            f"SELECT setval(pg_get_serial_sequence('{name}', 'id'),"
            f" COALESCE((SELECT MAX(id) FROM {name}), 0) + 1, false)"
        )
