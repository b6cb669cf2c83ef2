"""Incidents: one row per kill / rollback / flatten episode; its story lives in events."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from pydantic import BaseModel

from rollbot.clock import Clock, iso, parse_iso
from rollbot.errors import NotFound
from rollbot.storage.db import Database
from rollbot.storage.events import Actor, EventLog, NewEvent
from rollbot.storage.rows_sql import MAX_ROWS, rows_sql

INSERT_INCIDENT = (
    "INSERT INTO incidents (id, seq, opened_at, opened_by, source, kind, reason, scope, trigger,"
    " trigger_value, trigger_threshold, dedupe_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " RETURNING *"
)


class NewIncident(NamedTuple):
    """An incident to open (Incidents.open's arguments, for open_many)."""

    kind: str
    reason: str
    actor: Actor
    scope: str = "global"
    trigger: str | None = None
    trigger_value: float | None = None
    trigger_threshold: float | None = None
    dedupe_key: str | None = None


class Incident(BaseModel):
    id: str
    seq: int
    opened_at: datetime
    opened_by: str
    source: str
    kind: str
    status: str
    phase: str
    reason: str
    scope: str
    trigger: str | None = None
    trigger_value: float | None = None
    trigger_threshold: float | None = None
    final_status: str | None = None
    start_nav: str | None = None
    closed_at: datetime | None = None
    slack_channel: str | None = None
    slack_ts: str | None = None
    dedupe_key: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status == "OPEN"


def _row(row: dict[str, Any]) -> Incident:
    row = dict(row)
    row["opened_at"] = parse_iso(row["opened_at"])
    row["closed_at"] = parse_iso(row["closed_at"]) if row["closed_at"] else None
    return Incident(**row)


class Incidents:
    def __init__(self, db: Database, events: EventLog, clock: Clock) -> None:
        self.db = db
        self.events = events
        self.clock = clock
        # a drill's sandbox numbers its incident DRILL-N after the main database's drill N, so
        # a rehearsal is never mistaken for the desk's own INC-0001
        self.prefix = "INC"
        self.first_seq = 1

    def open(
        self,
        *,
        kind: str,
        reason: str,
        actor: Actor,
        scope: str = "global",
        trigger: str | None = None,
        trigger_value: float | None = None,
        trigger_threshold: float | None = None,
        dedupe_key: str | None = None,
    ) -> tuple[Incident, bool]:
        """Open an incident; with a dedupe_key seen before, return that one (False: not new)."""
        wanted = NewIncident(
            kind, reason, actor, scope, trigger, trigger_value, trigger_threshold, dedupe_key
        )
        return self.open_many([wanted])[0]

    def open_many(self, wanted: list[NewIncident]) -> list[tuple[Incident, bool]]:
        """Open these incidents, numbered in this order, in one transaction and a fixed number
        of round trips (a burst of kills). One whose dedupe_key opened an incident before, in
        the database or earlier in this list, is that incident (False: not new)."""
        keys = list(dict.fromkeys(w.dedupe_key for w in wanted if w.dedupe_key))
        # one round trip: the next number, and the incidents these keys opened before
        sql = "SELECT COALESCE(MAX(seq), 0) + 1 AS n, NULL AS seen, NULL AS dedupe FROM incidents"
        if keys:
            sql += (
                " UNION ALL SELECT NULL, id, dedupe_key FROM incidents WHERE dedupe_key IN"
                f" ({','.join('?' * len(keys))})"
            )
        with self.db.write():
            found = self.db.query(sql, tuple(keys))
            seen = {r["dedupe"]: r["seen"] for r in found if r["seen"] is not None}
            top = [int(r["n"]) for r in found if r["n"] is not None]
            seq = max(top[0] if top else 1, self.first_seq)
            now = iso(self.clock.now())
            ids: list[tuple[str, bool]] = []  # each wanted incident's id, and whether it is new
            rows: list[tuple[Any, ...]] = []
            events: list[NewEvent] = []
            for w in wanted:
                if w.dedupe_key and w.dedupe_key in seen:
                    ids.append((seen[w.dedupe_key], False))
                    continue
                incident_id = f"{self.prefix}-{seq:04d}"
                if w.dedupe_key:
                    seen[w.dedupe_key] = incident_id
                rows.append(
                    (incident_id, seq, now, w.actor.id, w.actor.source, w.kind, w.reason,
                     w.scope, w.trigger, w.trigger_value, w.trigger_threshold, w.dedupe_key)
                )  # fmt: skip
                data = {
                    "kind": w.kind,
                    "trigger": w.trigger,
                    "trigger_value": w.trigger_value,
                    "trigger_threshold": w.trigger_threshold,
                }
                events.append(
                    NewEvent("INCIDENT_OPENED", w.actor, w.reason, w.scope, incident_id, data)
                )
                ids.append((incident_id, True))
                seq += 1
            stored: dict[str, Incident] = {}
            for start in range(0, len(rows), MAX_ROWS):
                part = rows[start : start + MAX_ROWS]
                cur = self.db.execute(
                    rows_sql(INSERT_INCIDENT, len(part)), tuple(v for r in part for v in r)
                )
                stored.update((r["id"], _row(r)) for r in cur.fetchall())  # as stored: RETURNING
            self.events.append_many(events)
            before = {i: self.get(i) for i, new in ids if not new and i not in stored}
        return [(stored[i], new) if i in stored else (before[i], False) for i, new in ids]

    def get(self, incident_id: str) -> Incident:
        row = self.db.one("SELECT * FROM incidents WHERE id = ?", (incident_id,))
        if not row:
            raise NotFound(f"unknown incident {incident_id!r}")
        return _row(row)

    def latest(self) -> Incident | None:
        row = self.db.one("SELECT * FROM incidents ORDER BY seq DESC LIMIT 1")
        return _row(row) if row else None

    def list(self, *, open_only: bool = False, limit: int = 50) -> list[Incident]:
        sql = "SELECT * FROM incidents"
        if open_only:
            sql += " WHERE status = 'OPEN'"
        sql += f" ORDER BY seq DESC LIMIT {int(limit)}"
        return [_row(r) for r in self.db.query(sql)]

    def set_phase(self, incident_id: str, phase: str, actor: Actor, **data: Any) -> None:
        with self.db.write():
            self.db.execute("UPDATE incidents SET phase = ? WHERE id = ?", (phase, incident_id))
            self.events.append(
                "INCIDENT_PHASE", actor, incident_id=incident_id, data={"phase": phase, **data}
            )

    def update(self, incident_id: str, **fields: Any) -> None:
        """Bookkeeping columns only (start NAV, Slack message handles, final status)."""
        allowed = {
            "start_nav",
            "slack_channel",
            "slack_ts",
            "final_status",
            "trigger",
            "trigger_value",
            "trigger_threshold",
        }
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(
            f"UPDATE incidents SET {sets} WHERE id = ?", (*fields.values(), incident_id)
        )

    def close(
        self, incident_id: str, actor: Actor, reason: str, final_status: str | None = None
    ) -> Incident:
        with self.db.write():
            inc = self.get(incident_id)
            if not inc.is_open:
                return inc
            self.db.execute(
                "UPDATE incidents SET status = 'CLOSED', closed_at = ?,"
                " final_status = COALESCE(?, final_status) WHERE id = ?",
                (iso(self.clock.now()), final_status, incident_id),
            )
            self.events.append("INCIDENT_CLOSED", actor, reason=reason, incident_id=incident_id)
        return self.get(incident_id)
