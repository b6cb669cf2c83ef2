"""Firing durable deadlines (storage/timers.py): claim, act, record — in one transaction.

A handler runs inside the claim's write transaction and changes state there (advance an
escalation, queue a reminder); it may return a follow-up coroutine for work that must not hold
the database (an HTTP POST), which runs after the commit. Whoever fires a deadline — the
scheduler job at its due time, the bot at start, the auditor, a test calling `fire_due` — goes
through `fire`, so a deadline fires once however many of them try.

Every firing writes TIMER_FIRED with `lag_s` (fire time minus deadline, by the app's clock) and
`via` (scheduler, startup, auditor, manual): the benchmark reads firing lag from there.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from rollbot.clock import iso
from rollbot.commands.desk.context import Rollbot
from rollbot.storage.events import Actor
from rollbot.storage.timers import Timer, Timers

log = logging.getLogger("rollbot.timers")

Via = Literal["scheduler", "startup", "auditor", "manual"]
FollowUp = Callable[[], Awaitable[None]]
Handler = Callable[[Rollbot, Timer, float], FollowUp | None]


def handlers() -> dict[str, Handler]:
    # imported here: these modules schedule timers themselves, so they import this one
    from rollbot.commands.paging import ack_reminders, escalation, webhooks
    from rollbot.commands.rollback import checklist, drill_schedule

    return {
        ack_reminders.TIMER_KIND: ack_reminders.on_due,
        drill_schedule.TIMER_KIND: drill_schedule.on_due,
        escalation.TIMER_KIND: escalation.on_deadline,
        checklist.TIMER_KIND: checklist.on_reminder,
        webhooks.TIMER_KIND: webhooks.on_send,
    }


@dataclass
class Fired:
    timer: Timer
    lag_s: float
    via: Via
    follow_up: FollowUp | None = None


def claim_and_fire(app: Rollbot, timer_id: int, token: str, via: Via) -> Fired | None:
    """The state change of one firing, committed with the claim; None if someone else won."""
    table = handlers()
    timers = Timers(app.db, app.clock)
    with app.db.write():
        timer = timers.get(timer_id)
        if timer is None or timer.kind not in table:
            if timer is not None:
                log.warning("no handler for deadline kind %r (timer %s)", timer.kind, timer.id)
            return None
        claimed = timers.claim(timer_id, token)
        if claimed is None:
            return None
        lag_s = round((app.clock.now() - claimed.due_at).total_seconds(), 6)
        app.events.append(
            "TIMER_FIRED",
            Actor.clock(claimed.kind),
            incident_id=claimed.ref if claimed.ref.startswith("INC-") else None,
            data={
                "timer_id": claimed.id,
                "kind": claimed.kind,
                "ref": claimed.ref,
                "due_at": iso(claimed.due_at),
                "lag_s": lag_s,
                "via": via,
                **app.me,  # who holds the firing: a follow-up lost with its process is found again
            },
        )
        app.heartbeats.beat(app.me)  # so another host can tell when this firer stops
        follow_up = table[claimed.kind](app, claimed, lag_s)
    return Fired(claimed, lag_s, via, follow_up)


async def fire(app: Rollbot, timer_id: int, token: str, via: Via) -> Fired | None:
    """Claim, act, then run the follow-up (outside the transaction)."""
    fired = claim_and_fire(app, timer_id, token, via)
    if fired is not None and fired.follow_up is not None:
        await fired.follow_up()
    return fired


def due(app: Rollbot, *, now: datetime | None = None, grace_s: float = 0) -> list[Timer]:
    """Pending deadlines due by `now - grace_s`, earliest first (known kinds only)."""
    cutoff = (now or app.clock.now()) - timedelta(seconds=grace_s)
    known = handlers()
    return [t for t in Timers(app.db, app.clock).pending(due_by=cutoff) if t.kind in known]


async def fire_due(app: Rollbot, *, via: Via = "manual", grace_s: float = 0) -> list[Fired]:
    """Fire every deadline due (overdue by more than grace_s), one claim each.

    One deadline failing does not hold up the others; the first error is raised at the end
    (its deadline stays pending, so it is tried again).
    """
    out: list[Fired] = []
    first_error: Exception | None = None
    for timer in due(app, grace_s=grace_s):
        try:
            fired = await fire(app, timer.id, timer.token, via)
        except Exception as exc:
            log.exception("deadline %s (%s for %s) failed", timer.id, timer.kind, timer.ref)
            first_error = first_error or exc
            continue
        if fired is not None:
            out.append(fired)
    if first_error is not None:
        raise first_error
    return out
