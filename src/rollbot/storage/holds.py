"""Kill-switch holds: one row per (scope, source, incident) while active, so each kill is its own
hold; history kept after clearing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from rollbot.clock import iso, parse_iso
from rollbot.storage.db import Database


class Hold(BaseModel):
    id: int
    scope: str
    source: str
    state: str
    reason: str
    actor: str
    incident_id: str | None = None
    created_at: datetime
    updated_at: datetime
    cleared_at: datetime | None = None
    cleared_by: str | None = None
    clear_reason: str | None = None


def _hold(row: dict[str, Any]) -> Hold:
    row = dict(row)
    for key in ("created_at", "updated_at", "cleared_at"):
        row[key] = parse_iso(row[key]) if row[key] else None
    return Hold(**row)


class Holds:
    def __init__(self, db: Database) -> None:
        self.db = db

    def active(self, scopes: list[str] | None = None) -> list[Hold]:
        sql = "SELECT * FROM holds WHERE cleared_at IS NULL"
        params: tuple[str, ...] = ()
        if scopes is not None:
            sql += f" AND scope IN ({','.join('?' * len(scopes))})"
            params = tuple(scopes)
        return [_hold(r) for r in self.db.query(sql + " ORDER BY id", params)]

    def active_states(self, scopes: list[str]) -> list[str]:
        """The distinct states of the active holds on these scopes: a desk's many kills of one
        scope (each its own hold) cost one row per state here, not one model per hold."""
        marks = ",".join("?" * len(scopes))
        rows = self.db.query(
            f"SELECT DISTINCT state FROM holds WHERE cleared_at IS NULL AND scope IN ({marks})",
            tuple(scopes),
        )
        return [r["state"] for r in rows]

    def find(self, scope: str, source: str, incident_id: str | None = None) -> Hold | None:
        row = self.db.one(
            "SELECT * FROM holds WHERE scope = ? AND source = ? AND IFNULL(incident_id, '') = ?"
            " AND cleared_at IS NULL",
            (scope, source, incident_id or ""),
        )
        return _hold(row) if row else None

    def by_ids(self, hold_ids: list[int]) -> list[Hold]:
        """These holds, cleared or not, in id order."""
        if not hold_ids:
            return []
        marks = ",".join("?" * len(hold_ids))
        sql = f"SELECT * FROM holds WHERE id IN ({marks}) ORDER BY id"
        rows = self.db.query(sql, tuple(hold_ids))
        return [_hold(r) for r in rows]

    def insert(
        self,
        scope: str,
        source: str,
        state: str,
        reason: str,
        actor: str,
        incident_id: str | None,
        now: datetime,
    ) -> Hold:
        """The new hold as stored (RETURNING: no second round trip to read it back)."""
        row = self.db.execute(
            "INSERT INTO holds (scope, source, state, reason, actor, incident_id, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
            (scope, source, state, reason, actor, incident_id, iso(now), iso(now)),
        ).fetchone()
        return _hold(row)

    def set_state(self, hold_id: int, state: str, now: datetime) -> None:
        self.db.execute(
            "UPDATE holds SET state = ?, updated_at = ? WHERE id = ?", (state, iso(now), hold_id)
        )

    def clear(self, hold_id: int, by: str, reason: str, now: datetime) -> None:
        self.db.execute(
            "UPDATE holds SET cleared_at = ?, cleared_by = ?, clear_reason = ? WHERE id = ?",
            (iso(now), by, reason, hold_id),
        )
