"""A person's REDUCING hold (issue 16 item 7): `rollbot kill trigger --reducing` at the
terminal, through the console script's fast path and the full CLI alike, as real people (real
uids). Only orders that shrink a position pass the guard; the stricter hold wins whichever came
first; a REDUCING hold is cleared like any hold (a request, a second person's approval); bad
input stores nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from approvals.support import make_settings, write_config
from terminal_users import as_person
from terminal_users import tmp_path as tmp_path  # reachable by the people's own uids

from rollbot.bot.breakglass import kill_args
from rollbot.bot.cli.glass import break_glass
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.fast_hold import read_kill_config, store_kill_hold
from rollbot.commands.killswitch.trading_state import TradingState
from rollbot.commands.rollback.held_incident import store_held_incident
from rollbot.config import Settings
from rollbot.storage.events import Actor

SCRIPT = str(Path(sys.executable).with_name("rollbot"))  # the console script: fast path first
FULL = [sys.executable, "-m", "rollbot.bot.cli"]  # the typer CLI alone


def run(
    cfg: Path, person: str, *args: str, script: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("ROLLBOT_CONFIG", None)
    return subprocess.run(
        [*([SCRIPT] if script else FULL), "--config", str(cfg), *args],
        env=env,
        preexec_fn=as_person(person),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cfg.parent,
    )


def guard(cfg: Path, side: str, quantity: int, symbol: str = "AAPL") -> str:
    """`rollbot guard check`'s verdict line, as a trading system's operator reads it."""
    done = run(
        cfg, "alice", "guard", "check", "--venue", "paper", "--symbol", symbol, "--side", side,
        "--quantity", str(quantity),
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return " ".join(done.stdout.split())


def status(cfg: Path) -> dict[str, Any]:
    done = run(cfg, "alice", "kill", "status", "--json")
    assert done.returncode == 0, done.stderr
    return {row["scope"]: row for row in json.loads(done.stdout)}


def test_kill_args_take_reducing_on_the_fast_path() -> None:
    assert kill_args(["kill", "trigger", "--reducing", "-r", "exits only"]) == {
        "reason": "exits only",
        "state": "REDUCING",
    }
    assert kill_args(["kill", "trigger", "--reducing", "--reducing", "-r", "x"]) is None
    assert kill_args(["kill", "trigger", "--reducing"]) is None  # no reason: the full CLI says so


@pytest.mark.parametrize("script", [True, False], ids=["console-script", "full-cli"])
def test_a_reducing_kill_at_the_terminal_lets_only_exits_through(
    tmp_path: Path, script: bool
) -> None:
    """The paper book is long 400 AAPL: selling 100 reduces it, buying adds, selling 500 flips."""
    cfg = write_config(tmp_path)
    done = run(
        cfg, "alice", "kill", "trigger", "--reducing", "--scope", "paper",
        "--reason", "exits only", script=script,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "REDUCING" in done.stdout
    row = status(cfg)["venue:paper"]
    assert row["state"] == "REDUCING"
    assert [h["state"] for h in row["holds"]] == ["REDUCING"]

    assert guard(cfg, "SELL", 100).startswith("ALLOWED OK_REDUCES (state REDUCING)")
    assert guard(cfg, "BUY", 1).startswith("REFUSED REDUCING_INCREASES (state REDUCING)")
    assert guard(cfg, "SELL", 500).startswith("REFUSED REDUCING_FLIPS (state REDUCING)")

    app = Rollbot.open(make_settings(tmp_path))
    try:  # step 2 checked the hold asked for: REDUCING, not a failure for want of HALTED
        steps = app.events.list(kinds=["STEP_ENDED"])
        assert [e.data["status"] for e in steps] == ["SUCCESS", "SUCCESS"], steps
        assert steps[0].data["actions"][0].startswith("Kill switch held REDUCING on venue:paper")
    finally:
        app.db.close()


def test_the_stricter_hold_wins_whichever_came_first_and_clearing_reducing_keeps_halted(
    tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path)
    halted = run(cfg, "alice", "kill", "trigger", "--scope", "paper", "--reason", "full stop")
    assert halted.returncode == 0, halted.stderr
    reducing = run(
        cfg, "alice", "kill", "trigger", "--reducing", "--scope", "paper", "--reason", "exits"
    )
    assert reducing.returncode == 0, reducing.stderr
    row = status(cfg)["venue:paper"]
    assert row["state"] == "HALTED"  # a REDUCING kill after a HALTED one loosens nothing
    assert sorted(h["state"] for h in row["holds"]) == ["HALTED", "REDUCING"]
    assert guard(cfg, "SELL", 100).startswith("REFUSED HALTED")

    hold = next(h["id"] for h in row["holds"] if h["state"] == "REDUCING")
    asked = run(
        cfg, "alice", "kill", "clear", "--scope", "paper", "--hold", str(hold), "-r", "exits done"
    )
    assert "APR-0001" in asked.stdout, asked.stdout + asked.stderr
    approved = run(cfg, "rita", "approve", "APR-0001")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    row = status(cfg)["venue:paper"]
    assert [h["state"] for h in row["holds"]] == ["HALTED"]  # the HALTED one stays in force
    assert row["state"] == "HALTED"
    assert guard(cfg, "SELL", 100).startswith("REFUSED HALTED")


def test_a_halted_kill_after_a_reducing_one_halts_the_scope(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    for args in (("--reducing", "--reason", "exits"), ("--reason", "full stop")):
        done = run(cfg, "alice", "kill", "trigger", "--scope", "paper", *args)
        assert done.returncode == 0, done.stderr
    row = status(cfg)["venue:paper"]
    assert row["state"] == "HALTED"
    assert sorted(h["state"] for h in row["holds"]) == ["HALTED", "REDUCING"]
    assert guard(cfg, "SELL", 100).startswith("REFUSED HALTED")


def test_bad_input_to_a_reducing_kill_says_what_and_stores_nothing(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    for args, said in [
        (("--reducing", "--scope", "venue:nope", "--reason", "x"), "unknown venue 'nope'"),
        (("--reducing", "--reason", " "), "--reason"),
        (("--reducing",), "--reason"),
    ]:
        for script in (True, False):
            done = run(cfg, "alice", "kill", "trigger", *args, script=script)
            text = " ".join((done.stdout + done.stderr).split())
            assert done.returncode == 2, text
            assert said in text, text
            assert "Traceback" not in text
    app = Rollbot.open(make_settings(tmp_path))
    try:
        assert app.db.query("SELECT * FROM holds") == []
        assert app.db.query("SELECT * FROM incidents") == []
    finally:
        app.db.close()


def test_the_fast_hold_writes_a_reducing_kill_as_the_full_path_does(
    settings: Settings, tmp_path: Path, write_config: Any
) -> None:
    from test_fast_hold import rows

    desks = []
    for name in ("full", "fast"):
        s = settings.model_copy(
            update={"database": settings.database.model_copy(update={"path": tmp_path / name})}
        )
        rb = Rollbot.open(s, clock=ManualClock())
        desks.append((rb, write_config(s, f"{name}.toml")))
    (full, _), (fast, fast_config) = desks
    try:
        who = Actor.terminal(None, full.settings.identities)
        store_held_incident(
            full,
            who,
            kind="kill",
            reason="exits only",
            scope_text="paper",
            also=lambda: break_glass(full, who, "kill trigger", "exits only"),
            hold_state=TradingState.REDUCING,
        )
        config = read_kill_config(str(fast_config))
        assert config is not None
        assert store_kill_hold(config, "exits only", "paper", "REDUCING") == "INC-0001"
        assert rows(fast.settings.database.path) == rows(full.settings.database.path)
        assert [h.state for h in fast.killswitch.holds.active()] == ["REDUCING"]
    finally:
        full.db.close()
        fast.db.close()
