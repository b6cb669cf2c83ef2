"""Post-rollback checklists (Live -> Shadow seed, "Post-Rollback Actions"): the items of
commands/rollback/report.py CHECKLIST, due 1 h and 24 h after the incident opened, each ticked by a
named person; when a deadline passes, one reminder in the thread lists the items still open.

The items are stored in checklist_items (the report reads them from there); each deadline is a
durable timer, so a reminder survives restarts and fires once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from rollbot.clock import iso, parse_iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.report import CHECKLIST
from rollbot.errors import BadInput, NotFound
from rollbot.storage.events import Actor
from rollbot.storage.timers import Timer, Timers

TIMER_KIND = "checklist_reminder"
ITEMS = {key: (label, within) for key, label, within in CHECKLIST}


class ChecklistItem(BaseModel):
    item: str
    label: str
    due_at: datetime
    ticked_by: str | None = None
    ticked_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.ticked_at is not None


def _window(within: timedelta) -> str:
    hours = within.total_seconds() / 3600
    return f"{hours:g} hour" + ("" if hours == 1 else "s")


def items(app: Rollbot, incident_id: str) -> list[ChecklistItem]:
    """The incident's checklist in the seed's order; empty when none was opened."""
    rows = {
        r["item"]: r
        for r in app.db.query("SELECT * FROM checklist_items WHERE incident_id = ?", (incident_id,))
    }
    out = []
    for key, _, _ in CHECKLIST:
        r = rows.get(key)
        if r is None:
            continue
        out.append(
            ChecklistItem(
                item=key,
                label=r["label"],
                due_at=parse_iso(r["due_at"]),
                ticked_by=r["ticked_by"],
                ticked_at=parse_iso(r["ticked_at"]) if r["ticked_at"] else None,
            )
        )
    return out


def _who(actor_id: str | None) -> str | None:
    """Slack user ids render as mentions; terminal users as their name."""
    if not actor_id:
        return None
    if actor_id[:1] in ("U", "W") and actor_id.isalnum() and actor_id.isupper():
        return f"<@{actor_id}>"
    return actor_id


def view_data(incident_id: str, rows: list[ChecklistItem]) -> dict[str, Any]:
    """What the "checklist" view renders (one checkbox per item)."""
    return {
        "incident_id": incident_id,
        "title": f"Post-rollback checklist for {incident_id}",
        "items": [
            {
                "item": r.item,
                "label": r.label,
                "window": _window(ITEMS[r.item][1]),
                "due_at": iso(r.due_at),
                "ticked_by": r.ticked_by,
                "ticked_by_label": _who(r.ticked_by),
                "ticked_at": iso(r.ticked_at) if r.ticked_at else None,
            }
            for r in rows
        ],
    }


def open_checklist(
    app: Rollbot, incident_id: str, actor: Actor | None = None
) -> list[ChecklistItem]:
    """Create the items (due opened_at + 1 h / 24 h), their reminders, and post the checklist.

    Idempotent: an incident that has its checklist gets it back unchanged.
    """
    who = actor or Actor.clock("checklist")
    with app.db.write():
        incident = app.incidents.get(incident_id)
        existing = items(app, incident_id)
        if existing:
            return existing
        windows: dict[timedelta, list[str]] = {}
        for key, label, within in CHECKLIST:
            app.db.execute(
                "INSERT INTO checklist_items (incident_id, item, label, due_at)"
                " VALUES (?, ?, ?, ?)",
                (incident_id, key, label, iso(incident.opened_at + within)),
            )
            windows.setdefault(within, []).append(key)
        app.events.append(
            "CHECKLIST_OPENED",
            who,
            incident_id=incident_id,
            data={"items": [key for key, _, _ in CHECKLIST]},
        )
        timers = Timers(app.db, app.clock)
        for within, keys in sorted(windows.items()):
            timers.schedule(
                TIMER_KIND,
                incident_id,
                incident.opened_at + within,
                {"window": _window(within), "items": keys},
            )
        rows = items(app, incident_id)
        app.outbox.put(
            "thread",
            incident_id=incident_id,
            text=f"📋 Post-rollback checklist for {incident_id}: tick each item when done.",
            view="checklist",
            data=view_data(incident_id, rows),
            dedupe_key=f"checklist:{incident_id}",
        )
        return rows


def _set(
    app: Rollbot, incident_id: str, item: str, actor: Actor, ticked: bool
) -> list[ChecklistItem]:
    if item not in ITEMS:
        raise BadInput(f"unknown checklist item {item!r} (items: {', '.join(ITEMS)})")
    with app.db.write():
        rows = items(app, incident_id)
        if not rows:
            app.incidents.get(incident_id)  # NotFound for an unknown incident
            raise NotFound(f"{incident_id} has no post-rollback checklist")
        row = next(r for r in rows if r.item == item)
        if row.done == ticked:
            return rows
        now = app.clock.now()
        app.db.execute(
            "UPDATE checklist_items SET ticked_by = ?, ticked_at = ?"
            " WHERE incident_id = ? AND item = ?",
            (actor.id if ticked else None, iso(now) if ticked else None, incident_id, item),
        )
        app.events.append(
            "CHECKLIST_TICKED" if ticked else "CHECKLIST_UNTICKED",
            actor,
            incident_id=incident_id,
            data={"item": item, "label": row.label},
        )
        rows = items(app, incident_id)
        # kind "approval" = refresh every posted copy of this view (bot/slack/courier.py)
        app.outbox.put(
            "approval", incident_id=incident_id, view="checklist", data=view_data(incident_id, rows)
        )
        return rows


def tick(app: Rollbot, incident_id: str, item: str, actor: Actor) -> list[ChecklistItem]:
    """Record who did the item, and when; ticking a ticked item changes nothing."""
    return _set(app, incident_id, item, actor, True)


def untick(app: Rollbot, incident_id: str, item: str, actor: Actor) -> list[ChecklistItem]:
    return _set(app, incident_id, item, actor, False)


def parse_value(value: str) -> tuple[str, str]:
    """A checkbox value "INC-0001|incident_ticket" -> (incident id, item)."""
    incident_id, sep, item = value.partition("|")
    if not sep or not incident_id or item not in ITEMS:
        raise BadInput(f"not a checklist item: {value!r}")
    return incident_id, item


def on_reminder(app: Rollbot, timer: Timer, lag_s: float) -> None:
    """Timer handler: list the items due by this deadline that nobody has ticked."""
    due = [r for r in items(app, timer.ref) if not r.done and r.due_at <= timer.due_at]
    if not due:
        return None
    window = timer.payload.get("window", "")
    app.events.append(
        "CHECKLIST_REMINDER",
        Actor.clock("checklist"),
        incident_id=timer.ref,
        data={"items": [r.item for r in due], "window": window, "lag_s": lag_s},
    )
    lines = "\n".join(f"• {r.label} (due {iso(r.due_at)})" for r in due)
    app.outbox.put(
        "thread",
        incident_id=timer.ref,
        text=f"⏰ {timer.ref}: the {window} post-rollback deadline has passed and "
        f"{len(due)} item(s) are still open:\n{lines}",
        view="checklist_reminder",
        data={
            "incident_id": timer.ref,
            "window": window,
            "due_at": iso(timer.due_at),
            "items": [{"item": r.item, "label": r.label, "due_at": iso(r.due_at)} for r in due],
        },
        dedupe_key=f"checklist:{timer.ref}:reminder:{timer.id}",
    )
    return None


# A rollback closed longer ago than the checklist's last window is history: a checklist opened
# now would only be overdue (and an old database would get one for every past rollback at once).
CLOSED_WINDOW = max(within for _, _, within in CHECKLIST)
_FINISHED = (
    "SELECT i.id, i.seq FROM incidents i INDEXED BY {index} WHERE {where} AND i.kind = 'rollback'"
    " AND NOT EXISTS (SELECT 1 FROM checklist_items c WHERE c.incident_id = i.id)"
    " AND EXISTS (SELECT 1 FROM events e INDEXED BY events_step_ended"
    " WHERE e.incident_id = i.id AND e.kind = 'STEP_ENDED'"
    " AND json_extract(e.data, '$.step') = 5)"
)
# open rollbacks (incidents_open) and those closed within the window (incidents_closed_at); the
# step reports of only these, through the STEP_ENDED partial index
FINISHED_ROLLBACKS_SQL = (
    _FINISHED.format(index="incidents_open", where="i.status = 'OPEN'")
    + " UNION "
    + _FINISHED.format(index="incidents_closed_at", where="i.closed_at >= ?")
)


def open_finished_rollbacks(app: Rollbot) -> list[str]:
    """The clock's sweep: a checklist for every rollback whose step 5 ended without one (open,
    or closed within the checklist's last window)."""
    since = iso(app.clock.now() - CLOSED_WINDOW)
    opened = []
    rows = sorted(app.db.query(FINISHED_ROLLBACKS_SQL, (since,)), key=lambda r: r["seq"])
    for r in rows:
        open_checklist(app, r["id"])
        opened.append(r["id"])
    return opened
