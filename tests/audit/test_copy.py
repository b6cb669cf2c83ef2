"""`rollbot db copy --to URL`: a one-host SQLite history moved whole into a new database, the
chain intact and verified there; a target that is not empty, the source itself or a URL it
cannot use is refused (exit 2) with nothing copied."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.config import DatabaseConfig
from rollbot.storage import copy as copy_module
from rollbot.storage.audit import verify
from rollbot.storage.copy import copy_database, open_target
from rollbot.storage.db import Database
from rollbot.storage.events import Actor


def flat(text: str) -> str:
    return " ".join(text.split())


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {n: conn.execute(f"SELECT * FROM {n} ORDER BY rowid").fetchall() for n in names}


@pytest.fixture
def backend() -> str:
    """The source of a copy is a one-host SQLite file by definition (the PostgreSQL targets are
    below, on the session's server)."""
    return "sqlite"


def superseded_approval(database: Any) -> None:
    rb = Rollbot.open(database.settings, clock=ManualClock())
    try:  # as Approvals._supersede leaves them: the old row names the new one, stored after it
        for approval, replaces in (("A-0001", None), ("A-0002", "A-0001")):
            rb.db.execute(
                "INSERT INTO approvals (id, action, plan, plan_hash, requested_by,"
                " requested_source, quorum, roles, created_at, expires_at, replaces)"
                " VALUES (?, 'clear_hold', '[]', 'h', 'U0OPERATOR', 'slack', 1, '[]',"
                " '2026-01-05T12:00:00.000Z', '2026-01-05T13:00:00.000Z', ?)",
                (approval, replaces),
            )
        rb.db.execute(
            "UPDATE approvals SET status = 'SUPERSEDED', superseded_by = 'A-0002'"
            " WHERE id = 'A-0001'"
        )
    finally:
        rb.db.close()


def test_the_whole_history_is_copied_and_its_chain_verified_there(
    database: Any, audit_cli: Any, story: dict[str, int], tmp_path: Path
) -> None:
    # more than the story: a terminal kill, and an approval superseded by a later one (a row
    # pointing at a row written after it)
    assert audit_cli("kill", "trigger", "--reason", "before the move", script=True).returncode == 0
    superseded_approval(database)
    url = database.target_url("moved.db")

    done = audit_cli("db", "copy", "--to", url)
    assert done.returncode == 0, done.stdout + done.stderr
    source = dump(database.settings.database.path)
    target = dump(Path(url.removeprefix("sqlite:///")))
    assert target == source  # every table, every row, every column
    total = len(source["events"])
    assert f"target verified: {total} event(s), seq 1..{total}" in flat(done.stdout)

    # the copy lives on: a new event links onto the copied head
    moved = database.settings.model_copy(
        update={"database": DatabaseConfig(path=Path(url.removeprefix("sqlite:///")))}
    )
    rb = Rollbot.open(moved, clock=ManualClock())
    try:
        rb.events.append("NOTE", Actor(id="U0RISK", source="slack"), reason="after the move")
        verdict = verify(rb.db)
        assert verdict.intact and verdict.events == total + 1
    finally:
        rb.db.close()

    # a target that is not empty is refused, and left as it was
    again = audit_cli("db", "copy", "--to", url)
    assert again.returncode == 2 and "the target is not empty (table" in flat(again.stderr)
    assert len(dump(Path(url.removeprefix("sqlite:///")))["events"]) == total + 1


def test_bad_targets_are_refused_naming_them(
    database: Any, audit_cli: Any, story: dict[str, int], tmp_path: Path
) -> None:
    own = f"sqlite:///{database.settings.database.path}"
    cases = {
        own: "--to names the source database itself",
        "mysql://db/rollbot": "--to 'mysql://db/rollbot' is not a database URL",
        "sqlite:///": "--to 'sqlite:///': name a database file",
        "postgresql://ops:hunter2@db.internal/rollbot": "a password in the URL is refused",
        "postgresql://ops@db.internal/rollbot?password=hunter2": "a password in the URL is",
        "postgresql://ops@db.internal/": "names no database",
    }
    before = dump(database.settings.database.path)
    for url, said in cases.items():
        done = audit_cli("db", "copy", "--to", url)
        assert done.returncode == 2, (url, done.stdout + done.stderr)
        assert said in flat(done.stderr), (url, done.stderr)
        assert "hunter2" not in done.stdout + done.stderr  # a password is never echoed
    assert dump(database.settings.database.path) == before


def test_events_written_during_the_copy_are_reported_not_lost_silently(
    database: Any, story: dict[str, int], tmp_path: Path
) -> None:
    """The bot keeps writing while the copy reads its snapshot: the copy is consistent as of
    that snapshot, and says how many events it does not hold."""
    source = Database(database.settings.database.path)
    target = open_target(database.target_url("during.db"))
    bot = Rollbot.open(database.settings, clock=ManualClock())

    def meanwhile(table: str, count: int) -> None:
        if table == "events":  # another process appends after the snapshot was taken
            bot.events.append("NOTE", Actor(id="U0OPERATOR", source="slack"), reason="late")

    try:
        copied = copy_database(source, target, meanwhile)
    finally:
        bot.db.close()
        target.db.close()
        source.close()
    assert copied.source_moved_on == 1
    assert copied.verdict is not None and copied.verdict.intact
    assert copied.tables["events"] == len(dump(database.settings.database.path)["events"]) - 1


def test_a_row_naming_a_later_row_of_its_table_is_copied_in_any_batch_size(
    database: Any, story: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A superseded approval names its successor, stored after it: copied one row a
    statement, the name is set once the successor is in (the foreign key holds throughout)."""
    superseded_approval(database)
    monkeypatch.setattr(copy_module, "ROWS_PER_INSERT", 1)
    source = Database(database.settings.database.path)
    target = open_target(database.target_url("one-by-one.db"))
    try:
        copied = copy_database(source, target)
        assert copied.verdict is not None and copied.verdict.intact
        got = target.db.query("SELECT id, replaces, superseded_by FROM approvals ORDER BY id")
    finally:
        target.db.close()
        source.close()
    assert got == [
        {"id": "A-0001", "replaces": None, "superseded_by": "A-0002"},
        {"id": "A-0002", "replaces": "A-0001", "superseded_by": None},
    ]
