"""The break-glass CLI, run as real processes: durable holds, exit codes, bad input changes nothing.

Each subprocess costs a Python start; the tests share them where a story allows.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from rollbot.commands.approvals.two_person import Approvals
from rollbot.commands.desk.context import Rollbot
from rollbot.config import DatabaseConfig, Settings
from rollbot.storage.events import Actor

Run = Callable[..., CompletedProcess[str]]  # the `rollbot` fixture
RISK = Actor(id="U0RISK", source="slack")  # a risk_officer in the `settings` fixture
GUARD_BUY = ("guard", "check", "--venue", "paper", "--symbol", "AAPL", "--side", "BUY")
GUARD_SELL_REDUCING = (*GUARD_BUY[:-1], "SELL", "--quantity", "5", "--position", "10")


def flat(text: str) -> str:
    """Whitespace-normalised output: rich wraps long lines."""
    return " ".join(text.split())


def snapshot(app: Rollbot) -> dict[str, Any]:
    """Everything a bad command could have changed: events, holds, incidents, the paper book,
    the gates files."""
    book = app.venue("paper").book  # type: ignore[attr-defined]
    paths = app.settings.paths
    return {
        "events": app.db.query("SELECT id, kind FROM events ORDER BY id"),
        "holds": app.db.query("SELECT * FROM holds ORDER BY id"),
        "incidents": app.db.query("SELECT id, status FROM incidents"),
        "approvals": app.db.query("SELECT id, status FROM approvals"),
        "orders": book.db.query("SELECT order_id, status, filled FROM orders ORDER BY order_id"),
        "positions": book.db.query("SELECT * FROM positions ORDER BY symbol"),
        "gates": [p.read_text("utf-8") if p.exists() else None for p in (paths.live_environment,)],
    }


async def test_a_kill_switch_hold_survives_a_process_restart(
    app: Rollbot, rollbot: Run, config_file: Path, tmp_path: Path
) -> None:
    trigger = rollbot("kill", "trigger", "--reason", "X", script=True)  # the console script
    assert trigger.returncode == 0, trigger.stdout + trigger.stderr
    assert "INC-0001 kill: SUCCESS" in trigger.stdout

    status = rollbot("kill", "status", "--json")  # a new process reads the stored hold
    assert status.returncode == 0, status.stderr
    scopes = {s["scope"]: s for s in json.loads(status.stdout)}
    assert scopes["global"]["state"] == "HALTED"
    assert [h["reason"] for h in scopes["global"]["holds"]] == ["X"]
    assert scopes["venue:paper"]["state"] == "HALTED"  # governed by the global hold

    refused = rollbot(*GUARD_SELL_REDUCING)
    assert refused.returncode == 1
    assert "REFUSED HALTED" in refused.stdout

    # clearing takes a second person: the terminal files the request, a risk officer approves
    asked = rollbot("kill", "clear", "--reason", "Y")
    assert asked.returncode == 3, asked.stdout + asked.stderr  # filed, nothing ran
    assert app.killswitch.state_of(["global"]).value == "HALTED"  # nothing ran yet
    (pending,) = Approvals(app).list(pending_only=True)
    vote = await Approvals(app).vote(pending.id, RISK, "approve")
    assert vote.executed, vote.message

    allowed = rollbot(*GUARD_SELL_REDUCING)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "ALLOWED OK_REDUCES (state ACTIVE)" in allowed.stdout
    assert app.killswitch.holds.active() == []
    (cleared,) = app.events.list(kinds=["HOLD_CLEARED"])
    assert cleared.scope == "global" and cleared.reason.startswith("Y (approval")  # type: ignore[union-attr]

    # --config reaches commands registered from other modules under `python -m` too
    listed = rollbot(
        "--config", str(config_file), "approvals", env={"ROLLBOT_CONFIG": str(tmp_path / "no")}
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert pending.id in listed.stdout

    glass = app.events.list(kinds=["BREAK_GLASS"])
    assert [(g.data["command"], g.reason, g.source) for g in glass] == [
        ("kill trigger", "X", "cli")
    ]
    assert (glass[0].data["os_user"], glass[0].data["host"]) == (
        pwd.getpwuid(os.getuid()).pw_name,
        socket.gethostname(),
    )


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("positions", "--venue", "nope"), "unknown venue 'nope' (configured: paper)"),
        ((*GUARD_BUY[:3], "nope", *GUARD_BUY[4:], "--quantity", "1"), "unknown venue 'nope'"),
        (("flatten", "--symbol", "NOPE", "--confirm"), "unknown symbol(s) NOPE"),
        ((*GUARD_BUY, "--quantity", "-5"), "--quantity must be positive, got '-5'"),
        ((*GUARD_BUY, "--quantity", "abc"), "--quantity must be a number, got 'abc'"),
        (("kill", "trigger"), "Missing option '--reason'"),
    ],
    ids=["positions-venue", "guard-venue", "flatten-symbol", "negative", "non-numeric", "reason"],
)
def test_bad_input_exits_2_names_the_problem_and_changes_nothing(
    app: Rollbot, rollbot: Run, args: tuple[str, ...], problem: str
) -> None:
    before = snapshot(app)
    result = rollbot(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert problem in flat(result.stderr)
    assert "Traceback" not in result.stderr
    assert snapshot(app) == before


def test_an_invalid_or_unreadable_config_exits_2_before_anything_runs(
    app: Rollbot, rollbot: Run, tmp_path: Path
) -> None:
    before = snapshot(app)
    invalid = tmp_path / "invalid.toml"
    invalid.write_text(
        f'[database]\npath = "{tmp_path / "other.db"}"\n\n[flatten]\ntimeout_s = -1\n', "utf-8"
    )
    result = rollbot("--config", str(invalid), "kill", "trigger", "--reason", "X")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"invalid config {invalid}" in flat(result.stderr)
    assert "flatten.timeout_s: Input should be greater than 0" in flat(result.stderr)

    unreadable = tmp_path / "unreadable.toml"
    unreadable.write_bytes(b"\xff\xfe not utf-8 \x00")
    result = rollbot("kill", "trigger", "--reason", "X", env={"ROLLBOT_CONFIG": str(unreadable)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"config file {unreadable} cannot be read" in flat(result.stderr)

    assert not (tmp_path / "other.db").exists() and not (tmp_path / "var").exists()
    assert snapshot(app) == before


def test_a_locked_database_never_blocks_the_guard(
    app: Rollbot, settings: Settings, write_config: Callable[..., Path], rollbot: Run
) -> None:
    """(A kill under the lock cancels at once and stores its hold when it can:
    tests/test_kill_never_waits.py.)"""
    impatient = settings.model_copy(
        update={"database": DatabaseConfig(path=settings.database.path, busy_timeout_ms=100)}
    )
    config = write_config(impatient, "impatient.toml")
    before = snapshot(app)
    locker = sqlite3.connect(settings.database.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        env = {"ROLLBOT_CONFIG": str(config)}
        guard = rollbot(*GUARD_BUY, "--quantity", "1", env=env)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert guard.returncode == 1, guard.stdout + guard.stderr  # reads never wait for a writer
    assert "REFUSED LIVE_GATES_DISABLED" in guard.stdout
    assert snapshot(app) == before


def test_a_corrupt_database_exits_2_and_is_left_alone(settings: Settings, rollbot: Run) -> None:
    garbage = b"\x00garbage, not SQLite\xff" * 512
    settings.database.path.write_bytes(garbage)
    killed = rollbot("kill", "trigger", "--reason", "X")
    guard = rollbot(*GUARD_SELL_REDUCING)
    assert killed.returncode == 2, killed.stdout + killed.stderr
    assert f"database {settings.database.path} is corrupt" in flat(killed.stderr)
    assert guard.returncode == 1, guard.stdout + guard.stderr  # the guard refuses: fail closed
    assert "REFUSED STATE_UNAVAILABLE" in guard.stdout
    assert f"database {settings.database.path} is corrupt" in flat(guard.stdout)
    assert settings.database.path.read_bytes() == garbage


def test_cancel_all_is_break_glass_and_says_what_remains(app: Rollbot, rollbot: Run) -> None:
    result = rollbot("cancel-all")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "paper: 24 of 24 cancelled; 0 remain" in result.stdout
    kinds = [e.kind for e in app.events.list()]
    assert kinds == ["BREAK_GLASS", "ORDERS_CANCELLED"]
    glass = app.events.list(kinds=["BREAK_GLASS"])[0]
    assert glass.data == {
        "command": "cancel-all",
        "os_user": pwd.getpwuid(os.getuid()).pw_name,
        "host": socket.gethostname(),
        "uid": os.getuid(),
    }


def test_clock_logs_json_lines_without_the_schedulers_chatter(rollbot: Any) -> None:
    """APScheduler logged two INFO lines a second (~170k a day), with no level or JSON option."""
    import signal
    import time

    bad = rollbot("clock", "--log-level", "LOUD")
    assert bad.returncode == 2 and "--log-level 'LOUD' is not a level" in bad.stderr

    proc = rollbot.popen("clock", "--log-json")
    try:
        assert proc.stdout is not None
        assert "rollbot clock ready" in proc.stdout.readline()
        time.sleep(2.5)  # the sync job runs every second: two lines a run before this change
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.strip().startswith("{")]
    others = [line for line in err.splitlines() if line.strip() and not line.startswith("{")]
    assert others == ["rollbot clock stopping…"], others  # the one plain sentence for a person
    assert lines and all({"at", "level", "logger", "message"} <= set(line) for line in lines)
    assert not [line for line in lines if line["logger"].startswith("apscheduler")]


def test_tables_wrap_when_piped_instead_of_cutting_the_reason(
    rollbot: Any, config_file: Path, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    reason = "venue feed frozen " + " ".join(f"word{i:02d}" for i in range(30)) + " end-of-reason"
    assert rollbot("kill", "trigger", "--reason", reason).returncode in (0, 1)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "ROLLBOT_CONFIG")}
    piped = subprocess.run(
        [sys.executable, "-m", "rollbot.bot.cli", "--config", str(config_file), "kill", "status"],
        env={**env, "NO_COLOR": "1"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.returncode == 0, piped.stderr
    assert "…" not in piped.stdout
    assert all(len(line) <= 80 for line in piped.stdout.splitlines())
    shown = "".join(ch for ch in piped.stdout if ch.isalnum())
    assert "".join(ch for ch in reason if ch.isalnum()) in shown.replace("│", "")
