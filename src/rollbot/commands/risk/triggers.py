"""The configured triggers acted on, for the risk monitor (monitors.py): a breach fires once per
incident — an alert put to a person, or an automatic rollback run in the background (or recorded
against a rollback already open) — and a settled firing re-arms once its figure is back inside.
The firing row, the incident, its HALTED hold and the outbox message are written in one
transaction; under another process's write lock an automatic kill cancels at once and stores the
firing when it can."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.risk.alerts import alert_data
from rollbot.commands.risk.checks import MetricStatus, scope_of
from rollbot.commands.risk.monitor_report import FiredTrigger, MonitorReport
from rollbot.commands.rollback.engine import HOLD_FIRST_WAIT_MS, ROLLBACK_STEPS, Engine
from rollbot.errors import DatabaseBusy, NotFound, StorageError
from rollbot.storage.events import Actor
from rollbot.storage.incidents import Incident
from rollbot.storage.risk import DESK, Firing, Firings

log = logging.getLogger("rollbot.monitors")


def settled(app: Rollbot, f: Firing) -> bool:
    """Its incident closed or its alert answered: it may re-arm when the figure recovers."""
    if f.incident_id:
        try:
            return not app.incidents.get(f.incident_id).is_open
        except NotFound:
            return True
    return f.acked_by is not None


class Triggers:
    """One per monitor: it keeps the automatic rollbacks it started, and the firings still
    waiting for a locked database, so a breach seen again meanwhile does not fire twice."""

    def __init__(self, app: Rollbot, actor: Actor) -> None:
        self.app = app
        self.actor = actor
        self.running: dict[str, asyncio.Task[Any]] = {}  # incident id -> its rollback run
        self._storing: set[tuple[str, str]] = set()  # firings waiting for the database

    async def settle(self) -> None:
        """Wait for the rollbacks started here (tests; a clean shutdown)."""
        while self.running:
            await asyncio.gather(*self.running.values(), return_exceptions=True)

    def act_on(self, m: MetricStatus, now: datetime, report: MonitorReport) -> None:
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
            except StorageError as failed:  # a lock, or a write that fails for good
                if m.action != "auto_rollback":
                    raise
                self._storing.add((m.trigger, key))
                self._spawn(f"{m.trigger}@{key}", self._fire_while_locked(m, now))
                why = (
                    "database locked"
                    if isinstance(failed, DatabaseBusy)
                    else f"the firing could not be stored ({failed})"
                )
                report.suppressed.append(f"{m.trigger}@{key}: {why}; cancelling now")
                return
            if fired:
                report.fired.append(fired)
        elif active and settled(self.app, active[0]):
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
        without holding the event loop for the busy timeout. A write that fails for good (a
        full disk) still sends the cancels; the firing is then tried again at the next tick."""
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
