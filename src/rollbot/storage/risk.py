"""The risk monitors' records: venue events kept for per-hour counts (shared by every process and
surviving restarts), and trigger firings (one active row per trigger and venue: no storms)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from rollbot.clock import iso, parse_iso
from rollbot.storage.db import Database, dumps, loads

DESK = "*"  # the venue key of desk-wide triggers (kills_per_day)


class StoredVenueEvent(BaseModel):
    venue: str
    kind: str
    at: datetime
    code: str | None = None
    value: float | None = None


class RiskVenueEvents:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add_many(self, rows: list[StoredVenueEvent]) -> None:
        with self.db.write():
            for r in rows:
                self.db.execute(
                    "INSERT INTO risk_venue_events (venue, kind, at, code, value)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (r.venue, r.kind, iso(r.at), r.code, r.value),
                )

    def list(self, venue: str, kinds: list[str], since: datetime) -> list[StoredVenueEvent]:
        rows = self.db.query(
            "SELECT venue, kind, at, code, value FROM risk_venue_events WHERE venue = ?"
            f" AND kind IN ({','.join('?' * len(kinds))}) AND at > ? ORDER BY at, id",
            (venue, *kinds, iso(since)),
        )
        return [StoredVenueEvent(**{**r, "at": parse_iso(r["at"])}) for r in rows]

    def prune(self, before: datetime) -> None:
        self.db.execute("DELETE FROM risk_venue_events WHERE at < ?", (iso(before),))


class Firing(BaseModel):
    id: int
    trigger: str
    venue: str
    action: str
    value: float | None = None
    threshold: float | None = None
    data: dict[str, Any] = {}
    status: str
    incident_id: str | None = None
    fired_at: datetime
    acked_by: str | None = None
    acked_at: datetime | None = None
    cleared_at: datetime | None = None

    @property
    def alert_id(self) -> str:
        return f"risk-{self.id}"

    @property
    def active(self) -> bool:
        return self.cleared_at is None


def _firing(row: dict[str, Any]) -> Firing:
    row = dict(row)
    row["data"] = loads(row["data"]) or {}
    for key in ("fired_at", "acked_at", "cleared_at"):
        row[key] = parse_iso(row[key]) if row[key] else None
    return Firing(**row)


def parse_alert_id(text: str) -> int | None:
    """`risk-12` or `12` -> 12; anything else -> None."""
    raw = text.strip().lower().removeprefix("risk-")
    # ASCII only: "²" is a digit to str.isdigit() but not to int(), and "٣" is not an alert id
    return int(raw) if raw.isascii() and raw.isdigit() else None


class Firings:
    def __init__(self, db: Database) -> None:
        self.db = db

    def insert(
        self,
        *,
        trigger: str,
        venue: str,
        action: str,
        value: float | None,
        threshold: float | None,
        data: dict[str, Any],
        status: str,
        at: datetime,
        incident_id: str | None = None,
    ) -> Firing:
        cur = self.db.execute(
            "INSERT INTO risk_firings (trigger, venue, action, value, threshold, data, status,"
            " incident_id, fired_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (trigger, venue, action, value, threshold, dumps(data), status, incident_id, iso(at)),
        )
        return self.get(int(cur.lastrowid or 0))  # type: ignore[return-value]

    def get(self, firing_id: int) -> Firing | None:
        row = self.db.one("SELECT * FROM risk_firings WHERE id = ?", (firing_id,))
        return _firing(row) if row else None

    def active(self, trigger: str | None = None, venue: str | None = None) -> list[Firing]:
        sql = "SELECT * FROM risk_firings WHERE cleared_at IS NULL"
        params: list[Any] = []
        if trigger is not None:
            sql += " AND trigger = ?"
            params.append(trigger)
        if venue is not None:
            sql += " AND venue = ?"
            params.append(venue)
        return [_firing(r) for r in self.db.query(sql + " ORDER BY id", tuple(params))]

    def recent(self, limit: int = 50) -> list[Firing]:
        rows = self.db.query("SELECT * FROM risk_firings ORDER BY id DESC LIMIT ?", (limit,))
        return [_firing(r) for r in rows]

    def update(self, firing_id: int, **fields: Any) -> None:
        allowed = {"status", "incident_id", "acked_by", "acked_at"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        values = [iso(v) if isinstance(v, datetime) else v for v in fields.values()]
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE risk_firings SET {sets} WHERE id = ?", (*values, firing_id))

    def clear(self, firing_id: int, at: datetime) -> None:
        self.db.execute(
            "UPDATE risk_firings SET cleared_at = ? WHERE id = ? AND cleared_at IS NULL",
            (iso(at), firing_id),
        )
