"""Finishing what a stopped process left: at start (`rollbot recover`, `rollbot rollback`, the
bot) and in the clock's sweeps. Its home is this room because it does two rooms' work: the
rollback's cut-off runs first (rollback/engine.py), then the approvals that ran them take their
outcome (Approvals.reconcile_interrupted) — the rollback room never imports approvals."""

from __future__ import annotations

from typing import Any

from rollbot.commands.approvals.two_person import Approvals
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.engine import (
    OPENED_GRACE,
    Engine,
    Outcome,
    halt_abandoned_flattens,
    running_elsewhere,
    running_here,
)
from rollbot.storage.events import Actor


async def resume_unfinished(
    app: Rollbot, actor: Actor, *, reason: str = "unfinished run found at start", **kw: Any
) -> list[Outcome]:
    """At start, and in the clock's sweeps: finish any incident whose run was cut off — a crash
    mid-run (RUNNING, and its runner no longer alive: on this machine by /proc, on another host
    by its heartbeat), or between storing the hold and starting the run (OPENED for over a
    minute: younger ones may be starting in another process right now)."""
    halt_abandoned_flattens(app, actor)
    outcomes = []
    stale = app.clock.now() - OPENED_GRACE
    for incident in app.incidents.list(open_only=True, limit=20):
        if incident.phase == "RUNNING" or (
            incident.phase == "OPENED" and incident.opened_at < stale
        ):
            if running_here(app, incident.id) or running_elsewhere(app, incident.id):
                continue  # not cut off: a live process (maybe this one) is running it now
            engine = Engine(app, actor, **kw)
            app.events.append(
                "INCIDENT_RESUMED",
                actor,
                incident_id=incident.id,
                reason=reason,
            )
            outcomes.append(await engine.run(incident, engine.steps_of(incident), new=False))
    # an approved flatten or rollback cut off with its run: the request takes the run's outcome
    await Approvals(app).reconcile_interrupted(actor)
    return outcomes
