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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

from rollbot.brokers.base import VenueError
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.risk.alerts import alert_data
from rollbot.commands.risk.checks import (
    FAIL_CLOSED,
    MetricStatus,
    desk_metrics,
    record_venue_events,
    risk_status,
    scope_of,
    status_lines,
    venue_metrics,
)
from rollbot.commands.rollback.engine import HOLD_FIRST_WAIT_MS, ROLLBACK_STEPS, Engine
from rollbot.errors import DatabaseBusy, NotFound
from rollbot.storage.events import Actor
from rollbot.storage.incidents import Incident
from rollbot.storage.nav import NavSamples
from rollbot.storage.risk import DESK, Firing, Firings, RiskVenueEvents

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


class FiredTrigger(BaseModel):
    alert_id: str
    trigger: str
    venue: str | None
    action: str
    value: float | None
    threshold: float | None
    incident_id: str | None = None
    covered: bool = False  # recorded against a rollback that was already open


class MonitorReport(BaseModel):
    at: datetime
    samples: dict[str, str] = Field(default_factory=dict)  # venue -> NAV sampled this tick
    unreadable: dict[str, str] = Field(default_factory=dict)  # venue -> why
    metrics: list[MetricStatus] = Field(default_factory=list)
    fired: list[FiredTrigger] = Field(default_factory=list)
    suppressed: list[str] = Field(default_factory=list)  # breached, but already fired
    rearmed: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)


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
        self.venue_timeout_s = venue_timeout_s or max(1.0, ks.interval_s)
        self.failed_reads: dict[str, int] = {}
        self.running: dict[str, asyncio.Task[Any]] = {}  # incident id -> its rollback run
        self._busy = False
        self._storing: set[tuple[str, str]] = set()  # firings waiting for the database

    async def settle(self) -> None:
        """Wait for the rollbacks this monitor started (tests; a clean shutdown)."""
        while self.running:
            await asyncio.gather(*self.running.values(), return_exceptions=True)

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
                self._fail_closed(venue, now, f"risk monitor failed: {exc!r}", None, report)
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
            await self._sample(venues, now, report, raised)
        ks = self.app.settings.kill_switches
        for venue in self.app.venue_names:
            if venue in raised:
                self._fail_closed(venue, now, raised[venue], None, report)
            elif report.unreadable.get(venue) is not None:
                count = self.failed_reads.get(venue, 0)
                if count >= ks.fail_closed_after:
                    self._fail_closed(
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
                self._fail_closed(
                    venue, now, f"risk checks for {venue} raised: {exc!r}", None, report
                )
                continue
            report.metrics += metrics
            self._guard(report, f"act {venue}", self._act, metrics, now, report)
            if venue not in raised and venue not in report.unreadable:
                self._guard(
                    report,
                    f"re-arm fail-closed {venue}",
                    self._rearm_fail_closed,
                    venue,
                    now,
                    report,
                )
        try:
            desk = desk_metrics(self.app, now)
        except Exception as exc:
            log.exception("desk-wide risk checks raised")
            report.errors.append(f"desk checks raised {exc!r}")
            self._guard(report, "alert desk checks", self._alert_broken_check, now, exc, report)
            return
        report.metrics += desk
        self._guard(report, "act desk", self._act, desk, now, report)

    async def _sample(
        self,
        venues: dict[str, Any],
        now: datetime,
        report: MonitorReport,
        raised: dict[str, str],
    ) -> None:
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

    # -- acting -------------------------------------------------------------------------------
    def _settled(self, f: Firing) -> bool:
        """Its incident closed or its alert answered: it may re-arm when the figure recovers."""
        if f.incident_id:
            try:
                return not self.app.incidents.get(f.incident_id).is_open
            except NotFound:
                return True
        return f.acked_by is not None

    def _act(self, metrics: list[MetricStatus], now: datetime, report: MonitorReport) -> None:
        for m in metrics:
            try:
                self._act_on(m, now, report)
            except Exception as exc:  # acting failed: the breach is not handled, so fail closed
                log.exception("risk monitor: acting on %s for %s failed", m.trigger, m.venue)
                report.errors.append(f"acting on {m.trigger}@{m.venue or DESK} raised {exc!r}")
                if m.state == "BREACHED" and m.venue is not None:
                    why = f"acting on {m.trigger} ({m.value_text}) raised {exc!r}"
                    self._fail_closed(m.venue, now, why, None, report)

    def _act_on(self, m: MetricStatus, now: datetime, report: MonitorReport) -> None:
        firings = Firings(self.app.db)
        key = m.venue or DESK
        active = firings.active(m.trigger, key)
        if m.state == "BREACHED":
            if active:
                f = active[0]
                report.suppressed.append(
                    f"{m.trigger}@{key}: already fired ({f.alert_id}"
                    + (f", {f.incident_id}" if f.incident_id else "")
                    + f", {f.status})"
                )
                return
            if (m.trigger, key) in self._storing:
                report.suppressed.append(f"{m.trigger}@{key}: firing, waiting for the database")
                return
            try:
                with self.app.db.patience(HOLD_FIRST_WAIT_MS):
                    fired = self._fire(m, now)
            except DatabaseBusy:
                if m.action != "auto_rollback":
                    raise
                self._storing.add((m.trigger, key))
                self._spawn(f"{m.trigger}@{key}", self._fire_while_locked(m, now))
                report.suppressed.append(f"{m.trigger}@{key}: database locked; cancelling now")
                return
            if fired:
                report.fired.append(fired)
        elif active and self._settled(active[0]):
            with self.app.db.write():
                firings.clear(active[0].id, now)
                self.app.events.append(
                    "RISK_TRIGGER_REARMED",
                    self.actor,
                    scope=scope_of(key),
                    data={"alert_id": active[0].alert_id, "trigger": m.trigger, "value": m.value},
                )
            report.rearmed.append(f"{m.trigger}@{key}")

    def _covering_rollback(self, venue: str | None) -> Incident | None:
        scopes = {"global"} | ({f"venue:{venue}"} if venue else set())
        for inc in self.app.incidents.list(open_only=True, limit=200):
            if inc.kind == "rollback" and inc.scope in scopes:
                return inc
        return None

    async def _fire_while_locked(self, m: MetricStatus, now: datetime) -> None:
        """An automatic kill under another process's write lock: the cancels go out at once on
        every venue, and the firing (its incident and HALTED hold) is retried until stored,
        without holding the event loop for the busy timeout."""
        started = time.monotonic()
        try:
            engine = Engine(self.app, self.actor)
            done = await engine.cancel_now("global")
            while True:
                try:
                    with self.app.db.patience(HOLD_FIRST_WAIT_MS):
                        fired = self._fire(m, now)
                    break
                except DatabaseBusy:
                    await asyncio.sleep(0.1)
            if fired is not None and fired.incident_id and not fired.covered:
                engine.record_early_cancels(
                    fired.incident_id,
                    "global",
                    done,
                    time.monotonic() - started,
                    "database locked by another process when the trigger fired",
                )
        except Exception:  # not an incident yet: nothing to post to; the next tick fires again
            log.exception("automatic kill under a locked database failed (%s)", m.trigger)
        finally:
            self._storing.discard((m.trigger, m.venue or DESK))

    def _fire(self, m: MetricStatus, now: datetime) -> FiredTrigger | None:
        key = m.venue or DESK
        where = m.venue or "the desk"
        firings = Firings(self.app.db)
        data: dict[str, Any] = {
            "label": m.label,
            "comparison": m.comparison,
            "value_text": m.value_text,
            "threshold_text": m.threshold_text,
            "figures": m.figures,
            "fired_at": now.isoformat(),
        }
        if m.trigger == "kills_per_day":
            data["note"] = (
                f"Live -> Shadow procedure: the kill switch triggered {m.value_text} times in"
                " 24 h — recommend rolling back to shadow mode."
            )
        engine = Engine(self.app, self.actor)
        start: tuple[Incident, bool] | None = None
        with self.app.db.write():
            if firings.active(m.trigger, key):  # another process fired first
                return None
            auto = m.action == "auto_rollback"
            firing = firings.insert(
                trigger=m.trigger,
                venue=key,
                action=m.action,
                value=m.value,
                threshold=m.threshold,
                data=data,
                status="ROLLBACK" if auto else "ALERTED",
                at=now,
            )
            covered = None
            if auto:
                covered = self._covering_rollback(m.venue)
                reason = (
                    f"Automatic rollback: {m.label} {m.value_text} on {where}"
                    f" (trigger {m.threshold_text})"
                )
                if covered:
                    firings.update(firing.id, status="COVERED", incident_id=covered.id)
                    self.app.outbox.put(
                        "thread",
                        incident_id=covered.id,
                        text=f"Also breached: {m.label} {m.value_text} on {where}"
                        f" (trigger {m.threshold_text}) — this rollback covers it.",
                    )
                else:
                    start = engine.open_held_incident(
                        kind="rollback",
                        reason=reason,
                        trigger=m.trigger,
                        trigger_value=m.value,
                        trigger_threshold=m.threshold,
                        dedupe_key=f"monitor:{m.trigger}:{key}:{firing.id}",
                        hold_source=f"monitor:{m.trigger}",
                    )
                    firings.update(firing.id, incident_id=start[0].id)
                    self.app.outbox.put(
                        "thread",
                        incident_id=start[0].id,
                        text=reason + "\n" + "\n".join(f"• {k}: {v}" for k, v in m.figures.items()),
                    )
            firing = firings.get(firing.id) or firing
            self.app.events.append(
                "RISK_TRIGGER_FIRED",
                self.actor,
                reason=f"{m.label} {m.value_text} on {where} (trigger {m.threshold_text})",
                scope=scope_of(key),
                incident_id=firing.incident_id,
                data={
                    "alert_id": firing.alert_id,
                    "trigger": m.trigger,
                    "venue": m.venue,
                    "action": m.action,
                    "value": m.value,
                    "threshold": m.threshold,
                    "covered": covered is not None,
                },
            )
            if not auto:
                self.app.outbox.put(
                    "channel",
                    text=f"Risk alert {firing.alert_id}: {m.label} {m.value_text} on {where}"
                    f" (trigger {m.threshold_text})",
                    view="risk_alert",
                    data=alert_data(firing),
                    dedupe_key=f"risk-alert:{firing.alert_id}",
                )
        if start is not None:
            incident, new = start
            self._spawn(incident.id, engine.run(incident, ROLLBACK_STEPS, new=new))
        log.warning("risk trigger %s fired on %s: %s", m.trigger, where, m.value_text)
        return FiredTrigger(
            alert_id=firing.alert_id,
            trigger=m.trigger,
            venue=m.venue,
            action=m.action,
            value=m.value,
            threshold=m.threshold,
            incident_id=firing.incident_id,
            covered=covered is not None,
        )

    def _spawn(self, incident_id: str, run: Any) -> None:
        """Roll back in the background: the monitor keeps watching every venue meanwhile."""
        task = asyncio.ensure_future(run)
        self.running[incident_id] = task

        def done(t: asyncio.Task[Any]) -> None:
            self.running.pop(incident_id, None)
            if t.cancelled():
                return  # the process is stopping: resume_unfinished finishes it at start
            exc = t.exception()
            if exc is not None:
                log.error("automatic rollback %s failed", incident_id, exc_info=exc)
                try:
                    self.app.outbox.put(
                        "thread",
                        incident_id=incident_id,
                        text=f"Automatic rollback stopped with an error: {exc!r}."
                        " The holds stay HALTED; rerun it with /rollback or `rollbot recover`.",
                    )
                except Exception:
                    log.exception("could not announce the failed rollback %s", incident_id)

        task.add_done_callback(done)

    def _fail_closed(
        self, venue: str, now: datetime, why: str, count: int | None, report: MonitorReport
    ) -> None:
        """Alert and halt; if even that fails, say so loudly (the next tick tries again)."""
        try:
            self._halt_unwatched(venue, now, why, count, report)
        except Exception as exc:
            log.critical("fail-closed on %s could not be recorded: %r (%s)", venue, exc, why)
            report.errors.append(f"fail-closed {venue} could not be recorded: {exc!r}")

    def _halt_unwatched(
        self, venue: str, now: datetime, why: str, count: int | None, report: MonitorReport
    ) -> None:
        ks = self.app.settings.kill_switches
        firings = Firings(self.app.db)
        halt = ks.fail_closed_halt
        with self.app.db.write():
            active = firings.active(FAIL_CLOSED, venue)
            if active:
                report.suppressed.append(
                    f"{FAIL_CLOSED}@{venue}: already fired ({active[0].alert_id})"
                )
                return
            data = {
                "label": "Venue cannot be watched",
                "value_text": f"{count} failed reads in a row" if count else "a check raised",
                "threshold_text": f">= {ks.fail_closed_after} in a row" if count else "any",
                "figures": {"error": why[:500]},
                "note": (
                    f"{venue} is HALTED (fail closed): clear the hold from monitor:fail_closed"
                    " once it can be read again."
                    if halt
                    else f"{venue} is not watched: fix it or halt it."
                ),
                "fired_at": now.isoformat(),
            }
            firing = firings.insert(
                trigger=FAIL_CLOSED,
                venue=venue,
                action="halt" if halt else "alert",
                value=float(count) if count is not None else None,
                threshold=float(ks.fail_closed_after) if count is not None else None,
                data=data,
                status="HALTED" if halt else "ALERTED",
                at=now,
            )
            if halt:
                self.app.killswitch.trigger(
                    f"venue:{venue}",
                    f"fail closed: {why}"[:500],
                    self.actor,
                    source="monitor:fail_closed",
                )
            self.app.events.append(
                "RISK_TRIGGER_FIRED",
                self.actor,
                reason=why[:500],
                scope=f"venue:{venue}",
                data={
                    "alert_id": firing.alert_id,
                    "trigger": FAIL_CLOSED,
                    "venue": venue,
                    "action": firing.action,
                    "value": firing.value,
                    "threshold": firing.threshold,
                },
            )
            self.app.outbox.put(
                "channel",
                text=f"Risk alert {firing.alert_id}: {venue} cannot be watched"
                + (" — venue HALTED" if halt else ""),
                view="risk_alert",
                data=alert_data(firing),
                dedupe_key=f"risk-alert:{firing.alert_id}",
            )
        log.error("fail closed on %s: %s", venue, why)
        report.fired.append(
            FiredTrigger(
                alert_id=firing.alert_id,
                trigger=FAIL_CLOSED,
                venue=venue,
                action=firing.action,
                value=firing.value,
                threshold=firing.threshold,
            )
        )

    def _rearm_fail_closed(self, venue: str, now: datetime, report: MonitorReport) -> None:
        """Read fine again and its alert acknowledged: a new failure may alert (and halt) again.
        The halt itself stays until a person clears it."""
        for f in Firings(self.app.db).active(FAIL_CLOSED, venue):
            if self._settled(f):
                with self.app.db.write():
                    Firings(self.app.db).clear(f.id, now)
                    self.app.events.append(
                        "RISK_TRIGGER_REARMED",
                        self.actor,
                        scope=f"venue:{venue}",
                        data={"alert_id": f.alert_id, "trigger": FAIL_CLOSED},
                    )
                report.rearmed.append(f"{FAIL_CLOSED}@{venue}")

    def _alert_broken_check(self, now: datetime, exc: Exception, report: MonitorReport) -> None:
        """A desk-wide check that raises is an alert (there is no single venue to halt)."""
        firings = Firings(self.app.db)
        with self.app.db.write():
            if firings.active(FAIL_CLOSED, DESK):
                return
            firing = firings.insert(
                trigger=FAIL_CLOSED,
                venue=DESK,
                action="alert",
                value=None,
                threshold=None,
                data={"label": "Desk-wide risk check raised", "figures": {"error": repr(exc)}},
                status="ALERTED",
                at=now,
            )
            self.app.outbox.put(
                "channel",
                text=f"Risk alert {firing.alert_id}: a desk-wide risk check raised {exc!r}",
                view="risk_alert",
                data=alert_data(firing),
                dedupe_key=f"risk-alert:{firing.alert_id}",
            )
        report.fired.append(
            FiredTrigger(
                alert_id=firing.alert_id,
                trigger=FAIL_CLOSED,
                venue=None,
                action="alert",
                value=None,
                threshold=None,
            )
        )
