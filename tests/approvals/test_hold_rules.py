"""Holds against the ways they were broken from the terminal (issue 14, items 1 and 6), run as
real `rollbot` processes on a real SQLite file and the paper venue: each kill is its own hold, a
clear request clears exactly the holds it named, and live trading is re-armed only by a resume
whose conditions hold for every incident since the last one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from approvals.support import OPERATOR, RISK, make_settings, slack, write_config
from approvals.test_cli import rollbot, small_desk
from approvals.test_resume import RCA
from rollbot.clock import ManualClock
from rollbot.commands.approvals.two_person import Approvals
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.drill import run_drill
from rollbot.commands.rollback.engine import Engine
from rollbot.commands.rollback.rca import record_rca


def state(cfg: Path, scope: str = "global") -> dict:
    """The scope's state and holds as `kill status --json` gives them (read in-process: the
    status face is not what is under test here)."""
    app = Rollbot.open(make_settings(cfg.parent))
    try:
        rows = [r.model_dump(mode="json") for r in app.killswitch.status(app.venue_names)]
    finally:
        app.db.close()
    return next(r for r in rows if r["scope"] == scope)


def live(cfg: Path) -> bool:
    app = Rollbot.open(make_settings(cfg.parent))
    try:
        return app.gates.read().live_allowed
    finally:
        app.db.close()


async def test_a_later_kill_is_its_own_hold_and_an_older_clear_request_never_clears_it(
    tmp_path: Path,
):
    cfg = small_desk(tmp_path)
    assert rollbot(cfg, "alice", "kill", "trigger", "-r", "kill A: runaway algo").returncode == 0
    asked = rollbot(cfg, "alice", "kill", "clear", "-r", "algo A fixed")
    assert asked.returncode == 3, asked.stderr
    assert "clear HALTED hold #1 on global" in asked.stdout

    # between the request and its approval, another person kills for another reason
    assert rollbot(cfg, "bob", "kill", "trigger", "-r", "kill B: fat finger").returncode == 0
    held = state(cfg)
    assert held["state"] == "HALTED"
    assert [h["reason"] for h in held["holds"]] == ["kill A: runaway algo", "kill B: fat finger"]

    # the old request may only clear what it named: the approver is shown B stays
    first = rollbot(cfg, "rita", "approve", "APR-0001")
    assert first.returncode == 1 and "PLAN_CHANGED" in first.stderr, first.stdout + first.stderr
    assert "hold #2 on global stays HALTED" in first.stdout
    assert "global will then be HALTED" in first.stdout
    assert state(cfg)["state"] == "HALTED"

    fresh = rollbot(cfg, "rita", "approve", "APR-0002")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    after = state(cfg)
    assert after["state"] == "HALTED"  # B's reason was never looked at: B still holds
    assert [h["reason"] for h in after["holds"]] == ["kill B: fat finger"]


async def test_a_clear_request_may_name_one_kill_and_clears_only_that_one(tmp_path: Path):
    cfg = small_desk(tmp_path)
    assert rollbot(cfg, "alice", "kill", "trigger", "-r", "kill A: runaway algo").returncode == 0
    assert rollbot(cfg, "bob", "kill", "trigger", "-r", "kill B: wrong button").returncode == 0
    table = rollbot(cfg, "alice", "kill", "status").stdout
    assert "#1 person" in table and "#2 person" in table

    unknown = rollbot(cfg, "bob", "kill", "clear", "--hold", "9", "-r", "typo")
    assert unknown.returncode == 2 and "no active hold #9 on global" in unknown.stderr
    asked = rollbot(cfg, "bob", "kill", "clear", "--hold", "2", "-r", "B was a mistake")
    assert asked.returncode == 3, asked.stderr
    assert "clear HALTED hold #2 on global" in asked.stdout
    assert "hold #1 on global stays HALTED" in asked.stdout
    assert "global will then be HALTED" in asked.stdout

    done = rollbot(cfg, "rita", "approve", "APR-0001")
    assert done.returncode == 0, done.stdout + done.stderr
    after = state(cfg)
    assert after["state"] == "HALTED"
    assert [h["reason"] for h in after["holds"]] == ["kill A: runaway algo"]


async def test_enable_gates_and_clear_hold_cannot_re_arm_live_trading_after_a_kill(
    tmp_path: Path,
):
    cfg = small_desk(tmp_path)
    killed = rollbot(cfg, "alice", "kill", "trigger", "-r", "runaway algo")
    assert killed.returncode == 0, killed.stdout + killed.stderr
    # no 24 h in shadow, no RCA, no drill: two requests a second person approves
    assert rollbot(cfg, "alice", "request", "enable-gates", "-r", "go live").returncode == 3
    assert rollbot(cfg, "alice", "request", "clear-hold", "-r", "all good").returncode == 3

    gates = rollbot(cfg, "rita", "approve", "APR-0001")  # global is still HALTED: nothing armed
    assert gates.returncode == 0, gates.stdout + gates.stderr
    cleared = rollbot(cfg, "rita", "approve", "APR-0002")

    assert cleared.returncode == 1
    assert "RESUME_REQUIRED" in cleared.stderr
    assert "would re-arm live trading" in cleared.stderr
    assert "rollbot resume INC-0001" in cleared.stderr
    assert state(cfg)["state"] == "HALTED"
    assert live(cfg)  # the gates were armed while global stayed HALTED: nothing re-armed


async def test_a_hold_cleared_while_the_gates_are_off_leaves_enabling_them_to_resume(
    tmp_path: Path,
):
    cfg2 = small_desk(tmp_path)
    assert rollbot(cfg2, "alice", "kill", "trigger", "-r", "runaway algo").returncode == 0
    assert rollbot(cfg2, "alice", "request", "clear-hold", "-r", "all good").returncode == 3
    assert rollbot(cfg2, "rita", "approve", "APR-0001").returncode == 0
    asked = rollbot(cfg2, "alice", "request", "enable-gates", "-r", "go live")
    assert asked.returncode == 1, asked.stderr
    assert "would re-arm live trading" in asked.stderr and "rollbot resume INC-0001" in asked.stderr
    assert not live(cfg2)


async def test_resume_of_an_incident_resumed_before_needs_every_newer_incident_ready(
    tmp_path: Path,
):
    cfg = write_config(tmp_path)
    now = datetime.now(UTC)
    clock = ManualClock(now - timedelta(hours=25))
    rb = Rollbot.open(make_settings(tmp_path), clock=clock)
    try:
        first = (await Engine(rb, slack(OPERATOR)).rollback("PnL kill switch -5.2%")).incident.id
        record_rca(rb, first, RCA, slack(RISK))
        clock.set(now - timedelta(minutes=30))
        await run_drill(rb.settings, slack(OPERATOR), clock=clock, workdir=tmp_path / "drill")
        req = await Approvals(rb).request("resume", {"incident_id": first}, slack(OPERATOR), "ok")
        assert (await Approvals(rb).vote(req.id, slack(RISK), "approve")).code == "EXECUTED"
    finally:
        await rb.aclose()
    assert rollbot(cfg, "alice", "kill", "trigger", "-r", "new runaway").returncode == 0

    again = rollbot(cfg, "alice", "resume", first, "--reason", "resume it again")

    assert again.returncode == 1, again.stdout + again.stderr
    assert f"resume of {first} refused" in again.stderr
    assert "INC-0002 (opened since the last resume)" in again.stderr
    assert "root-cause analysis: none recorded for INC-0002" in again.stderr
    assert not live(cfg)
    assert state(cfg)["state"] == "HALTED"
