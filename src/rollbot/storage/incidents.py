"""Incidents: one row per kill / rollback / flatten episode; its story lives in events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from rollbot.clock import Clock, iso, parse_iso
from rollbot.errors import NotFound
from rollbot.storage.db import Database
from rollbot.storage.events import Actor, EventLog


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
        with self.db.write():
            # one round trip: the incident this key opened before, and the next number
            seq_row = self.db.one(
                "SELECT COALESCE(MAX(seq), 0) + 1 AS n, (SELECT id FROM incidents"
                " WHERE dedupe_key = ? LIMIT 1) AS seen FROM incidents",
                (dedupe_key,),
            )
            if dedupe_key and seq_row and seq_row["seen"]:
                return self.get(seq_row["seen"]), False
            seq = max(int(seq_row["n"]) if seq_row else 1, self.first_seq)
            incident_id = f"{self.prefix}-{seq:04d}"
            now = self.clock.now()
            row = self.db.execute(
                "INSERT INTO incidents (id, seq, opened_at, opened_by, source, kind, reason, scope,"
                " trigger, trigger_value, trigger_threshold, dedupe_key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
                (
                    incident_id,
                    seq,
                    iso(now),
                    actor.id,
                    actor.source,
                    kind,
                    reason,
                    scope,
                    trigger,
                    trigger_value,
                    trigger_threshold,
                    dedupe_key,
                ),
            ).fetchone()
            self.events.append(
                "INCIDENT_OPENED",
                actor,
                reason=reason,
                scope=scope,
                incident_id=incident_id,
                data={
                    "kind": kind,
                    "trigger": trigger,
                    "trigger_value": trigger_value,
                    "trigger_threshold": trigger_threshold,
                },
            )
        return _row(row), True  # as stored (RETURNING: not read back)

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
