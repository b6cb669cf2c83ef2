"""Sampling the venues for the risk monitor: every venue's account read at once, each within a
timeout; the NAVs stored in SQLite; each venue's consecutive failed reads counted in memory (the
monitor fails closed on that count)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

from rollbot.brokers.base import VenueError
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.risk.monitor_report import MonitorReport
from rollbot.commands.rollback.engine import HOLD_FIRST_WAIT_MS
from rollbot.errors import DatabaseBusy
from rollbot.storage.nav import NavSamples

log = logging.getLogger("rollbot.monitors")


class VenueSampler:
    """One per monitor: it keeps the count of consecutive failed reads."""

    def __init__(self, app: Rollbot, venue_timeout_s: float) -> None:
        self.app = app
        self.venue_timeout_s = venue_timeout_s
        self.failed_reads: dict[str, int] = {}

    async def sample(
        self,
        venues: dict[str, Any],
        now: datetime,
        report: MonitorReport,
        raised: dict[str, str],
    ) -> None:
        """Unreadable venues go to report.unreadable; those that raised something else, or
        were configured but not built, to `raised` (the monitor fails those closed at once)."""

        async def read(v: Any) -> Any:
            async with asyncio.timeout(self.venue_timeout_s):
                return await v.account()

        names = [n for n in self.app.venue_names if n in venues]
        for missing in set(self.app.venue_names) - set(names):
            raised[missing] = f"venue {missing} is configured but was not built"
        results = await asyncio.gather(*(read(venues[n]) for n in names), return_exceptions=True)
        navs = NavSamples(self.app.db)
        for name, res in zip(names, results, strict=True):
            if isinstance(res, TimeoutError):
                self._unreadable(name, f"no answer within {self.venue_timeout_s:g} s", report)
            elif isinstance(res, VenueError):
                self._unreadable(name, str(res), report)
            elif isinstance(res, BaseException):
                raised[name] = f"reading {name} raised {res!r}"
                log.error("risk monitor: reading %s raised %r", name, res)
            else:
                try:
                    nav = Decimal(res.nav)
                    with self.app.db.patience(HOLD_FIRST_WAIT_MS):
                        navs.add(name, now, nav, res.currency)
                except DatabaseBusy:  # another process writes: this sample is lost, not fatal
                    report.errors.append(f"{name}: NAV sample not stored (database locked)")
                    continue
                except Exception as exc:
                    raised[name] = f"sampling {name} raised {exc!r}"
                    continue
                self.failed_reads[name] = 0
                report.samples[name] = str(nav)

    def _unreadable(self, venue: str, why: str, report: MonitorReport) -> None:
        self.failed_reads[venue] = self.failed_reads.get(venue, 0) + 1
        report.unreadable[venue] = why
        log.warning(
            "risk monitor: %s unreadable (%s in a row): %s", venue, self.failed_reads[venue], why
        )
