"""Kill-switch holds: one row per (scope, source, incident) while active, so each kill is its own
hold; history kept after clearing."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from pydantic import BaseModel

from rollbot.clock import iso, parse_iso
from rollbot.storage.db import Database
from rollbot.storage.rows_sql import MAX_ROWS, rows_sql

# one active hold per (scope, source, incident): the index holds_active_per_kill
HoldKey = tuple[str, str, str | None]

INSERT_HOLD = (
    "INSERT INTO holds (scope, source, state, reason, actor, incident_id, created_at,"
    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *"
)


class NewHold(NamedTuple):
    scope: str
    source: str
    state: str
    reason: str
    actor: str
    incident_id: str | None


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
        key = (scope, source, incident_id or None)
        return self.find_many([key]).get(key)

    def find_many(self, keys: list[HoldKey]) -> dict[HoldKey, Hold]:
        """The active hold of each (scope, source, incident), where there is one: one query
        through the index holds_active_per_kill, whatever the number of keys."""
        found: dict[HoldKey, Hold] = {}
        wanted = list(dict.fromkeys((s, src, inc or None) for s, src, inc in keys))
        for start in range(0, len(wanted), MAX_ROWS):
            part = wanted[start : start + MAX_ROWS]
            match = " OR ".join(
                ["(scope = ? AND source = ? AND IFNULL(incident_id, '') = ?)"] * len(part)
            )
            rows = self.db.query(
                f"SELECT * FROM holds WHERE cleared_at IS NULL AND ({match})",
                tuple(v for scope, source, inc in part for v in (scope, source, inc or "")),
            )
            for row in rows:
                hold = _hold(row)
                found[(hold.scope, hold.source, hold.incident_id)] = hold
        return found

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
        new = NewHold(scope, source, state, reason, actor, incident_id or None)
        return self.insert_many([new], now)[(scope, source, new.incident_id)]

    def insert_many(self, holds: list[NewHold], now: datetime) -> dict[HoldKey, Hold]:
        """New holds, each as stored, by (scope, source, incident): one INSERT ... RETURNING
        (RETURNING's row order is not promised, so rows are matched by their key)."""
        stored: dict[HoldKey, Hold] = {}
        at = iso(now)
        for start in range(0, len(holds), MAX_ROWS):
            part = holds[start : start + MAX_ROWS]
            rows = self.db.execute(
                rows_sql(INSERT_HOLD, len(part)),
                tuple(v for h in part for v in (*h, at, at)),
            ).fetchall()
            for row in rows:
                hold = _hold(row)
                stored[(hold.scope, hold.source, hold.incident_id)] = hold
        return stored

    def set_state(self, hold_id: int, state: str, now: datetime) -> None:
        self.db.execute(
            "UPDATE holds SET state = ?, updated_at = ? WHERE id = ?", (state, iso(now), hold_id)
        )

    def clear(self, hold_id: int, by: str, reason: str, now: datetime) -> None:
        self.db.execute(
            "UPDATE holds SET cleared_at = ?, cleared_by = ?, clear_reason = ? WHERE id = ?",
            (iso(now), by, reason, hold_id),
        )
