"""Automatic kill switches: every tick (kill_switches.interval_s, run by bot/scheduler.py) the
monitor samples each venue's NAV into SQLite, computes the figures (commands/risk/checks.py)
and acts on the configured triggers — auto_rollback ones run the rollback engine, alert ones
ask a person in the ops channel (view `risk_alert`, commands/risk/alerts.py).

Firing rules: a trigger fires once per incident. A firing (trigger, venue) stays active — so it
cannot fire again — until its incident is closed or its alert acknowledged AND its figure is
back inside the threshold; then it re-arms. The firing row, the incident, its HALTED hold and
the outbox message are written in one transaction, and a unique index allows one active firing
per (trigger, venue), so two processes cannot both fire. An automatic rollback while a rollback
incident covering the venue is already open is recorded against that incident instead of
starting another. Other venues stay watched: the rollback runs in the background.

Fail closed: a venue that cannot be read for `fail_closed_after` consecutive ticks, or whose
read or check raises anything else, is itself an alert and (fail_closed_halt) a HALT of that
venue (hold source monitor:fail_closed). tick() never raises.

This module runs the tick; its parts live beside it: venue_sampling.py (reading the venues),
triggers.py (firing and re-arming), fail_closed.py (the venues that cannot be watched) and
monitor_report.py (what a tick returns).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.risk.checks import (
    MetricStatus,
    desk_metrics,
    record_venue_events,
    risk_status,
    status_lines,
    venue_metrics,
)
from rollbot.commands.risk.fail_closed import FailClosed
from rollbot.commands.risk.monitor_report import FiredTrigger, MonitorReport
from rollbot.commands.risk.triggers import Triggers
from rollbot.commands.risk.venue_sampling import VenueSampler
from rollbot.commands.rollback.engine import HOLD_FIRST_WAIT_MS
from rollbot.storage.events import Actor
from rollbot.storage.risk import DESK, RiskVenueEvents

__all__ = [
    "FiredTrigger",
    "MetricStatus",
    "Monitor",
    "MonitorReport",
    "risk_status",
    "status_lines",
]

log = logging.getLogger("rollbot.monitors")
MONITOR = Actor.clock("monitor")
EVENT_RETENTION = timedelta(hours=25)


class Monitor:
    """Run tick() every kill_switches.interval_s (bot/scheduler.py). One per process that trades:
    it keeps the count of consecutive failed reads in memory."""

    def __init__(
        self,
        app: Rollbot,
        *,
        actor: Actor | None = None,
        venue_timeout_s: float | None = None,
    ) -> None:
        self.app = app
        self.actor = actor or MONITOR
        ks = app.settings.kill_switches
        self.sampler = VenueSampler(app, venue_timeout_s or max(1.0, ks.interval_s))
        self.triggers = Triggers(app, self.actor)
        self.fail_closed = FailClosed(app, self.actor)
        self._busy = False

    @property
    def venue_timeout_s(self) -> float:
        return self.sampler.venue_timeout_s

    @property
    def failed_reads(self) -> dict[str, int]:
        return self.sampler.failed_reads

    @property
    def running(self) -> dict[str, asyncio.Task[Any]]:
        """Incident id -> the automatic rollback this monitor started, while it runs."""
        return self.triggers.running

    async def settle(self) -> None:
        """Wait for the rollbacks this monitor started (tests; a clean shutdown)."""
        await self.triggers.settle()

    async def tick(self) -> MonitorReport:
        now = self.app.clock.now()
        report = MonitorReport(at=now)
        if self._busy:
            report.errors.append("the previous tick is still running; skipped")
            log.warning("risk monitor tick skipped: the previous one is still running")
            return report
        self._busy = True
        try:
            await self._tick(now, report)
        except Exception as exc:  # the last net: never leave trading silently unwatched
            log.exception("risk monitor tick failed")
            report.errors.append(f"tick failed: {exc!r}")
            for venue in self.app.venue_names:
                self.fail_closed.halt(venue, now, f"risk monitor failed: {exc!r}", None, report)
        finally:
            self._busy = False
        return report

    def _guard(self, report: MonitorReport, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            log.exception("risk monitor: %s failed", what)
            report.errors.append(f"{what}: {exc!r}")
            return None

    async def _tick(self, now: datetime, report: MonitorReport) -> None:
        # housekeeping: under another process's write lock it waits for the next tick, so an
        # automatic kill below is not held up behind it
        with self.app.db.patience(HOLD_FIRST_WAIT_MS):
            self._guard(report, "record venue events", record_venue_events, self.app)
            self._guard(
                report,
                "prune venue events",
                RiskVenueEvents(self.app.db).prune,
                now - EVENT_RETENTION,
            )
        raised: dict[str, str] = {}
        try:
            venues = self.app.venues()
        except Exception as exc:  # venues cannot even be built: nothing is watched
            venues = {}
            for name in self.app.venue_names:
                raised[name] = f"venues cannot be built: {exc}"
        if venues:
            await self.sampler.sample(venues, now, report, raised)
        ks = self.app.settings.kill_switches
        for venue in self.app.venue_names:
            if venue in raised:
                self.fail_closed.halt(venue, now, raised[venue], None, report)
            elif report.unreadable.get(venue) is not None:
                count = self.failed_reads.get(venue, 0)
                if count >= ks.fail_closed_after:
                    self.fail_closed.halt(
                        venue,
                        now,
                        f"{venue} could not be read {count} times in a row:"
                        f" {report.unreadable[venue]}",
                        count,
                        report,
                    )
            try:
                metrics = venue_metrics(self.app, venue, now)
            except Exception as exc:
                log.exception("risk checks for %s raised", venue)
                report.errors.append(f"{venue}: checks raised {exc!r}")
                self.fail_closed.halt(
                    venue, now, f"risk checks for {venue} raised: {exc!r}", None, report
                )
                continue
            report.metrics += metrics
            self._guard(report, f"act {venue}", self._act, metrics, now, report)
            if venue not in raised and venue not in report.unreadable:
                self._guard(
                    report,
                    f"re-arm fail-closed {venue}",
                    self.fail_closed.rearm,
                    venue,
                    now,
                    report,
                )
        try:
            desk = desk_metrics(self.app, now)
        except Exception as exc:
            log.exception("desk-wide risk checks raised")
            report.errors.append(f"desk checks raised {exc!r}")
            self._guard(report, "alert desk checks", self.fail_closed.alert_desk, now, exc, report)
            return
        report.metrics += desk
        self._guard(report, "act desk", self._act, desk, now, report)

    def _act(self, metrics: list[MetricStatus], now: datetime, report: MonitorReport) -> None:
        for m in metrics:
            try:
                self.triggers.act_on(m, now, report)
            except Exception as exc:  # acting failed: the breach is not handled, so fail closed
                log.exception("risk monitor: acting on %s for %s failed", m.trigger, m.venue)
                report.errors.append(f"acting on {m.trigger}@{m.venue or DESK} raised {exc!r}")
                if m.state == "BREACHED" and m.venue is not None:
                    why = f"acting on {m.trigger} ({m.value_text}) raised {exc!r}"
                    self.fail_closed.halt(m.venue, now, why, None, report)
