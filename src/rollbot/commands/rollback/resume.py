"""Resuming live trading after an incident (Live -> Shadow seed, "Recovery from Rollback"; IBKR
seed, step 7). Three conditions must all hold before a risk officer may approve it:

1. the minimum time in shadow mode (settings.resume.min_shadow_hours) has passed since the
   incident disabled the live gates (or, when it never touched them, since its run ended);
2. a root-cause analysis is recorded for the incident (commands/rollback/rca.py);
3. a drill has passed (drills.status = SUCCESS) since the incident opened.

The conditions hold for every incident since the last resume, not only the one named: a resume
(even of an incident resumed before) re-arms live trading after all of them. A desk that has
never resumed counts from the rule's baseline, recorded when its database gained the rule:
incidents settled before it existed (closed, no hold, live trading armed since) are not
re-judged; any that was not stays counted.
`resume_blockers` names each condition that does not hold; an empty list means resume may be
requested. The approval itself (commands/approvals/two_person.py) checks again at approval
time, then `execute_resume` (commands/rollback/rearm.py, beside the rule it obeys) re-arms the
gates and clears the incident's holds. Every other path that would re-arm live trading is
refused, naming /resume (commands/rollback/rearm.py).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from rollbot.clock import iso, parse_iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.gates import LIVE
from rollbot.commands.rollback.rca import get_rca
from rollbot.storage.holds import Hold, Holds
from rollbot.storage.incidents import Incident


def shadow_since(app: Rollbot, incident: Incident) -> datetime | None:
    """When this incident put trading in shadow: its gates-disabled event, else its run's end."""
    for event in app.events.list(incident_id=incident.id, kinds=["GATES_WRITTEN"]):
        after = event.data.get("after") or {}
        if not after.get("enable_live_trading", True):
            return event.at
    for event in app.events.list(incident_id=incident.id, kinds=["INCIDENT_PHASE"]):
        if event.data.get("phase") == "DONE":
            return event.at
    return None


def passed_drill_since(app: Rollbot, since: datetime) -> dict[str, str] | None:
    rows = app.db.query("SELECT * FROM drills WHERE status = 'SUCCESS' ORDER BY id DESC")
    for row in rows:
        if parse_iso(row["at"]) > since:
            return row
    return None


def resume_baseline(app: Rollbot) -> int:
    """The event after which incidents count: the last resume, or where the rule started on a
    desk that had incidents before it (storage/migrations.py V10: those settled by then)."""
    last = app.db.one(
        "SELECT COALESCE(MAX(id), 0) AS id FROM events WHERE kind = 'TRADING_RESUMED'"
    )
    start = app.db.one(
        "SELECT data FROM events WHERE kind = 'REARM_BASELINE' ORDER BY id DESC LIMIT 1"
    )
    after = int(json.loads(start["data"]).get("after_event", 0)) if start else 0
    return max(int(last["id"]) if last else 0, after)


def incidents_since_resume(app: Rollbot) -> list[str]:
    """Every incident opened since live trading was last resumed (since the rule's baseline if
    never), in order: each must meet the resume conditions before live trading is re-armed."""
    rows = app.db.query(
        "SELECT incident_id FROM events WHERE kind = 'INCIDENT_OPENED' AND id > ? ORDER BY id",
        (resume_baseline(app),),
    )
    return [r["incident_id"] for r in rows if r["incident_id"]]


def resume_blockers(app: Rollbot, incident_id: str) -> list[str]:
    """Each missing condition, in words a person can act on; [] when resume may go ahead: for
    this incident and for every other one opened since the last resume (named in the text)."""
    target = app.incidents.get(incident_id)
    blockers = _conditions(app, target)
    for other in incidents_since_resume(app):
        if other != target.id:
            blockers += [
                f"{other} (opened since the last resume) — {b}"
                for b in _conditions(app, app.incidents.get(other))
            ]
    return blockers


def _conditions(app: Rollbot, incident: Incident) -> list[str]:
    """The three resume conditions for one incident: each that does not hold."""
    now = app.clock.now()
    blockers: list[str] = []
    hours = app.settings.resume.min_shadow_hours
    since = shadow_since(app, incident)
    if since is None:
        blockers.append(
            f"minimum time in shadow: {incident.id} has not put trading in shadow mode yet"
            f" (its run has not finished); {hours:g} h in shadow are required after it"
        )
    else:
        ready_at = since + timedelta(hours=hours)
        if now < ready_at:
            spent = (now - since).total_seconds() / 3600
            blockers.append(
                f"minimum time in shadow: {hours:g} h required, {spent:.1f} h so far"
                f" (in shadow since {iso(since)}; not before {iso(ready_at)})"
            )
    if get_rca(app, incident.id) is None:
        blockers.append(
            f"root-cause analysis: none recorded for {incident.id}"
            f" (the Slack RCA form, or `rollbot rca {incident.id} --file F`)"
        )
    if passed_drill_since(app, incident.opened_at) is None:
        last = app.db.one("SELECT * FROM drills ORDER BY id DESC LIMIT 1")
        seen = ""
        if last and parse_iso(last["at"]) > incident.opened_at:
            seen = f"; the last drill, at {last['at']}, ended {last['status']}"
        blockers.append(
            f"drill: none has passed since {incident.id} opened at {iso(incident.opened_at)}"
            f" (`rollbot drill`){seen}"
        )
    return blockers


def incident_holds(app: Rollbot, incident_id: str) -> list[Hold]:
    return [h for h in Holds(app.db).active() if h.incident_id == incident_id]


def gate_changes(app: Rollbot) -> list[str]:
    """Each gate as it is now and as arming leaves it."""
    gates = app.gates.read()
    lines = []
    for key in ("enable_live_trading", "live_mode_armed", "live_dry_run_mode", "shadow_enabled"):
        before, after = getattr(gates, key), getattr(LIVE, key)
        shown = "unreadable" if not gates.readable else str(before).lower()
        lines.append(f"gate {key}: {shown} -> {str(after).lower()}")
    return lines


def resume_plan(app: Rollbot, incident_id: str) -> list[str]:
    """Exactly what an approved resume changes: each gate, then each hold cleared."""
    lines = gate_changes(app)
    for hold in incident_holds(app, incident_id):
        lines.append(
            f"clear {hold.state} hold #{hold.id} on {hold.scope} from {hold.source}"
            f" (set by {hold.actor}: {hold.reason})"
        )
    return lines
