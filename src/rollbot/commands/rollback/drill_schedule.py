"""Scheduled drills: the IBKR seed's "Test Schedule" (monthly rollback tests) run by the clock.

The next drill is a durable deadline in the timers table (kind `drill`), so it fires once
whichever process holds the clock, and a clock that was down when it fell due fires it at its
next start. Firing schedules the following one from [drills] schedule (cron, UTC) in the same
transaction, then runs the drill in its sandbox (commands/rollback/drill.py) after the commit, and
posts its outcome to the ops channel. A drill older than [drills] max_age_days fails the armed
status (commands/risk/preflight.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from apscheduler.triggers.cron import CronTrigger

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.drill import run_drill
from rollbot.storage.events import Actor
from rollbot.storage.timers import Timer, Timers

TIMER_KIND = "drill"
DRILL = Actor.clock("drill")


def next_due(app: Rollbot, after: datetime | None = None) -> datetime:
    trigger = CronTrigger.from_crontab(app.settings.drills.schedule, timezone=UTC)
    now = after or app.clock.now()
    fire = trigger.get_next_fire_time(None, now)
    assert fire is not None  # a cron expression always has a next time
    return fire


def _pending(app: Rollbot) -> list[Timer]:
    return [t for t in Timers(app.db, app.clock).pending() if t.kind == TIMER_KIND]


def ensure_scheduled(app: Rollbot) -> Timer | None:
    """One pending drill deadline while drills are enabled (called when the clock starts)."""
    if not app.settings.drills.enabled:
        return None
    with app.db.write():
        pending = _pending(app)
        if pending:
            return pending[0]
        return Timers(app.db, app.clock).schedule(TIMER_KIND, "scheduled", next_due(app))


def on_due(app: Rollbot, timer: Timer, lag_s: float) -> Callable[[], Awaitable[None]]:
    """Inside the claim's transaction: schedule the next drill; the drill runs after commit."""
    if app.settings.drills.enabled and not [t for t in _pending(app) if t.id != timer.id]:
        Timers(app.db, app.clock).schedule(TIMER_KIND, "scheduled", next_due(app))

    async def run() -> None:
        await run_scheduled_drill(app)

    return run


async def run_scheduled_drill(app: Rollbot) -> str:
    """Run one drill in its sandbox and tell the ops channel how it went. Returns the post."""
    try:
        result = await run_drill(app.settings, DRILL, clock=app.clock)
    except Exception as exc:  # a drill that cannot run is itself news for the desk
        text = f"🔴 Scheduled drill could not run: {exc}. The armed status will say so."
        app.outbox.put("channel", text=text)
        return text
    outcome = result.outcome
    status = outcome.final_status.value
    mark = "✅" if status == "SUCCESS" else "🔴"
    total = sum(s.duration_seconds for s in outcome.steps)
    lines = [f"{mark} Scheduled drill: {status} in {total:.2f} s (the seed's target: 180 s)."]
    for s in outcome.steps:
        lines.append(
            f"Step {s.step} {s.name}: {s.status.value} in {s.duration_seconds:.2f} s"
            f" (target {s.target_seconds:g} s)"
        )
    lines += [f"Report ({fmt}): {path}" for fmt, path in result.reports.items()]
    text = "\n".join(lines)
    app.outbox.put("channel", text=text)
    return text
