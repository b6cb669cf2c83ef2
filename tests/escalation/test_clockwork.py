"""The Clockwork (APScheduler) in-process: overdue deadlines fire at start, the auditor's grace,
real-time firing with its lag, interval jobs, and the sweeps (unescalated incidents, losses
reported by a real rollback on the paper venue, checklists for finished rollbacks)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from escalation.helpers import (
    TIER1,
    TIER2,
    dm_targets,
    events,
    make_settings,
    open_incident,
    operator,
    outbox,
)
from rollbot.bot.scheduler import Clockwork
from rollbot.clock import ManualClock, SystemClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.paging.escalation import get_escalation, loss_watcher, start_escalation
from rollbot.commands.rollback.engine import Engine
from rollbot.config import PaperVenueConfig
from rollbot.storage.events import Actor


async def test_at_start_an_overdue_deadline_fires_at_once_with_its_lag(
    app: Rollbot, clock: ManualClock
) -> None:
    inc = open_incident(app)
    start_escalation(app, inc, operator())
    clock.advance(minutes=20)  # the bot was down when tier 2 was due
    cw = Clockwork(app)
    await cw.start()
    try:
        assert set(dm_targets(app)[2:]) == TIER2
        [fired] = events(app, "TIMER_FIRED")
        assert fired.data["via"] == "startup" and fired.data["lag_s"] == 300.0
        [ping] = [e for e in events(app, "ESCALATION_PINGED") if e.data["tier"] == 2]
        assert ping.data["lag_s"] == 300.0
        assert await cw.run_due() == []  # nothing left due: no second page
    finally:
        cw.shutdown()


async def test_the_auditor_fires_only_deadlines_overdue_by_more_than_a_minute(
    app: Rollbot, clock: ManualClock
) -> None:
    inc = open_incident(app)
    start_escalation(app, inc, operator())
    cw = Clockwork(app)  # not started: its APScheduler alarms are not in play here
    clock.advance(minutes=15, seconds=30)
    assert await cw.audit() == []
    assert len(dm_targets(app)) == 2
    clock.advance(seconds=31)
    [fired] = await cw.audit()
    assert fired.via == "auditor" and fired.lag_s == 61.0
    assert set(dm_targets(app)[2:]) == TIER2


async def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_the_scheduler_fires_a_deadline_on_time_in_real_time(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, wait_minutes=0.01, repeat=0)  # 0.6 s
    rb = Rollbot.open(settings, clock=SystemClock())
    cw = Clockwork(rb, sync_interval_s=0.2)
    try:
        await cw.start()
        inc = open_incident(rb)
        start_escalation(rb, inc, operator())  # queued after start: picked up by the sync
        await wait_for(lambda: len(dm_targets(rb)) >= 4)
        assert set(dm_targets(rb)[2:]) == TIER2
        [fired] = events(rb, "TIMER_FIRED")
        assert fired.data["via"] == "scheduler"
        # the alarm is set from the row within 0.2 s, then rings at the deadline
        assert 0 <= fired.data["lag_s"] < 1.0
        await wait_for(lambda: get_escalation(rb, inc).status == "EXHAUSTED")  # type: ignore[union-attr]
        assert len(dm_targets(rb)) == 4
    finally:
        cw.shutdown()
        rb.db.close()


async def test_every_runs_an_interval_job_and_survives_its_errors(app: Rollbot) -> None:
    calls: list[int] = []

    async def probe() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a monitor failing once")

    cw = Clockwork(app)
    cw.every("probe", 0.05, probe)
    await cw.start()
    try:
        await wait_for(lambda: len(calls) >= 3, timeout=5)
    finally:
        cw.shutdown()


async def test_the_sweep_escalates_recent_incidents_nobody_escalated(
    app: Rollbot, clock: ManualClock
) -> None:
    old = open_incident(app, kind="kill", reason="an old one")
    clock.advance(hours=2)
    new, _ = app.incidents.open(
        kind="kill", reason="from the terminal", actor=Actor(id="alice", source="cli")
    )
    await Clockwork(app).sweep()
    assert get_escalation(app, new.id) is not None
    assert get_escalation(app, old) is None
    assert set(dm_targets(app)) == TIER1


def losing_book(tmp_path: Path) -> Path:
    path = tmp_path / "losing.toml"
    path.write_text(
        'name = "losing"\n[account]\ncash = 1000000\ncurrency = "USD"\n'
        '[[positions]]\nsymbol = "AAPL"\nquantity = 1000\navg_price = 200\nmark = 180\n',
        encoding="utf-8",
    )
    return path


async def test_a_rollback_reporting_a_20k_loss_pages_every_tier(
    tmp_path: Path, clock: ManualClock
) -> None:
    settings = make_settings(tmp_path)
    settings.venues = [
        PaperVenueConfig(book_path=tmp_path / "paper.db", scenario=losing_book(tmp_path))
    ]
    rb = Rollbot.open(settings, clock=clock)
    try:
        who = operator()
        engine = Engine(rb, who)
        incident, _ = engine.open_held_incident(kind="rollback", reason="PnL -2% today")
        start_escalation(rb, incident.id, who)
        assert set(dm_targets(rb)) == TIER1
        engine.on_step = loss_watcher(rb, incident.id, who)
        await engine.run(incident, (1, 2, 3, 4, 5))
        esc = get_escalation(rb, incident.id)
        assert esc is not None and esc.critical and esc.loss == 20000
        assert set(dm_targets(rb)[2:]) == TIER1 | TIER2
        # the clock's sweep reads the same loss from the events and pages nobody again
        cw = Clockwork(rb)
        await cw.sweep()
        assert len(dm_targets(rb)) == 6
        # ... and opens the post-rollback checklist, once
        [posted] = outbox(rb, kind="thread", view="checklist")
        assert posted["incident_id"] == incident.id
        await cw.sweep()
        assert len(outbox(rb, kind="thread", view="checklist")) == 1
    finally:
        await rb.aclose()


async def test_the_sweep_finds_a_critical_loss_in_the_step_events(
    tmp_path: Path, clock: ManualClock
) -> None:
    settings = make_settings(tmp_path)
    settings.venues = [
        PaperVenueConfig(book_path=tmp_path / "paper.db", scenario=losing_book(tmp_path))
    ]
    rb = Rollbot.open(settings, clock=clock)
    try:
        # nobody watched the steps (every run watches its own now: page=False stands for one
        # whose watcher failed), so the sweep is the safety net
        engine = Engine(rb, operator(), page=False)
        incident, _ = engine.open_held_incident(kind="rollback", reason="drawdown 16%")
        start_escalation(rb, incident.id, operator())
        await engine.run(incident, (1, 2, 3))
        assert set(dm_targets(rb)) == TIER1
        await Clockwork(rb).sweep()
        assert set(dm_targets(rb)[2:]) == TIER1 | TIER2
        [critical] = events(rb, "ESCALATION_CRITICAL")
        assert critical.data["loss"] == "20000"
    finally:
        await rb.aclose()
