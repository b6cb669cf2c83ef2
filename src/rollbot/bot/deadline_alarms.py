"""APScheduler's alarms for the durable deadlines of the timers table (bot/scheduler.py): one
date job per pending deadline, re-read from the table so that deadlines queued by other
processes are found, and dropped when fired or cancelled elsewhere. The table is the truth;
an alarm only says when to look. Every firing goes through commands/rollback/timers.fire, whose
claim makes a second firing (another process, the auditor) a no-op."""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime, timedelta

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.timers import fire, handlers
from rollbot.storage.timers import Timers

log = logging.getLogger("rollbot.clock")


class DeadlineAlarms:
    def __init__(self, app: Rollbot) -> None:
        self.app = app
        self.scheduled: dict[int, str] = {}  # timer id -> token its job fires
        self.failed: dict[int, str] = {}  # left to the auditor after a handler error

    def sync(self, scheduler: AsyncIOScheduler) -> int:
        known = handlers()
        pending = {
            t.id: t for t in Timers(self.app.db, self.app.clock).pending() if t.kind in known
        }
        for timer_id in [i for i in self.scheduled if i not in pending]:
            self.scheduled.pop(timer_id, None)
            with contextlib.suppress(JobLookupError):
                scheduler.remove_job(f"timer:{timer_id}")
        added = 0
        now = self.app.clock.now()
        for timer in pending.values():
            if self.scheduled.get(timer.id) == timer.token:
                continue
            if self.failed.get(timer.id) == timer.token:
                continue
            # the app's clock may be a test's ManualClock: keep the distance, not the instant
            delay = max(0.0, (timer.due_at - now).total_seconds())
            scheduler.add_job(
                self._fire,
                "date",
                run_date=datetime.now(UTC) + timedelta(seconds=delay),
                args=[timer.id, timer.token],
                id=f"timer:{timer.id}",
                replace_existing=True,
            )
            self.scheduled[timer.id] = timer.token
            added += 1
        return added

    async def _fire(self, timer_id: int, token: str) -> None:
        try:
            await fire(self.app, timer_id, token, "scheduler")
        except Exception:
            log.exception("deadline %s failed; the auditor will retry it", timer_id)
            self.failed[timer_id] = token
        finally:
            if self.scheduled.get(timer_id) == token:
                del self.scheduled[timer_id]
