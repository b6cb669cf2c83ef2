"""Holds against the ways they were broken from the terminal (issue 14, items 1 and 6), run as
real `rollbot` processes on a real SQLite file and the paper venue: each kill is its own hold, a
clear request clears exactly the holds it named, and live trading is re-armed only by a resume
whose conditions hold for every incident since the last one."""

from __future__ import annotations

import json
from pathlib import Path

from approvals.test_cli import rollbot, small_desk


def state(cfg: Path, scope: str = "global") -> dict:
    rows = json.loads(rollbot(cfg, "alice", "kill", "status", "--json").stdout)
    return next(r for r in rows if r["scope"] == scope)


async def test_a_later_kill_is_its_own_hold_and_an_older_clear_request_never_clears_it(
    tmp_path: Path,
):
    cfg = small_desk(tmp_path)
    assert rollbot(cfg, "alice", "kill", "trigger", "-r", "kill A: runaway algo").returncode == 0
    asked = rollbot(cfg, "alice", "kill", "clear", "-r", "algo A fixed")
    assert asked.returncode == 0, asked.stderr
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
