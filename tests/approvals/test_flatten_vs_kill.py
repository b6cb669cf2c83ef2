"""A flatten against a kill (issue 14, item 4), on a real SQLite file and the paper venue: a kill
set while an approved flatten runs stops it before its next order and says so in its thread; a
flatten only loosens the holds it created; a flatten whose process dies leaves no REDUCING hold
behind once the clock (or the next process) looks."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

from pg_server import read_rows
from terminal_users import as_person

from approvals.support import OPERATOR, RISK, make_settings, slack
from approvals.test_cli import ROLLBOT, rollbot, small_desk
from rollbot.bot.scheduler import Clockwork
from rollbot.clock import ManualClock, parse_iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.engine import Engine
from rollbot.config import DatabaseConfig, PaperVenueConfig
from rollbot.errors import StateUnavailable, StorageError

UNFILLED = """
recheck_interval_s = 0.05
limit_timeout_s = 0.2
timeout_s = {timeout}
"""


def unfilled_desk(tmp_path: Path, timeout: float) -> Path:
    """The small book at a paper venue that fills nothing: each close rests, is cancelled after
    0.2 s and sent again, until the flatten gives up after `timeout` seconds."""
    cfg = small_desk(tmp_path)
    text = cfg.read_text(encoding="utf-8")
    text = text.replace('kind = "paper"', 'kind = "paper"\nfill = "none"', 1)
    text = text.replace("recheck_interval_s = 0.05\n", UNFILLED.format(timeout=timeout), 1)
    cfg.write_text(text, encoding="utf-8")
    return cfg


def approve_in_background(cfg: Path, approval_id: str) -> subprocess.Popen[str]:
    """`rollbot approve` as the risk officer, left running: the approved flatten runs in it."""
    env = {**os.environ, "COLUMNS": "250"}
    env.pop("ROLLBOT_CONFIG", None)
    return subprocess.Popen(
        [ROLLBOT, "--config", str(cfg), "approve", approval_id],
        env=env,
        preexec_fn=as_person("rita"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cfg.parent,
    )


def wait_for(db: DatabaseConfig, sql: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if read_rows(db, sql):
                return
        except (StateUnavailable, StorageError):
            pass  # not created yet
        time.sleep(0.05)
    raise AssertionError(f"never true: {sql}")


def rows(db: DatabaseConfig, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    return read_rows(db, sql, params)


def test_a_kill_stops_an_approved_flatten_before_its_next_order(tmp_path: Path):
    cfg = unfilled_desk(tmp_path, timeout=6)
    db = make_settings(tmp_path).database
    asked = rollbot(cfg, "alice", "request", "flatten", "--venue", "paper", "-r", "close it all")
    assert asked.returncode == 3, asked.stderr
    flatten = approve_in_background(cfg, "APR-0001")
    wait_for(db, "SELECT 1 WHERE (SELECT count(*) FROM order_intents) >= 4")  # resending

    killed = rollbot(cfg, "bob", "kill", "trigger", "-r", "stop everything now")
    out, errs = flatten.communicate(timeout=30)

    assert killed.returncode == 0, killed.stdout + killed.stderr
    [(held_at,)] = rows(
        db, "SELECT at FROM events WHERE kind = 'HOLD_SET' AND incident_id = 'INC-0002'"
    )
    after = [
        r
        for r in rows(db, "SELECT client_order_id, created_at FROM order_intents")
        if parse_iso(str(r[1])) > parse_iso(str(held_at))
    ]
    assert after == [], f"closing orders sent after the kill: {after}"
    assert "STOPPED by kill INC-0002" in out, out + errs
    assert "stop everything now" in out
    [(stopped,)] = rows(
        db, "SELECT reason FROM events WHERE kind = 'FLATTEN_STOPPED' AND incident_id = 'INC-0001'"
    )
    assert "INC-0002" in str(stopped)
    thread = rows(
        db,
        "SELECT payload FROM outbox WHERE kind = 'thread' AND incident_id = 'INC-0001'"
        " AND payload LIKE '%Flatten stopped before its next order%'",
    )
    assert len(thread) == 1
    status = rollbot(cfg, "alice", "kill", "status", "--json").stdout
    assert '"REDUCING"' not in status


async def test_a_flatten_of_one_venue_never_loosens_another_kill_s_hold(tmp_path: Path):
    settings = make_settings(tmp_path)
    settings.venues = [
        PaperVenueConfig(name="paper", book_path=tmp_path / "paper.db", fill="none"),
        PaperVenueConfig(name="paper2", book_path=tmp_path / "paper2.db"),
    ]
    settings.flatten.timeout_s = 5
    clock = ManualClock()
    app = Rollbot.open(settings, clock=clock)
    try:
        killed = await Engine(app, slack(OPERATOR)).kill("global stop")
        (hold,) = app.killswitch.holds.active()
        seen: list[str] = []

        async def guard_meanwhile() -> None:
            while not app.db.query("SELECT 1 FROM order_intents"):
                await asyncio.sleep(0)
            # a reducing order at the other venue, while paper is being flattened
            seen.append(app.killswitch.check_order("paper2", "AAPL", "SELL", 1, position=10).code)
            seen.append(app.killswitch.state_of(["global"]).value)

        watcher = asyncio.create_task(guard_meanwhile())
        outcome = await Engine(app, slack(RISK)).flatten("close paper", venue="paper")
        await watcher
        moved = [e for e in app.events.list(kinds=["HOLD_STATE"]) if e.data["hold_id"] == hold.id]
    finally:
        await app.aclose()

    assert killed.incident.id != outcome.incident.id
    assert seen == ["HALTED", "HALTED"]  # the other venue stayed HALTED throughout
    assert moved == []  # the global kill's hold was never touched


def test_holds_a_dead_flatten_loosened_are_halted_again_by_the_clock(tmp_path: Path):
    cfg = unfilled_desk(tmp_path, timeout=60)
    db = make_settings(tmp_path).database
    assert rollbot(cfg, "alice", "request", "flatten", "-r", "close it all").returncode == 3
    flatten = approve_in_background(cfg, "APR-0001")
    wait_for(db, "SELECT 1 FROM holds WHERE state = 'REDUCING'")
    os.kill(flatten.pid, signal.SIGKILL)
    flatten.wait(timeout=10)
    assert rows(db, "SELECT state FROM holds WHERE cleared_at IS NULL") == [("REDUCING",)]

    async def clock_starts() -> None:
        app = Rollbot.open(make_settings(tmp_path))
        clockwork = Clockwork(app)
        try:
            await clockwork.start()
        finally:
            clockwork.shutdown()
            await app.aclose()

    asyncio.run(clock_starts())

    assert rows(db, "SELECT state FROM holds WHERE cleared_at IS NULL") == [("HALTED",)]
    guard = rollbot(
        cfg,
        "alice",
        "guard",
        "check",
        "--venue",
        "paper",
        "--symbol",
        "AAPL",
        "--side",
        "SELL",
        "--quantity",
        "1",
        "--position",
        "10",
    )
    assert guard.returncode == 1 and "REFUSED HALTED" in guard.stdout, guard.stdout
