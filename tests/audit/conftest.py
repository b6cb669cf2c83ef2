"""The audit tests' database, one fixture per backend, so the same tests run on each.

Fixtures
    database   a Backend: `settings`, `config` (rollbot.toml for the real CLI), `open()` a
               Database on it, `tamper(*statements)` run SQL as an attacker with write access
               would (the append-only triggers lifted and put back), `target_url(name)` a URL
               for a new, empty database of that backend (`db copy --to`).
    audit_cli  the real CLI (`python -m rollbot.bot.cli`) against `database`'s config.
    story      a history with every source: a strategy kill and an order cancelled under it
               (slack), a terminal actor with hostile text (cli), a deadline (clock), over
               three days; returns the events' ids by name.

On PostgreSQL each test gets its own database on the session's server (tests/pg_server.py):
`settings` and the config carry its `[database] url`, `open()` goes through the backend's
factory, and `tamper` lifts the triggers with `ALTER TABLE events DISABLE TRIGGER USER`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from pg_server import BOTH, PgServer

from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.held_incident import store_held_incident
from rollbot.config import Settings
from rollbot.storage.backends import open_database
from rollbot.storage.db import Database
from rollbot.storage.events import Actor

BACKENDS = BOTH

SQLITE_GUARDS = (
    "CREATE TRIGGER events_no_update BEFORE UPDATE ON events\n"
    "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END",
    "CREATE TRIGGER events_no_delete BEFORE DELETE ON events\n"
    "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END",
)
HOSTILE = 'bad, "quoted"\nsecond line =HYPERLINK("http://x") \u2028 end'


@dataclass
class Backend:
    name: str
    settings: Settings
    config: Path
    root: Path
    server: PgServer | None = None
    made: list[str] = field(default_factory=list)  # PostgreSQL databases to drop at the end

    def open(self) -> Database:
        return cast("Database", open_database(self.settings.database, create=False))

    def tamper(self, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
        """What an attacker with write access does: lift the append-only triggers, change rows,
        put the triggers back as they were."""
        if self.name == "postgresql":
            self._tamper_postgres(statements)
            return
        conn = sqlite3.connect(self.settings.database.path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DROP TRIGGER events_no_update")
            conn.execute("DROP TRIGGER events_no_delete")
            for statement in statements:
                sql, params = statement if isinstance(statement, tuple) else (statement, ())
                conn.execute(sql, params)
            for guard in SQLITE_GUARDS:
                conn.execute(guard)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def _tamper_postgres(self, statements: tuple[str | tuple[str, tuple[Any, ...]], ...]) -> None:
        import psycopg

        from rollbot.storage.postgres import translate

        assert self.settings.database.url is not None
        with psycopg.connect(self.settings.database.url) as conn:  # one transaction
            conn.execute("ALTER TABLE events DISABLE TRIGGER USER")  # V1's no_update/no_delete
            for statement in statements:
                sql, params = statement if isinstance(statement, tuple) else (statement, ())
                conn.execute(translate(sql), params)
            conn.execute("ALTER TABLE events ENABLE TRIGGER USER")

    def target_url(self, name: str) -> str:
        """A new, empty database of this backend (`name` is the SQLite file's)."""
        if self.server is None:
            return f"sqlite:///{self.root / name}"
        url = self.server.new_database(migrated=False)
        self.made.append(url)
        return url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every audit test on both backends (conftest.py's `backend`, overridden)."""
    return str(request.param)


@pytest.fixture
def database(
    request: pytest.FixtureRequest,
    backend: str,
    settings: Settings,
    config_file: Path,
    tmp_path: Path,
) -> Iterator[Backend]:
    server = request.getfixturevalue("pg_server") if backend == "postgresql" else None
    if server is not None:  # the autouse fixture made this test's database: the config names it
        assert settings.database.url is not None
        assert f'url = "{settings.database.url}"' in config_file.read_text()
    found = Backend(backend, settings, config_file, tmp_path, server)
    yield found
    for url in found.made:
        assert server is not None
        server.drop_database(url)


@pytest.fixture
def audit_cli(database: Backend, rollbot: Any) -> Any:
    rollbot.config = database.config
    return rollbot


OPERATOR = Actor(id="U0OPERATOR", source="slack")


@pytest.fixture
def story(database: Backend) -> Iterator[dict[str, int]]:
    clock = ManualClock()  # 2026-01-05 12:00 UTC
    rb = Rollbot.open(database.settings, clock=clock)
    ids: dict[str, int] = {}
    try:
        incident, _ = store_held_incident(
            rb, OPERATOR, kind="kill", reason="runaway quotes", scope_text="strategy:mm-eu"
        )
        ids["order"] = rb.events.append(
            "ORDER_CANCEL_REQUESTED",
            OPERATOR,
            incident_id=incident.id,
            scope="venue:paper",
            reason="kill",
            data={"client_order_id": "RB-1-AAPL", "symbol": "AAPL", "quantity": "10"},
        )
        clock.advance(days=1)  # 2026-01-06
        terminal = Actor(id="U0RISK", source="cli", name="risk", host="desk-2", uid=1001)
        ids["hostile"] = rb.events.append("NOTE", terminal, reason=HOSTILE, data={"x": HOSTILE})
        for sign in ("=", "+", "-", "@"):
            rb.events.append("NOTE", terminal, reason=f"{sign}1+1")
        clock.advance(days=1)  # 2026-01-07
        ids["clock"] = rb.events.append(
            "TIMER_FIRED", Actor.clock("escalation"), incident_id=incident.id
        )
        ids["last"] = rb.events.append("NOTE", OPERATOR, reason="the last")
        clock.advance(timedelta(hours=1).total_seconds())
    finally:
        rb.db.close()
    yield ids


@pytest.fixture
def count_events(database: Backend) -> Callable[[], int]:
    def count() -> int:
        db = database.open()
        try:
            row = db.one("SELECT COUNT(*) AS n FROM events")
            return int(row["n"]) if row else 0
        finally:
            db.close()

    return count
