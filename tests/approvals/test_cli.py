"""The terminal face of the two-person rule, run as real `rollbot` processes: each OS user is a
person (a real uid, see terminal_users.py), mapped to a Slack ID by [identities] in rollbot.toml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from terminal_users import as_person

from approvals.support import OPERATOR, make_settings, slack, write_config
from rollbot.clock import ManualClock
from rollbot.commands.approvals.two_person import Approvals
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.drill import run_drill
from rollbot.commands.rollback.engine import Engine

ROLLBOT = str(Path(sys.executable).parent / "rollbot")
SMALL_BOOK = """
name = "small"
[account]
cash = 100000
[[positions]]
symbol = "AAPL"
quantity = 10
avg_price = 190
mark = 189
[[positions]]
symbol = "MSFT"
quantity = -5
avg_price = 410
mark = 412
"""


def rollbot(cfg: Path, person: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("ROLLBOT_CONFIG", None)
    return subprocess.run(
        [ROLLBOT, "--config", str(cfg), *args],
        env=env,
        preexec_fn=as_person(person),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cfg.parent,
    )


def small_desk(tmp_path: Path, extra: str = "") -> Path:
    book = tmp_path / "book.toml"
    book.write_text(SMALL_BOOK, encoding="utf-8")
    return write_config(tmp_path, scenario=book, extra=extra)


async def positions(tmp_path: Path) -> list[str]:
    rb = Rollbot.open(make_settings(tmp_path))
    try:
        return sorted(p.symbol for p in await rb.venue("paper").positions())
    finally:
        await rb.aclose()


async def test_flatten_confirm_asks_and_a_second_person_runs_it(tmp_path: Path):
    cfg = small_desk(tmp_path)

    asked = rollbot(
        cfg, "alice", "flatten", "--venue", "paper", "--confirm", "-r", "stop the bleeding"
    )

    assert asked.returncode == 3, asked.stderr  # filed: waiting for a second person
    assert "Approval request APR-0001" in asked.stdout
    assert "paper: SELL 10 AAPL MARKET" in asked.stdout
    assert "paper: BUY 5 MSFT MARKET" in asked.stdout
    assert "nothing ran" in asked.stderr
    assert await positions(tmp_path) == ["AAPL", "MSFT"]

    own = rollbot(cfg, "alice", "approve", "APR-0001")
    assert own.returncode == 1 and "SELF_APPROVAL" in own.stderr
    outsider = rollbot(cfg, "mallory", "approve", "APR-0001")
    assert outsider.returncode == 1 and "ROLE_NOT_ALLOWED" in outsider.stderr
    assert await positions(tmp_path) == ["AAPL", "MSFT"]

    done = rollbot(cfg, "bob", "approve", "APR-0001")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "APR-0001 approved and executed" in done.stdout
    assert "Step 4 Flatten Positions: SUCCESS" in done.stdout
    assert await positions(tmp_path) == []
    listed = rollbot(cfg, "bob", "approvals", "APR-0001", "--json")
    [row] = json.loads(listed.stdout)
    assert row["status"] == "EXECUTED" and row["requested_by"] == OPERATOR
    assert [(v["voter"], v["vote"]) for v in row["votes"]] == [("U0OPERATOR2", "approve")]


async def test_slack_request_refused_to_the_same_person_at_the_terminal(tmp_path: Path):
    cfg = small_desk(tmp_path)
    rollbot(cfg, "alice", "positions")  # seeds the small book through the config
    rb = Rollbot.open(make_settings(tmp_path))
    try:
        req = await Approvals(rb).request(
            "flatten", {"venue": "paper"}, slack(OPERATOR), "from Slack"
        )
    finally:
        await rb.aclose()

    own = rollbot(cfg, "alice", "approve", req.id)  # alice is U0OPERATOR

    assert own.returncode == 1 and "SELF_APPROVAL" in own.stderr
    assert "a second person must approve" in own.stderr
    done = rollbot(cfg, "rita", "approve", req.id)
    assert done.returncode == 0 and await positions(tmp_path) == []


async def test_deny_at_the_terminal_is_final_and_needs_a_reason(tmp_path: Path):
    cfg = small_desk(tmp_path)
    rollbot(cfg, "alice", "flatten", "--confirm")

    blank = rollbot(cfg, "rita", "deny", "APR-0001", "--reason", "  ")
    assert blank.returncode == 2 and "--reason" in blank.stderr
    denied = rollbot(cfg, "rita", "deny", "APR-0001", "--reason", "not now [see #ops]")
    assert denied.returncode == 0 and "APR-0001 denied" in denied.stdout
    shown = rollbot(cfg, "bob", "approvals", "APR-0001").stdout
    assert "DENIED by <@U0RISK>" in shown and "Denied: not now [see #ops]" in shown
    late = rollbot(cfg, "bob", "approve", "APR-0001")
    assert late.returncode == 1 and "ALREADY_DECIDED" in late.stderr
    assert await positions(tmp_path) == ["AAPL", "MSFT"]
    unknown = rollbot(cfg, "bob", "approve", "APR-0404")
    assert unknown.returncode == 2 and "unknown approval 'APR-0404'" in unknown.stderr


async def test_expired_request_cannot_be_approved(tmp_path: Path):
    cfg = small_desk(tmp_path, extra="[approvals]\nexpiry_minutes = 0.002\n")  # 120 ms
    rollbot(cfg, "alice", "flatten", "--confirm")
    time.sleep(0.2)

    late = rollbot(cfg, "bob", "approve", "APR-0001")

    assert late.returncode == 1 and "EXPIRED" in late.stderr
    assert "EXPIRED" in rollbot(cfg, "bob", "approvals").stdout
    assert await positions(tmp_path) == ["AAPL", "MSFT"]


async def test_kill_clear_and_rollback_at_the_terminal_wait_for_a_second_person(tmp_path: Path):
    cfg = small_desk(tmp_path)
    assert rollbot(cfg, "alice", "kill", "trigger", "--reason", "runaway algo").returncode == 0

    asked = rollbot(cfg, "alice", "kill", "clear", "--reason", "algo fixed")

    assert asked.returncode == 3 and "Clear kill-switch hold" in asked.stdout
    assert "clear HALTED hold #1 on global" in asked.stdout
    status = json.loads(rollbot(cfg, "alice", "kill", "status", "--json").stdout)
    assert status[0]["state"] == "HALTED"
    operator = rollbot(cfg, "bob", "approve", "APR-0001")
    assert operator.returncode == 1 and "ROLE_NOT_ALLOWED" in operator.stderr
    cleared = rollbot(cfg, "rita", "approve", "APR-0001")
    assert cleared.returncode == 0 and "global is now ACTIVE" in cleared.stdout
    status = json.loads(rollbot(cfg, "alice", "kill", "status", "--json").stdout)
    assert status[0]["state"] == "ACTIVE"

    rollback = rollbot(cfg, "alice", "rollback", "--reason", "drawdown", "--confirm")
    assert rollback.returncode == 3 and "APR-0002" in rollback.stdout
    assert "Step 1 Immediate Halt" in rollback.stdout
    assert await positions(tmp_path) == ["AAPL", "MSFT"]  # nothing ran


async def test_rca_and_resume_at_the_terminal(tmp_path: Path):
    cfg = write_config(tmp_path)
    now = datetime.now(UTC)
    clock = ManualClock(now - timedelta(hours=25))  # the incident happened yesterday
    rb = Rollbot.open(make_settings(tmp_path), clock=clock)
    try:
        await Engine(rb, slack(OPERATOR)).rollback("PnL kill switch -5.2%")
        clock.set(now - timedelta(minutes=30))
        await run_drill(rb.settings, slack(OPERATOR), clock=clock, workdir=tmp_path / "drill")
    finally:
        await rb.aclose()

    refused = rollbot(cfg, "alice", "resume", "INC-0001", "--reason", "fixed")
    assert refused.returncode == 1 and "resume of INC-0001 refused" in refused.stderr
    assert "root-cause analysis: none recorded for INC-0001" in refused.stderr
    assert "minimum time" not in refused.stderr and "drill:" not in refused.stderr

    partial = tmp_path / "rca.yaml"
    partial.write_text("timeline: x\nlessons_learned: y\n", encoding="utf-8")
    bad = rollbot(cfg, "alice", "rca", "INC-0001", "--file", str(partial))
    assert bad.returncode == 2 and "root_cause: missing" in bad.stderr
    full = tmp_path / "rca.toml"
    full.write_text(
        'timeline = ["12:00 TSLA -8%", "12:03 kill switch"]\n'
        'root_cause = "sizing"\ncontributing_factors = "VIX 35"\n'
        'lessons_learned = "cap at 25%"\nrecommended_actions = "BOX_LIM 0.15"\n',
        encoding="utf-8",
    )
    recorded = rollbot(cfg, "alice", "rca", "INC-0001", "--file", str(full))
    assert recorded.returncode == 0 and "Every resume condition holds" in recorded.stdout

    asked = rollbot(cfg, "alice", "resume", "INC-0001", "--reason", "fixed and drilled")
    assert asked.returncode == 3 and "Resume live trading" in asked.stdout
    operator = rollbot(cfg, "bob", "approve", "APR-0001")
    assert operator.returncode == 1 and "ROLE_NOT_ALLOWED" in operator.stderr
    done = rollbot(cfg, "rita", "approve", "APR-0001")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "live trading ENABLED" in done.stdout

    rb = Rollbot.open(make_settings(tmp_path))
    try:
        assert rb.gates.read().live_allowed
        assert rb.killswitch.state_of(["global"]).value == "ACTIVE"
    finally:
        await rb.aclose()


async def test_exit_code_3_means_waiting_for_another_person_until_the_last_sign_off(
    tmp_path: Path,
):
    """0 done, 1 refused, 2 bad input, 3 waiting: a script that files a request (or signs one
    that needs more) must be able to tell 'nothing ran yet' from done and from refused."""
    cfg = small_desk(
        tmp_path,
        extra='[approvals.clear_hold]\nroles = ["operator", "risk_officer"]\nquorum = 2\n',
    )
    assert rollbot(cfg, "alice", "kill", "trigger", "--reason", "runaway algo").returncode == 0

    filed = rollbot(cfg, "alice", "request", "clear-hold", "--reason", "algo fixed")
    signed = rollbot(cfg, "bob", "approve", "APR-0001")  # one of two: still waiting
    held = json.loads(rollbot(cfg, "alice", "kill", "status", "--json").stdout)[0]["state"]
    done = rollbot(cfg, "rita", "approve", "APR-0001")
    refused = rollbot(cfg, "rita", "approve", "APR-0001")

    assert filed.returncode == 3 and "nothing ran" in filed.stderr, filed.stderr
    assert signed.returncode == 3 and "approval recorded (1 of 2)" in signed.stdout, signed.stdout
    assert held == "HALTED"
    assert done.returncode == 0 and "global is now ACTIVE" in done.stdout, done.stdout
    assert refused.returncode == 1
    usage = subprocess.run([ROLLBOT, "--help"], capture_output=True, text=True, timeout=60)
    assert "3 request filed, waiting for a second person" in " ".join(usage.stdout.split())
