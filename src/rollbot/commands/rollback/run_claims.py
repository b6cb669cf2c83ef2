"""Who runs an incident: one run at a time in this process (a second waits for the first), one
process at a time across hosts (the claim in the RUNNING phase event, its heartbeat, and the
fence that stops a runner another host took over from), and the holds of a flatten whose
process is gone, put back to HALTED.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.desk.liveness import is_me
from rollbot.commands.killswitch.trading_state import TradingState
from rollbot.errors import Refused
from rollbot.storage.db import loads
from rollbot.storage.events import Actor
from rollbot.storage.holds import Hold
from rollbot.storage.incidents import Incident

OPENED_GRACE = timedelta(seconds=60)
_RUNS: dict[tuple[int, str, str], asyncio.Event] = {}  # runs in this process, per loop


@asynccontextmanager
async def turn_here(app: Rollbot, incident_id: str) -> AsyncIterator[bool]:
    """This process's turn at the incident: a second run waits for the first to end (True:
    it waited, so the incident has moved on since it was read)."""
    key = (id(asyncio.get_running_loop()), str(app.db.path), incident_id)
    waited = False
    while (ongoing := _RUNS.get(key)) is not None:
        await ongoing.wait()
        waited = True
    _RUNS[key] = asyncio.Event()
    try:
        yield waited
    finally:
        _RUNS.pop(key).set()


def running_here(app: Rollbot, incident_id: str) -> bool:
    return any(key[1] == str(app.db.path) and key[2] == incident_id for key in _RUNS)


def claim(app: Rollbot, actor: Actor, incident: Incident, steps: tuple[int, ...]) -> None:
    """The claim: checked and taken in one transaction; refused (RUNNING_ELSEWHERE) while
    another live process runs the incident."""
    with app.db.write():
        # the incident's row locked first: a database with row locks (not one write lock)
        # must not let two hosts both read "nobody runs it" and both run it
        app.db.execute("UPDATE incidents SET phase = phase WHERE id = ?", (incident.id,))
        other = running_elsewhere(app, incident.id)
        if other:
            raise Refused(
                f"{incident.id} is being run by {other}; it finishes it there",
                code="RUNNING_ELSEWHERE",
            )
        # the claim's heartbeat, so another host can tell when this process stops
        app.heartbeats.beat(app.me)
        app.incidents.set_phase(incident.id, "RUNNING", actor, steps=list(steps), runner=app.me)


def running_elsewhere(app: Rollbot, incident_id: str) -> str | None:
    """Who runs this incident right now, when it is another live process: on this machine by
    /proc, on another host by its heartbeat (the claim is in the RUNNING phase event; a run
    that stopped says so with RUN_INTERRUPTED)."""
    row = app.db.one(
        "SELECT kind, data FROM events WHERE incident_id = ?"
        " AND kind IN ('INCIDENT_PHASE', 'RUN_INTERRUPTED') ORDER BY id DESC LIMIT 1",
        (incident_id,),
    )
    if row is None or row["kind"] != "INCIDENT_PHASE":
        return None
    data = loads(row["data"]) or {}
    runner = data.get("runner") or {}
    if data.get("phase") != "RUNNING" or not app.live_elsewhere(runner):
        return None  # finished, crashed (the run is ours to finish), or this process (it waits)
    return f"process {runner['pid']} on {runner['host']}"


def taken_over(app: Rollbot, incident_id: str) -> str | None:
    """Another process's claim on this incident, newer than this process's own (fencing: a
    runner whose heartbeat lapsed must not go on beside the host that took over)."""
    row = app.db.one(
        "SELECT data FROM events WHERE incident_id = ? AND kind = 'INCIDENT_PHASE'"
        " ORDER BY id DESC LIMIT 1",
        (incident_id,),
    )
    data = (loads(row["data"]) or {}) if row else {}
    runner = data.get("runner") or {}
    if data.get("phase") != "RUNNING" or not runner or is_me(runner, app.me):
        return None
    return f"process {runner.get('pid')} on {runner.get('host')}"


def halt_abandoned_flattens(app: Rollbot, actor: Actor) -> list[Hold]:
    """A flatten loosens its own holds to REDUCING while it runs; when its process is gone
    (killed, crashed) they go back to HALTED at once — the clock and every start call this —
    rather than wait for someone to run `recover`."""
    restored: list[Hold] = []
    for incident_id in sorted(
        {h.incident_id for h in app.killswitch.holds.active() if h.state == "REDUCING"} - {None}
    ):
        assert incident_id is not None
        if app.incidents.get(incident_id).kind == "kill":
            continue  # a kill that asked for REDUCING itself: not a flatten's doing
        if running_here(app, incident_id) or running_elsewhere(app, incident_id):
            continue
        restored += app.killswitch.set_incident_state(
            incident_id,
            TradingState.HALTED,
            actor,
            f"the flatten of {incident_id} is not running (its process is gone): halted again",
        )
    return restored
