"""Issue 18: the clock's periodic work costs what is open, not what is past. On a database with
a long history of closed incidents (acknowledged escalations, step reports, ticked checklists)
the sweep reads only the open incidents, through indexes; closed ones are never re-parsed."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from fakes.history import build_history

from escalation.helpers import TIER1, dm_targets, make_settings, open_incident, operator, outbox
from rollbot.bot.scheduler import Clockwork
from rollbot.clock import ManualClock, iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.desk.outbox import SET_ASIDE_SQL
from rollbot.commands.paging import escalation
from rollbot.commands.paging.escalation import get_escalation, start_escalation
from rollbot.commands.rollback import checklist
from rollbot.storage.events import Actor
from rollbot.storage.migrations import MIGRATIONS


@pytest.fixture
def backend() -> str:
    """SQLite only: these read the statements SQLite runs (its trace callback) and its indexes
    by name (INDEXED BY); PostgreSQL's planner chooses its own plans."""
    return "sqlite"


def history_app(tmp_path: Path, clock: ManualClock, incidents: int) -> Rollbot:
    settings = make_settings(tmp_path, repeat=1)
    if incidents:
        build_history(
            settings.database.path, incidents=incidents, events=incidents * 20, now=clock.now()
        )
    return Rollbot.open(settings, clock=clock)


@contextmanager
def statements(app: Rollbot) -> Iterator[list[str]]:
    """Every SQL statement the connection runs meanwhile (sqlite3's trace callback)."""
    seen: list[str] = []
    app.db.conn.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        app.db.conn.set_trace_callback(None)


def step_ended(app: Rollbot, incident_id: str, step: int, pnl: str) -> None:
    app.events.append(
        "STEP_ENDED",
        operator(),
        incident_id=incident_id,
        data={"step": step, "total_pnl": pnl},
    )


async def test_a_long_history_adds_no_work_to_the_sweep(tmp_path: Path) -> None:
    """The same open incident, swept over an empty database and over 300 closed incidents
    with acknowledged escalations and step reports: the same statements, the same answer."""
    runs = []
    for n, past in enumerate((0, 300)):
        clock = ManualClock()
        app = history_app(tmp_path / f"db{n}", clock, past)
        try:
            inc = open_incident(app)
            start_escalation(app, inc, operator())
            step_ended(app, inc, 3, "-500")
            with statements(app) as seen:
                swept = escalation.sweep(app)
                opened = checklist.open_finished_rollbacks(app)
            runs.append((len(seen), swept, opened))
        finally:
            app.db.close()
    (empty_n, empty_swept, _), (history_n, history_swept, history_opened) = runs
    assert history_swept == empty_swept == {"started": 0, "critical": 0, "checked": 1}
    assert history_n == empty_n  # no statement per past incident
    assert history_opened == []  # every past rollback has its checklist or is long closed


async def test_a_critical_loss_in_an_open_incident_is_still_found_over_a_long_history(
    tmp_path: Path, clock: ManualClock
) -> None:
    app = history_app(tmp_path, clock, 200)
    try:
        inc = open_incident(app)
        start_escalation(app, inc, operator())
        step_ended(app, inc, 3, "-25000")
        await Clockwork(app).sweep()
        esc = get_escalation(app, inc)
        assert esc is not None and esc.critical and esc.loss == 25000
        assert len(dm_targets(app)) == 2 + 4  # tier 1 first, then every tier at once
    finally:
        app.db.close()


def plan(app: Rollbot, sql: str, params: tuple[object, ...]) -> list[str]:
    return [r["detail"] for r in app.db.query(f"EXPLAIN QUERY PLAN {sql}", params)]


@pytest.mark.parametrize(
    ("name", "sql", "params"),
    [
        ("unescalated incidents", escalation.UNESCALATED_SQL, ("x",)),
        ("losses to watch", escalation.LOSS_WATCH_SQL, ("x",)),
        ("finished rollbacks", checklist.FINISHED_ROLLBACKS_SQL, ("x",)),
        ("an incident's step reports", escalation.STEP_REPORTS_SQL, ("x",)),
        ("messages Slack refused (/healthz)", SET_ASIDE_SQL, ()),
    ],
)
def test_the_sweeps_queries_use_an_index_never_a_full_scan(
    tmp_path: Path, clock: ManualClock, name: str, sql: str, params: tuple[object, ...]
) -> None:
    app = history_app(tmp_path, clock, 50)
    try:
        app.db.execute("ANALYZE")  # statistics must not talk the planner into a scan either
        detail = plan(app, sql, params)
        # a scan of a partial index holds only open work (open incidents, refused messages)
        open_work = ("incidents_open", "outbox_set_aside")
        scans = [d for d in detail if d.startswith("SCAN") and not any(i in d for i in open_work)]
        assert not scans, f"{name}: {detail}"
        assert not any("SCAN events" in d for d in detail), detail
    finally:
        app.db.close()


async def test_a_finished_rollback_gets_its_checklist_if_open_or_closed_within_a_day(
    tmp_path: Path, clock: ManualClock
) -> None:
    app = history_app(tmp_path, clock, 0)
    try:
        who = Actor(id="U0RISK", source="slack")
        ids = []
        for reason in ("still open", "closed an hour ago", "closed two days ago"):
            inc, _ = app.incidents.open(kind="rollback", reason=reason, actor=who)
            step_ended(app, inc.id, 5, "-10")
            ids.append(inc.id)
        app.incidents.close(ids[2], who, "done")
        app.db.execute(
            "UPDATE incidents SET closed_at = ? WHERE id = ?",
            (iso(clock.now() - timedelta(days=2)), ids[2]),
        )
        app.incidents.close(ids[1], who, "done")
        assert checklist.open_finished_rollbacks(app) == ids[:2]
        posted = {m["incident_id"] for m in outbox(app, kind="thread", view="checklist")}
        assert posted == set(ids[:2])
        assert checklist.open_finished_rollbacks(app) == []
    finally:
        app.db.close()


def test_the_open_work_indexes_reach_a_database_made_before_them(tmp_path: Path) -> None:
    """An existing database gets the indexes by migration, its rows untouched."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:2]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    settings = make_settings(tmp_path)
    settings.database.path = path
    app = Rollbot.open(settings, clock=ManualClock())
    try:
        names = {r["name"] for r in app.db.query("SELECT name FROM sqlite_master")}
        assert {"incidents_open", "events_step_ended", "timers_kind_fired"} <= names
    finally:
        app.db.close()


def test_tier1_is_paged_for_an_unescalated_recent_incident_over_a_long_history(
    tmp_path: Path, clock: ManualClock
) -> None:
    app = history_app(tmp_path, clock, 100)
    try:
        inc, _ = app.incidents.open(
            kind="kill", reason="from the terminal", actor=Actor(id="alice", source="cli")
        )
        assert escalation.sweep(app) == {"started": 1, "critical": 0, "checked": 1}
        assert get_escalation(app, inc.id) is not None
        assert set(dm_targets(app)) == TIER1
    finally:
        app.db.close()
