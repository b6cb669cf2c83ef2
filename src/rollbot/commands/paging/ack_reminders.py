"""Reminders to whoever acknowledged an incident that is still open.

An acknowledgement stops the escalation, so an incident someone took and then forgot would page
nobody again. Each acknowledgement sets a durable deadline ([escalation] ack_reminder_minutes);
when it fires and the incident is still open, the acker is reminded in the thread and by DM, and
the next reminder is set. Closing the incident cancels it.
"""

from __future__ import annotations

from datetime import timedelta

from rollbot.commands.desk.context import Rollbot
from rollbot.storage.events import Actor
from rollbot.storage.timers import Timer, Timers

TIMER_KIND = "ack_reminder"


def schedule(app: Rollbot, incident_id: str, acker: str) -> Timer | None:
    """Inside the acknowledgement's transaction."""
    minutes = app.settings.escalation.ack_reminder_minutes
    if minutes <= 0:
        return None
    due = app.clock.now() + timedelta(minutes=minutes)
    return Timers(app.db, app.clock).schedule(TIMER_KIND, incident_id, due, {"acker": acker})


def cancel(app: Rollbot, incident_id: str) -> list[int]:
    return Timers(app.db, app.clock).cancel(TIMER_KIND, incident_id)


def on_due(app: Rollbot, timer: Timer, lag_s: float) -> None:
    incident = app.incidents.get(timer.ref)
    if not incident.is_open:
        return
    acker = str(timer.payload.get("acker") or "")
    minutes = app.settings.escalation.ack_reminder_minutes
    since = app.clock.now() - incident.opened_at
    text = (
        f"⏰ <@{acker}>: {incident.id} is still open, {minutes:g} min after you acknowledged it"
        f" ({since.total_seconds() / 3600:.1f} h since it opened). Close it with"
        f" `/incident close {incident.id} what was done`, or hand it to someone."
    )
    app.outbox.put("thread", incident_id=incident.id, text=text, dedupe_key=f"ackrem:{timer.id}")
    app.outbox.put("dm", target=acker, text=text, dedupe_key=f"ackrem:{timer.id}:dm")
    app.events.append(
        "ACK_REMINDED",
        Actor.clock(TIMER_KIND),
        incident_id=incident.id,
        data={"acker": acker, "timer_id": timer.id},
    )
    schedule(app, incident.id, acker)
