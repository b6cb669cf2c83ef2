"""An incident's runs after the first: an approved flatten or rollback continues the open
incident it belongs to (INCIDENT_CONTINUED, once per key) rather than open a second one. Here
is how a run reads which run it is: its steps, its kind and scope, its symbols, and the steps
it has already ended.
"""

from __future__ import annotations

from typing import Any

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.desk.mrkdwn import escape
from rollbot.commands.rollback.run_model import (
    FLATTEN_STEPS,
    KILL_STEPS,
    ROLLBACK_STEPS,
    StepReport,
)
from rollbot.storage.db import loads
from rollbot.storage.events import Actor
from rollbot.storage.incidents import Incident
from rollbot.storage.json_text import text_field


def covering_incident(app: Rollbot, action: str, venue: str | None) -> Incident | None:
    """The open incident a flatten or rollback asked for now belongs to: the latest one whose
    scope covers what it closes (a flatten of venue V: a global or venue:V incident; a flatten
    of everything or a rollback: a global one). Its request goes in that thread and, approved,
    continues it."""
    scopes = {"global"} | ({f"venue:{venue}"} if action == "flatten" and venue else set())
    for incident in app.incidents.list(open_only=True, limit=50):
        if incident.scope in scopes:
            return incident
    return None


def record_continuation(
    app: Rollbot,
    actor: Actor,
    incident_id: str,
    *,
    kind: str,
    scope: str,
    steps: tuple[int, ...],
    reason: str,
    dedupe_key: str,
    symbols: set[str] | None,
) -> Incident:
    """INCIDENT_CONTINUED and its line in the thread, once per key; the incident as stored."""
    with app.db.write():
        incident = app.incidents.get(incident_id)
        seen = app.db.one(
            "SELECT id FROM events WHERE incident_id = ? AND kind = 'INCIDENT_CONTINUED'"
            f" AND {text_field(app.db, 'data', 'key')} = ?",
            (incident_id, dedupe_key),
        )
        if seen is None:
            # what steps_of, as_run and symbols_of read back for every later run
            data = {
                "kind": kind,
                "scope": scope,
                "steps": list(steps),
                "key": dedupe_key,
                "symbols": sorted(symbols) if symbols else None,
            }
            app.events.append(
                "INCIDENT_CONTINUED",
                actor,
                reason=reason,
                scope=scope,
                incident_id=incident_id,
                data=data,
            )
            app.outbox.put(
                "thread",
                incident_id=incident_id,
                text=f"▶ {kind.capitalize()} of {scope} continues {incident_id}: {escape(reason)}",
            )
    return incident


def continuation(app: Rollbot, incident_id: str) -> tuple[int, dict[str, Any]]:
    """(event id, data) of the incident's latest continuation; (0, {}) when it has none."""
    row = app.db.one(
        "SELECT id, data FROM events WHERE incident_id = ? AND kind = 'INCIDENT_CONTINUED'"
        " ORDER BY id DESC LIMIT 1",
        (incident_id,),
    )
    return (int(row["id"]), loads(row["data"]) or {}) if row else (0, {})


def symbols_of(app: Rollbot, incident_id: str) -> set[str] | None:
    """The subset of symbols the current run flattens; None: all of them."""
    mark, data = continuation(app, incident_id)
    if mark:
        return set(data["symbols"]) if data.get("symbols") else None
    found = app.events.list(incident_id=incident_id, kinds=["FLATTEN_SYMBOLS"], limit=1)
    return set(found[0].data["symbols"]) if found else None


def steps_of(app: Rollbot, incident: Incident) -> tuple[int, ...]:
    mark, data = continuation(app, incident.id)
    if mark:
        return tuple(data["steps"])
    return {"kill": KILL_STEPS, "flatten": FLATTEN_STEPS}.get(incident.kind, ROLLBACK_STEPS)


def finished_steps(app: Rollbot, incident_id: str) -> dict[int, StepReport]:
    """The steps of the incident's current run: after its latest continuation, if any."""
    mark, _ = continuation(app, incident_id)
    rows = app.db.query(
        "SELECT data FROM events WHERE incident_id = ? AND kind = 'STEP_ENDED' AND id > ?"
        " ORDER BY id",
        (incident_id, mark),
    )
    reports = [StepReport.model_validate(loads(r["data"])) for r in rows]
    return {s.step: s for s in reports}


def as_run(app: Rollbot, incident: Incident) -> tuple[Incident, int]:
    """The incident as its current run sees it: a continuation's kind and scope."""
    mark, data = continuation(app, incident.id)
    if not mark:
        return incident, 0
    return incident.model_copy(update={"kind": data["kind"], "scope": data["scope"]}), mark
