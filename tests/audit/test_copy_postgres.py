"""Moving up: `rollbot db copy --to postgresql://...` through the real CLI moves a one-host
SQLite history (thousands of events) into an empty PostgreSQL database, row for row, its chain
verified there; the desk then runs on PostgreSQL and new events link onto the copied chain.
The password comes from the environment and is never echoed; a non-empty target is refused."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fakes.history import build_history
from pg_server import PgServer

from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.config import DatabaseConfig, Settings
from rollbot.storage.events import Actor

SECRET = "s3cret-Pw-77"


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def backend() -> str:
    """The source is a one-host SQLite file; the target is the session's PostgreSQL."""
    return "sqlite"


@pytest.fixture
def empty_pg(pg_server: PgServer) -> Iterator[str]:
    url = pg_server.new_database(migrated=False)  # CREATE DATABASE, nothing in it
    yield url
    pg_server.drop_database(url)


def sqlite_tables(path: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    with sqlite3.connect(path) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        found = {}
        for name in names:
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({name})")]
            rows = conn.execute(f"SELECT {', '.join(cols)} FROM {name}").fetchall()
            found[name] = (cols, sorted(rows, key=repr))
        return found


def pg_rows(url: str, table: str, cols: list[str]) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()
    return sorted(rows, key=repr)


def test_a_sqlite_history_moves_to_postgresql_and_lives_on_there(
    settings: Settings,
    audit_cli: Any,
    write_config: Any,
    tmp_path: Path,
    empty_pg: str,
    pg_server: PgServer,
) -> None:
    build_history(settings.database.path, incidents=40, events=3000,
                  now=datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip
    kill = audit_cli("kill", "trigger", "--reason", "before the move", script=True)
    assert kill.returncode == 0, kill.stderr
    source = sqlite_tables(settings.database.path)
    total = len(source["events"][1])
    assert total > 3000
    last_id = max(r[0] for r in source["events"][1])

    done = audit_cli("db", "copy", "--to", empty_pg, env={"ROLLBOT_DATABASE_PASSWORD": SECRET})
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert SECRET not in said
    assert f"target verified: {total} event(s), seq 1..{total}" in flat(done.stdout)
    for table, (cols, rows) in source.items():  # every table, every row, every column
        assert pg_rows(empty_pg, table, cols) == rows, table

    # the desk now runs on PostgreSQL: its audit commands read it through the config's url
    moved = settings.model_copy(update={"database": DatabaseConfig(url=empty_pg)})
    on_pg = type(audit_cli)(write_config(moved, "postgres.toml"), tmp_path)
    verified = on_pg("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"intact - {total} event(s), seq 1..{total}" in flat(verified.stdout)

    # new events link onto the copied chain: a terminal kill (a hold row and events, ids after
    # the copied ones) and an app's append
    again = on_pg("kill", "trigger", "--reason", "after the move", script=True)
    assert again.returncode == 0, again.stdout + again.stderr
    rb = Rollbot.open(moved, clock=ManualClock())
    try:
        rb.events.append("NOTE", Actor(id="U0RISK", source="slack"), reason="on postgresql")
        newest = rb.db.query("SELECT id, seq FROM events WHERE id > ? ORDER BY id", (last_id,))
    finally:
        rb.db.close()
    assert len(newest) >= 2 and newest[0]["seq"] == total + 1
    grown = total + len(newest)
    verified = on_pg("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"intact - {grown} event(s), seq 1..{grown}" in flat(verified.stdout)
    head = on_pg("audit", "head")
    assert head.returncode == 0 and head.stdout.startswith(f"{grown}:"), head.stderr
    exported = on_pg("audit", "export", "--format", "jsonl")
    assert exported.returncode == 0, exported.stderr
    assert len(exported.stdout.splitlines()) == grown

    # a target that is not empty is refused, and left as it was
    refused = audit_cli("db", "copy", "--to", empty_pg)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "the target is not empty (table" in flat(refused.stderr)
    assert len(pg_rows(empty_pg, "events", ["id"])) == grown

    # a desk already on PostgreSQL has no SQLite history to move
    from_pg = on_pg("db", "copy", "--to", f"sqlite:///{tmp_path / 'back.db'}")
    assert from_pg.returncode == 2 and "already PostgreSQL" in flat(from_pg.stderr)
    assert not (tmp_path / "back.db").exists()


def test_an_unreachable_or_missing_target_is_named_without_its_password(
    settings: Settings, audit_cli: Any, pg_server: PgServer
) -> None:
    build_history(settings.database.path, incidents=2, events=20,
                  now=datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip
    missing = pg_server.url("no_such_database")
    done = audit_cli("db", "copy", "--to", missing, env={"PGPASSWORD": SECRET})
    said = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in said, said
    assert "no_such_database" in flat(done.stderr) and "cannot be reached" in flat(done.stderr)
    assert SECRET not in said


def test_a_target_that_already_has_the_schema_but_no_rows_takes_the_copy(
    settings: Settings, audit_cli: Any, pg_server: PgServer
) -> None:
    """An operator who ran rollbot's migrations on the new database first (no rows yet)."""
    build_history(settings.database.path, incidents=3, events=60,
                  now=datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip
    total = len(sqlite_tables(settings.database.path)["events"][1])
    target = pg_server.new_database(migrated=True)
    try:
        done = audit_cli("db", "copy", "--to", target)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"target verified: {total} event(s), seq 1..{total}" in flat(done.stdout)
    finally:
        pg_server.drop_database(target)


def test_a_row_postgresql_cannot_store_is_named_and_nothing_is_copied(
    settings: Settings, audit_cli: Any, write_config: Any, empty_pg: str
) -> None:
    """SQLite text may hold a NUL (an older bot stored what Slack sent as it came); PostgreSQL
    text cannot. The copy names the row and copies nothing: all or nothing."""
    kill = audit_cli("kill", "trigger", "--reason", "before the move", script=True)
    assert kill.returncode == 0, kill.stderr
    with sqlite3.connect(settings.database.path) as conn:
        conn.execute("UPDATE incidents SET reason = 'runaway' || char(0) || 'algo'")
    done = audit_cli("db", "copy", "--to", empty_pg)
    said = flat(done.stdout + done.stderr)
    assert done.returncode == 2, said
    assert "table incidents, row id = 'INC-0001': column reason holds a NUL character" in said
    assert "Nothing was copied" in said and "Traceback" not in said
    with psycopg.connect(empty_pg) as conn:
        tables = conn.execute(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'incidents'"
        ).fetchone()
        rows = conn.execute("SELECT COUNT(*) FROM incidents").fetchone() if tables[0] else (0,)
    assert rows[0] == 0
