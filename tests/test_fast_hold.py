"""The terminal's kill stores its hold with the standard library alone
(commands/killswitch/fast_hold.py, issue 18 item 4). One source of truth: for the same kill it
writes, field by field, the rows the full path writes (store_held_incident + BREAK_GLASS), times
aside; and whatever it does not plainly understand it leaves to that full path, having written
nothing."""

from __future__ import annotations

import os
import pwd
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rollbot.bot.cli.glass import break_glass
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.fast_hold import (
    HELD_ELSEWHERE,
    KillConfig,
    read_kill_config,
    store_kill_hold,
)
from rollbot.commands.rollback.held_incident import store_held_incident
from rollbot.config import DatabaseConfig, PaperVenueConfig, Settings
from rollbot.errors import BadInput
from rollbot.storage import libpq
from rollbot.storage.audit import verify
from rollbot.storage.events import Actor

# times differ between the two runs, and so do the hashes that cover them (the chains are
# checked whole instead: audit verify on each database)
TIMES = {"at", "opened_at", "created_at", "updated_at", "prev_hash", "hash"}
TABLES = ("incidents", "holds", "outbox", "events")


def rows(db: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables a kill writes, times aside (ids kept: the numbering must match)."""
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return {
            table: [
                {k: v for k, v in dict(r).items() if k not in TIMES}
                for r in conn.execute(f"SELECT * FROM {table} ORDER BY rowid")
            ]
            for table in TABLES
        }


def full_path_kill(rb: Rollbot, reason: str, scope: str | None) -> str:
    who = Actor.terminal(None, rb.settings.identities)
    incident, new = store_held_incident(
        rb,
        who,
        kind="kill",
        reason=reason,
        scope_text=scope,
        also=lambda: break_glass(rb, who, "kill trigger", reason),
    )
    assert new
    return incident.id


@pytest.fixture
def twin(
    settings: Settings, tmp_path: Path, write_config: Callable[..., Path]
) -> tuple[Rollbot, Path, Rollbot, Path]:
    """Two desks alike but for their database file, each with one earlier kill and a second
    venue; the operator's OS login is mapped through [identities]."""
    me = pwd.getpwuid(os.getuid()).pw_name
    base = settings.model_copy(
        update={
            "identities": {me: "U0ME"},
            "venues": [*settings.venues, PaperVenueConfig(name="p2", book_path=tmp_path / "p2.db")],
        }
    )
    desks = []
    for name in ("full", "fast"):
        s = base.model_copy(
            update={"database": DatabaseConfig(path=tmp_path / f"{name}.db", busy_timeout_ms=4000)}
        )
        rb = Rollbot.open(s, clock=ManualClock())
        full_path_kill(rb, "an earlier kill", "p2")
        desks += [rb, write_config(s, f"{name}.toml")]
    yield tuple(desks)  # type: ignore[misc]
    for rb in desks[::2]:
        rb.db.close()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("reason", "scope"),
    [
        ("runaway algo", None),
        ("  padded reason ", "global"),
        ("bare venue", "p2"),
        ("a venue", "venue:paper"),
        ("an account", "account:paper/DU1234567"),
        ("a strategy", "strategy:mm-eu.1"),
    ],
)
def test_the_fast_hold_writes_exactly_the_rows_the_full_path_writes(
    twin: tuple[Rollbot, Path, Rollbot, Path], reason: str, scope: str | None
) -> None:
    full, _, fast, fast_config = twin
    assert full_path_kill(full, reason, scope) == "INC-0002"

    config = read_kill_config(str(fast_config))
    assert config is not None
    assert store_kill_hold(config, reason, scope) == "INC-0002"

    expected, got = rows(full.settings.database.path), rows(fast.settings.database.path)
    assert got == expected
    # the fast hold's events are links of the same chain: each covers its content and the last
    for desk in (full, fast):
        verdict = verify(desk.db)
        assert verdict.intact and verdict.events == 6, verdict
    # the rows say who acted: the mapped Slack id, the real login behind it
    events = got["events"][-3:]
    assert [e["kind"] for e in events] == ["INCIDENT_OPENED", "HOLD_SET", "BREAK_GLASS"]
    assert [e["actor"] for e in events] == ["U0ME"] * 3


def test_a_bad_scope_is_refused_by_the_same_rules_and_nothing_is_written(
    twin: tuple[Rollbot, Path, Rollbot, Path],
) -> None:
    full, _, fast, fast_config = twin
    before = rows(fast.settings.database.path)
    config = read_kill_config(str(fast_config))
    assert config is not None
    for bad in ("venue:nope", "account:paper", "bogus", "strategy:bad name"):
        with pytest.raises(BadInput) as fast_err:
            store_kill_hold(config, "x", bad)
        with pytest.raises(BadInput) as full_err:
            full_path_kill(full, "x", bad)
        assert str(fast_err.value) == str(full_err.value)
    assert rows(fast.settings.database.path) == before


def test_a_database_it_does_not_know_is_left_to_the_full_path_untouched(
    tmp_path: Path, app: Rollbot, write_lock: Any
) -> None:
    missing = KillConfig(database=str(tmp_path / "none.db"))
    assert store_kill_hold(missing, "x", None) is None
    assert not (tmp_path / "none.db").exists()  # the full path creates and migrates it

    older = tmp_path / "older.db"
    with sqlite3.connect(older) as conn:
        conn.execute("PRAGMA user_version = 1")
    assert store_kill_hold(KillConfig(database=str(older)), "x", None) is None

    db = app.settings.database.path
    with write_lock(db):  # another process writing: the caller cancels first, then retries
        assert store_kill_hold(KillConfig(database=str(db)), "x", None) == HELD_ELSEWHERE
    assert rows(db)["holds"] == []


@pytest.mark.parametrize(
    "toml",
    [
        "[database\n",  # not TOML
        '[database]\nbusy_timeout_ms = "5000"\n',  # pydantic would coerce: its words, not ours
        "[database]\nbusy_timeout_ms = 0\n",
        "[database]\nspare = 1\n",
        '[[venues]]\nkind = "crypto"\n',  # no default name
        '[[venues]]\nkind = "paper"\n[[venues]]\nkind = "paper"\n',  # repeated name
        "venues = []\n",
        '[identities]\nalice = ""\n',
    ],
)
def test_a_config_it_does_not_plainly_understand_is_left_to_the_full_path(
    tmp_path: Path, toml: str
) -> None:
    path = tmp_path / "odd.toml"
    path.write_text(toml, "utf-8")
    assert read_kill_config(str(path)) is None


def test_the_defaults_are_config_pys_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("", "utf-8")
    config = read_kill_config(str(path))
    settings = Settings()
    assert config == KillConfig(
        database=str(settings.database.path),
        venue_names=[v.name for v in settings.venues],
        identities=settings.identities,
    )


def test_the_fast_hold_imports_no_pydantic() -> None:
    code = "import sys, rollbot.commands.killswitch.fast_hold; print(sorted(m for m in sys.modules"
    code += " if m.split('.')[0] in ('pydantic', 'pydantic_core', 'typer', 'asyncio')))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
    # on PostgreSQL: libpq itself, not psycopg (its import alone was 130-160 ms)
    code = "import sys, rollbot.commands.killswitch.fast_hold, rollbot.storage.libpq as l"
    code += "; assert l.load() is not None; print(sorted(m for m in sys.modules if m.split('.')[0]"
    code += " in ('pydantic', 'pydantic_core', 'typer', 'psycopg', 'asyncio', 'rollbot.config')"
    code += " or m == 'rollbot.storage.postgres'))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_a_config_invalid_beyond_what_the_hold_reads_keeps_the_hold_and_says_no_cancels_went(
    app: Rollbot, tmp_path: Path, config_file: Path, rollbot: Any
) -> None:
    """The hold is stored before the whole config is validated: the kill then says so, exit 1
    (something changed), never "nothing changed"."""
    bad = tmp_path / "bad.toml"
    bad.write_text(config_file.read_text("utf-8") + "\nnav_change_threshold = 5\n", "utf-8")
    done = rollbot(
        "kill", "trigger", "--reason", "X", env={"ROLLBOT_CONFIG": str(bad)}, script=True
    )
    text = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1, text
    assert "Traceback" not in text
    assert "nav_change_threshold" in text
    assert (
        "The HALTED hold of INC-0001 is stored: trading stays halted. No cancels were sent" in text
    )
    assert [h.scope for h in app.killswitch.holds.active()] == ["global"]


def test_the_console_scripts_kill_with_a_bad_scope_exits_2_and_stores_nothing(
    app: Rollbot, rollbot: Any
) -> None:
    done = rollbot("kill", "trigger", "--reason", "X", "--scope", "venue:nope", script=True)
    text = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, text
    assert "unknown venue 'nope' in scope (configured: paper)" in text
    assert "Traceback" not in text
    assert rows(app.settings.database.path) == {table: [] for table in TABLES}


# -- on PostgreSQL ([database] url) --------------------------------------------------------------
def pg_rows(db: Any) -> dict[str, list[dict[str, Any]]]:
    order = {"incidents": "seq"}
    return {
        table: [
            {k: v for k, v in r.items() if k not in TIMES}
            for r in db.query(f"SELECT * FROM {table} ORDER BY {order.get(table, 'id')}")
        ]
        for table in TABLES
    }


@pytest.mark.parametrize("client", ["libpq", "psycopg"])
@pytest.mark.parametrize(("reason", "scope"), [("runaway algo", None), ("a venue", "p2")])
def test_the_fast_hold_on_postgresql_writes_exactly_the_rows_the_full_path_writes(
    settings: Settings,
    tmp_path: Path,
    write_config: Callable[..., Path],
    pg_server: Any,
    reason: str,
    scope: str | None,
    client: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through libpq itself (the break-glass path) and, where libpq cannot be loaded, through
    psycopg: the same rows as the full path either way."""
    if client == "psycopg":
        monkeypatch.setattr(libpq, "load", lambda: None)
    me = pwd.getpwuid(os.getuid()).pw_name
    base = settings.model_copy(
        update={
            "identities": {me: "U0ME"},
            "venues": [*settings.venues, PaperVenueConfig(name="p2", book_path=tmp_path / "p2.db")],
        }
    )
    desks = []
    for name in ("full", "fast"):
        s = base.model_copy(update={"database": DatabaseConfig(url=pg_server.new_database())})
        rb = Rollbot.open(s, clock=ManualClock())
        full_path_kill(rb, "an earlier kill", "p2")
        desks.append((rb, write_config(s, f"{name}.toml")))
    (full, _), (fast, fast_config) = desks
    try:
        assert full_path_kill(full, reason, scope) == "INC-0002"
        config = read_kill_config(str(fast_config))
        assert config is not None and config.url == fast.settings.database.url
        assert store_kill_hold(config, reason, scope) == "INC-0002"
        assert pg_rows(fast.db) == pg_rows(full.db)
        assert [e["kind"] for e in pg_rows(fast.db)["events"][-3:]] == [
            "INCIDENT_OPENED",
            "HOLD_SET",
            "BREAK_GLASS",
        ]
    finally:
        full.db.close()
        fast.db.close()


def test_the_fast_hold_on_postgresql_waits_no_longer_than_its_bound_for_another_writer(
    pg_server: Any,
) -> None:
    import threading
    import time

    from rollbot.storage.postgres import PostgresDatabase

    url = pg_server.new_database()
    other = PostgresDatabase(url)
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with other.write():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    assert inside.wait(10)
    try:
        started = time.monotonic()
        assert store_kill_hold(KillConfig(url=url), "x", None) == HELD_ELSEWHERE
        assert time.monotonic() - started < 1.5  # connect + HOLD_WAIT_MS, never the busy timeout
    finally:
        release.set()
        thread.join()
    assert other.query("SELECT * FROM holds") == []  # nothing written
    assert store_kill_hold(KillConfig(url=url), "x", None) == "INC-0001"  # free again: stored
    assert other.one("SELECT state FROM holds") == {"state": "HALTED"}
    other.close()
    empty = pg_server.new_database(migrated=False)  # no schema: left to the full path
    assert store_kill_hold(KillConfig(url=empty), "x", None) is None


def test_a_postgresql_it_cannot_reach_or_that_refuses_is_left_to_the_full_path(
    pg_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing stored, nothing raised: the full path then says what is wrong, by name."""
    url = pg_server.new_database()
    nowhere = url.split("?")[0] + f"?host={tmp_path}"  # no server listens there
    assert store_kill_hold(KillConfig(url=nowhere), "x", None) is None
    no_role = url.replace("rollbot@", "nobody_here@")
    assert store_kill_hold(KillConfig(url=no_role), "x", None) is None
    monkeypatch.setenv("ROLLBOT_DATABASE_PASSWORD", "wrong but unused over trust")
    assert store_kill_hold(KillConfig(url=url), "x", None) == "INC-0001"


def test_the_fast_hold_stores_a_reason_in_any_database_encoding(pg_server: Any) -> None:
    """libpq is told the text is UTF-8, so a database in another encoding stores the reason
    as typed (psycopg's full path does the same), never mojibake."""
    import os as _os

    from rollbot.storage.postgres import PostgresDatabase

    name = f"latin1_{_os.getpid()}"
    pg_server.admin(
        f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'"
    )
    url = pg_server.url(name)
    PostgresDatabase(url).close()  # migrated
    reason = "déjà vu: coût élevé"
    assert store_kill_hold(KillConfig(url=url), reason, None) == "INC-0001"
    db = PostgresDatabase(url)
    try:
        assert db.one("SELECT reason FROM holds") == {"reason": reason}
        assert verify(db).intact
    finally:
        db.close()
        pg_server.drop_database(url)


def test_a_reason_libpq_would_cut_short_is_left_to_the_full_path(pg_server: Any) -> None:
    """A NUL would end a C string there: the hold is not stored with half its reason; the full
    path says what is wrong, and nothing was written."""
    from rollbot.storage.postgres import PostgresDatabase

    url = pg_server.new_database()
    assert store_kill_hold(KillConfig(url=url), "runaway\x00 algo", None) is None
    db = PostgresDatabase(url)
    try:
        assert db.query("SELECT * FROM holds") == []
        assert db.query("SELECT * FROM incidents") == []
    finally:
        db.close()
