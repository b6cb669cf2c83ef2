"""Gates across hosts, stored: each change asked for (a generation, in order) and what the agent
on the trading system's host last read back from its files (one reading, renewed each poll)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from rollbot.clock import iso, parse_iso
from rollbot.storage.db import Database, dumps, loads

READING = "trading"  # one trading system's gates per desk


class GateChange(BaseModel):
    generation: int
    requested_at: datetime
    values: dict[str, Any]
    actor: str
    reason: str
    incident_id: str | None = None
    applied_at: datetime | None = None
    applied_by: str | None = None


class GateReading(BaseModel):
    host: str
    generation: int
    values: dict[str, Any]
    readable: bool
    problem: str
    read_at: datetime


def _change(row: dict[str, Any]) -> GateChange:
    return GateChange(
        generation=row["generation"],
        requested_at=parse_iso(row["requested_at"]),
        values=loads(row["gate_values"]) or {},
        actor=row["actor"],
        reason=row["reason"],
        incident_id=row["incident_id"],
        applied_at=parse_iso(row["applied_at"]) if row["applied_at"] else None,
        applied_by=row["applied_by"],
    )


class GateChanges:
    def __init__(self, db: Database) -> None:
        self.db = db

    def request(
        self,
        values: dict[str, Any],
        actor: str,
        reason: str,
        incident_id: str | None,
        now: datetime,
        *,
        applied_by: str | None = None,
    ) -> int:
        """The next generation; inside the caller's write with its event."""
        with self.db.write():
            row = self.db.one("SELECT MAX(generation) AS g FROM gate_changes")
            generation = int(row["g"] or 0) + 1 if row else 1
            self.db.execute(
                "INSERT INTO gate_changes (generation, requested_at, gate_values, actor, reason,"
                " incident_id, applied_at, applied_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    generation,
                    iso(now),
                    dumps(values),
                    actor,
                    reason,
                    incident_id,
                    iso(now) if applied_by else None,
                    applied_by,
                ),
            )
        return generation

    def latest(self) -> GateChange | None:
        row = self.db.one("SELECT * FROM gate_changes ORDER BY generation DESC LIMIT 1")
        return _change(row) if row else None

    def applied(self, generation: int, by: str, now: datetime) -> None:
        self.db.execute(
            "UPDATE gate_changes SET applied_at = ?, applied_by = ?"
            " WHERE generation <= ? AND applied_at IS NULL",
            (iso(now), by, generation),
        )

    def report(
        self,
        host: str,
        generation: int,
        values: dict[str, Any],
        readable: bool,
        problem: str,
        now: datetime,
    ) -> None:
        self.db.execute(
            "INSERT INTO gate_readings (name, host, generation, gate_values, readable, problem,"
            " read_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
            " host = excluded.host, generation = excluded.generation,"
            " gate_values = excluded.gate_values, readable = excluded.readable,"
            " problem = excluded.problem, read_at = excluded.read_at",
            (READING, host, generation, dumps(values), int(readable), problem[:500], iso(now)),
        )

    def reading(self) -> GateReading | None:
        row = self.db.one("SELECT * FROM gate_readings WHERE name = ?", (READING,))
        if row is None:
            return None
        return GateReading(
            host=row["host"],
            generation=row["generation"],
            values=loads(row["gate_values"]) or {},
            readable=bool(row["readable"]),
            problem=row["problem"],
            read_at=parse_iso(row["read_at"]),
        )
