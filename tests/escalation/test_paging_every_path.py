"""Paging and the loss watcher start the moment an incident opens, whichever path opened it
(issue 16 item 4): the terminal's kill (console script and full CLI), the risk monitor's
automatic rollback, an approved flatten, `recover` of an incident whose process died before it
paged, the drill (inside its sandbox only) and the venue drill (a rehearsal: nobody paged). On a
manual clock the page's time is the open's time; a loss above critical_loss reported by any run
pages every tier at once."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from monitors.support import one_stock_book

from escalation.helpers import TIER1, TIER2, dm_targets, make_settings, operator, outbox
from rollbot.brokers.paper.venue import PaperVenue
from rollbot.clock import ManualClock, iso, parse_iso
from rollbot.commands.approvals.recover import resume_unfinished
from rollbot.commands.approvals.two_person import Approvals
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.paging import escalation
from rollbot.commands.risk.monitors import Monitor
from rollbot.commands.rollback.drill import DRILL_DB, run_drill
from rollbot.commands.rollback.engine import Engine
from rollbot.commands.rollback.venue_drill import run_venue_drill
from rollbot.storage.db import Database
from rollbot.storage.events import Actor

RISK_ACTOR = Actor(id="U0RISK", source="slack")


def opened_and_paged(app: Rollbot, incident_id: str) -> tuple[str, str | None]:
    """(when the incident opened, when its escalation started) as stored."""
    opened = app.db.one(
        "SELECT at FROM events WHERE incident_id = ? AND kind = 'INCIDENT_OPENED'", (incident_id,)
    )["at"]
    esc = app.db.one("SELECT created_at FROM escalations WHERE incident_id = ?", (incident_id,))
    return opened, esc["created_at"] if esc else None


@pytest.mark.parametrize("script", [True, False], ids=["console-script", "full-cli"])
def test_the_terminals_kill_pages_tier_one_as_it_opens(
    tmp_path: Path, write_config: Any, script: bool
) -> None:
    cfg = write_config(make_settings(tmp_path))
    argv = [str(Path(sys.executable).with_name("rollbot"))] if script else [
        sys.executable, "-m", "rollbot.bot.cli",
    ]  # fmt: skip
    done = subprocess.run(
        [*argv, "--config", str(cfg), "kill", "trigger", "--reason", "runaway orders"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    app = Rollbot.open(make_settings(tmp_path))
    try:
        opened, paged = opened_and_paged(app, "INC-0001")
        assert paged is not None  # not left to the clock's sweep
        assert parse_iso(paged) - parse_iso(opened) < timedelta(seconds=10)
        assert set(dm_targets(app)) == TIER1
        assert escalation.sweep(app)["started"] == 0
    finally:
        app.db.close()


async def test_the_monitors_automatic_rollback_pages_as_it_opens(tmp_path: Path) -> None:
    clock = ManualClock()
    settings = make_settings(tmp_path)
    app = Rollbot.open(settings, clock=clock)
    try:
        app.gates.arm(operator(), "live desk")
        paper = app.venue("paper")
        assert isinstance(paper, PaperVenue)
        paper.seed(one_stock_book(["99", "97", "95.5", "94", "89"]))  # NAV -5.5%: fires pnl
        monitor = Monitor(app)
        await monitor.tick()
        while paper.advance_prices() is not None:
            clock.advance(10)
            await monitor.tick()
        await monitor.settle()
        (incident,) = app.incidents.list()
        assert incident.opened_by == "clock:monitor"
        opened, paged = opened_and_paged(app, incident.id)
        assert paged == opened
        assert set(dm_targets(app)) >= TIER1
    finally:
        await app.aclose()


async def test_an_approved_flatten_pages_at_its_open_not_at_the_request(tmp_path: Path) -> None:
    """No incident open: the approved flatten opens one, and it pages tier 1 then."""
    clock = ManualClock()
    app = Rollbot.open(make_settings(tmp_path), clock=clock)
    try:
        request = await Approvals(app).request("flatten", {"venue": "paper"}, operator(), "x")
        clock.advance(seconds=45)
        result = await Approvals(app).vote(request.id, RISK_ACTOR, "approve")
        assert result.code == "EXECUTED", result.message
        incident_id = result.result["incident_id"]  # type: ignore[index]
        opened, paged = opened_and_paged(app, incident_id)
        assert paged == opened
        assert parse_iso(opened) - request.created_at >= timedelta(seconds=45)
        assert set(dm_targets(app)) == TIER1
    finally:
        await app.aclose()


async def test_recover_pages_an_incident_whose_process_died_before_it_paged(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    app = Rollbot.open(make_settings(tmp_path), clock=clock)
    try:
        incident, _ = Engine(app, operator()).open_held_incident(kind="rollback", reason="cut")
        assert escalation.get_escalation(app, incident.id) is None  # the process died here
        clock.advance(minutes=2)
        recovered_at = iso(clock.now())
        await resume_unfinished(app, operator())
        _, paged = opened_and_paged(app, incident.id)
        assert paged == recovered_at
        assert set(dm_targets(app)) == TIER1
    finally:
        await app.aclose()


async def test_a_critical_loss_in_any_run_pages_every_tier_at_once(tmp_path: Path) -> None:
    """A terminal rollback (no face watching its steps): step 3's 20,000 loss pages everyone."""
    clock = ManualClock()
    settings = make_settings(tmp_path)
    app = Rollbot.open(settings, clock=clock)
    try:
        paper = app.venue("paper")
        assert isinstance(paper, PaperVenue)
        paper.seed(one_stock_book(["80"]))
        paper.advance_prices()  # 1,000 AAPL bought at 100, marked at 80: 20,000 down
        outcome = await Engine(app, Actor(id="alice", source="cli")).rollback("drawdown")
        esc = escalation.get_escalation(app, outcome.incident.id)
        assert esc is not None and esc.critical and esc.loss == 20000
        assert set(dm_targets(app)) == TIER1 | TIER2
        opened, paged = opened_and_paged(app, outcome.incident.id)
        assert paged == opened
    finally:
        await app.aclose()


async def test_the_drill_pages_only_inside_its_sandbox(tmp_path: Path) -> None:
    clock = ManualClock()
    settings = make_settings(tmp_path)
    result = await run_drill(settings, operator(), clock=clock, workdir=tmp_path / "drill")
    drill_db = Database(tmp_path / "drill" / DRILL_DB)
    try:  # the page was rehearsed in the sandbox, at the drill incident's open
        [esc] = drill_db.query("SELECT incident_id, created_at FROM escalations")
        opened = drill_db.one("SELECT opened_at FROM incidents")["opened_at"]
        assert (esc["incident_id"], esc["created_at"]) == (result.outcome.incident.id, opened)
    finally:
        drill_db.close()
    app = Rollbot.open(settings)
    try:
        assert app.db.query("SELECT 1 FROM escalations") == []
        assert outbox(app, kind="dm") == []
    finally:
        app.db.close()


async def test_the_venue_drill_pages_nobody(tmp_path: Path) -> None:
    """A rehearsal of the kill on a paper venue: its incident is real, and nobody is paged."""
    app = Rollbot.open(make_settings(tmp_path))
    try:
        result = await run_venue_drill(app, operator(), "paper")
        assert result.cancelled and result.hold_cleared, result.detail
        assert app.db.query("SELECT 1 FROM escalations") == []
        assert dm_targets(app) == []
    finally:
        await app.aclose()
