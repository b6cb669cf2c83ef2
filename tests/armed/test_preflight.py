"""Armed status (issue 17): `rollbot preflight` and the same checks on the clock. Each check is
shown failing and recovering: at the terminal (exit code and table), as one ops-channel alert
per change, and through scheduled drills on a manual clock."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from rollbot.bot.scheduler import Clockwork
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.risk import preflight
from rollbot.commands.rollback import drill_schedule
from rollbot.config import DrillsConfig, PreflightConfig, Settings
from rollbot.storage.events import Actor
from rollbot.storage.timers import Timers

SYSTEM = Actor(id="rollbot", source="system")


def channel_posts(rb: Rollbot) -> list[str]:
    rows = rb.db.query("SELECT payload FROM outbox WHERE kind = 'channel' ORDER BY id")
    return [json.loads(r["payload"]).get("text", "") for r in rows]


def by_name(checks: list[preflight.Check]) -> dict[str, preflight.Check]:
    return {c.name: c for c in checks}


def test_preflight_at_the_terminal_fails_then_passes(rollbot, tmp_path: Path):
    fresh = rollbot("preflight")
    assert fresh.returncode == 1, fresh.stdout + fresh.stderr
    rows = {line.split("│")[1].strip(): line for line in fresh.stdout.splitlines() if "│" in line}
    assert "FAIL" in rows["gates"] and "rollbot gates disable --confirm" in rows["gates"]
    assert "FAIL" in rows["monitor_lease"] and "rollbot clock" in rows["monitor_lease"]
    assert "FAIL" in rows["drill"] and "no drill has passed yet" in rows["drill"]
    for ok in ("venue:paper", "database", "disk"):
        assert "PASS" in rows[ok], rows[ok]
    assert "Not armed: 3 of 6 checks fail." in fresh.stdout

    assert rollbot("gates", "disable", "--confirm").returncode == 0
    assert rollbot("drill").returncode == 0
    as_json = json.loads(rollbot("preflight", "--json").stdout)
    left = {c["name"] for c in as_json if not c["ok"]}
    assert left == {"monitor_lease"}  # no serve or clock is running


async def test_clock_alerts_once_per_change_and_recovers(settings: Settings, tmp_path: Path):
    clock = ManualClock()
    rb = Rollbot.open(settings, clock=clock)
    try:
        work = Clockwork(rb)
        await work.risk_tick()  # this process holds the monitor's lease
        rb.gates.disable(SYSTEM, "safe state")
        first = by_name(await work.preflight())
        assert first["monitor_lease"].ok and first["gates"].ok and not first["drill"].ok
        assert await work.preflight()  # the same failure again: no second alert
        alerts = [t for t in channel_posts(rb) if "Armed status" in t]
        assert alerts == [
            "🔴 Armed status: drill FAILED: no drill has passed yet. What to do: run"
            " `rollbot drill` (or wait for the scheduled one)."
        ]
        kinds = [e.kind for e in rb.events.list(kinds=["ARMED_CHECK_FAILED"])]
        assert kinds == ["ARMED_CHECK_FAILED"]

        # the disk threshold: above what is free fails, back to normal recovers
        rb.settings = settings.model_copy(update={"preflight": PreflightConfig(min_free_mb=10**12)})
        disk = by_name(await work.preflight())["disk"]
        assert not disk.ok and "below the 1,000,000,000,000 MiB threshold" in disk.reason
        rb.settings = settings
        assert by_name(await work.preflight())["disk"].ok
        posts = channel_posts(rb)
        assert sum("disk FAILED" in p for p in posts) == 1
        assert sum("disk passes again" in p for p in posts) == 1

        # the lease lost: its holder stopped renewing for longer than its 3 intervals
        clock.advance(seconds=3 * settings.kill_switches.interval_s + 1)
        lease = by_name(await preflight.run_checks(rb))["monitor_lease"]
        assert not lease.ok and "ran out" in lease.reason
        assert preflight.latest(rb)  # what /healthz, /metrics and the App Home read
    finally:
        work.shutdown()
        await rb.aclose()


async def test_gates_unwritable_and_database_locked_fail(settings: Settings, tmp_path: Path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the gates' folder should be", encoding="utf-8")
    paths = settings.paths.model_copy(
        update={
            "live_environment": blocker / "live_environment.toml",
            "shadow_config": blocker / "shadow_config.toml",
        }
    )
    rb = Rollbot.open(settings.model_copy(update={"paths": paths}))
    try:
        gates = preflight.check_gates(rb)
        assert not gates.ok and "cannot be read" in gates.reason
        with rb.db.write():  # another writer holds the lock for the whole check
            locked = preflight.check_database(rb)
        assert not locked.ok and "cannot take the write lock" in locked.reason
        assert preflight.check_database(rb).ok
    finally:
        await rb.aclose()


async def test_scheduled_drill_fires_on_the_clock_and_posts_its_report(
    settings: Settings, tmp_path: Path
):
    clock = ManualClock()  # 2026-01-05 12:00 UTC; the default schedule is 06:00 on the 1st
    rb = Rollbot.open(settings, clock=clock)
    try:
        work = Clockwork(rb)
        timer = drill_schedule.ensure_scheduled(rb)
        assert timer is not None and timer.due_at.isoformat() == "2026-02-01T06:00:00+00:00"
        assert drill_schedule.ensure_scheduled(rb).id == timer.id  # one pending, not two

        clock.set(timer.due_at + timedelta(seconds=1))
        fired = await work.run_due(via="manual")
        assert [f.timer.kind for f in fired] == ["drill"]
        posts = [p for p in channel_posts(rb) if "Scheduled drill" in p]
        assert len(posts) == 1 and posts[0].startswith("✅ Scheduled drill: SUCCESS")
        assert "Step 5 Verify Recovery" in posts[0] and "Report (md):" in posts[0]
        assert rb.db.one("SELECT status FROM drills")["status"] == "SUCCESS"
        pending = [t for t in Timers(rb.db, clock).pending() if t.kind == "drill"]
        assert [t.due_at.isoformat() for t in pending] == ["2026-03-01T06:00:00+00:00"]

        assert preflight.check_drill(rb).ok
        clock.advance(days=32)  # a month and a day later, no drill since: overdue
        overdue = preflight.check_drill(rb)
        assert not overdue.ok and "older than its 31-day period" in overdue.reason
    finally:
        await rb.aclose()


def test_a_drill_schedule_that_does_not_parse_is_refused(write_config, rollbot, settings):
    bad = settings.model_dump(mode="json", exclude={"source"})
    bad["drills"] = DrillsConfig().model_dump() | {"schedule": "monthly"}
    cfg = write_config(bad)
    result = rollbot("--config", str(cfg), "preflight")
    assert result.returncode == 2
    assert "drills.schedule" in result.stderr and "not a cron expression" in result.stderr
