"""Failing closed, for the risk monitor (monitors.py): a venue that cannot be read for
`fail_closed_after` consecutive ticks, or whose read or check raises anything else, is itself an
alert and (fail_closed_halt) a HALT of that venue (hold source monitor:fail_closed); a desk-wide
check that raises is an alert. It re-arms once the venue reads fine and the alert is answered;
the halt itself stays until a person clears it."""

from __future__ import annotations

import logging
from datetime import datetime

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.risk.alerts import alert_data
from rollbot.commands.risk.checks import FAIL_CLOSED
from rollbot.commands.risk.monitor_report import FiredTrigger, MonitorReport
from rollbot.commands.risk.triggers import settled
from rollbot.storage.events import Actor
from rollbot.storage.risk import DESK, Firings

log = logging.getLogger("rollbot.monitors")


class FailClosed:
    def __init__(self, app: Rollbot, actor: Actor) -> None:
        self.app = app
        self.actor = actor

    def halt(
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

    def rearm(self, venue: str, now: datetime, report: MonitorReport) -> None:
        """Read fine again and its alert acknowledged: a new failure may alert (and halt) again.
        The halt itself stays until a person clears it."""
        for f in Firings(self.app.db).active(FAIL_CLOSED, venue):
            if settled(self.app, f):
                with self.app.db.write():
                    Firings(self.app.db).clear(f.id, now)
                    self.app.events.append(
                        "RISK_TRIGGER_REARMED",
                        self.actor,
                        scope=f"venue:{venue}",
                        data={"alert_id": f.alert_id, "trigger": FAIL_CLOSED},
                    )
                report.rearmed.append(f"{FAIL_CLOSED}@{venue}")

    def alert_desk(self, now: datetime, exc: Exception, report: MonitorReport) -> None:
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
