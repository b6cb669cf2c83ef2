"""Durable deadlines: one row per thing that must happen at a given time, whoever is running.

A deadline is fired by claiming it: the claim sets `fired_at` only while the row is still
pending and still carries the token the claimer read, inside the caller's write transaction.
Two processes (or a scheduler job and the auditor) racing for one deadline therefore see one
winner; the loser finds the row already fired and does nothing.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from rollbot.clock import Clock, iso, parse_iso
from rollbot.storage.db import Database, dumps, loads


class Timer(BaseModel):
    id: int
    kind: str
    ref: str
    due_at: datetime
    token: str
    payload: dict[str, Any] = {}
    fired_at: datetime | None = None
    cancelled_at: datetime | None = None
    created_at: datetime

    @property
    def pending(self) -> bool:
        return self.fired_at is None and self.cancelled_at is None


def _row(row: dict[str, Any]) -> Timer:
    return Timer(
        id=row["id"],
        kind=row["kind"],
        ref=row["ref"],
        due_at=parse_iso(row["due_at"]),
        token=row["token"],
        payload=loads(row["payload"]) or {},
        fired_at=parse_iso(row["fired_at"]) if row["fired_at"] else None,
        cancelled_at=parse_iso(row["cancelled_at"]) if row["cancelled_at"] else None,
        created_at=parse_iso(row["created_at"]),
    )


class Timers:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def schedule(
        self, kind: str, ref: str, due_at: datetime, payload: dict[str, Any] | None = None
    ) -> Timer:
        token = secrets.token_hex(8)
        cur = self.db.execute(
            "INSERT INTO timers (kind, ref, due_at, token, payload, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (kind, ref, iso(due_at), token, dumps(payload or {}), iso(self.clock.now())),
        )
        timer = self.get(int(cur.lastrowid or 0))
        assert timer is not None
        return timer

    def get(self, timer_id: int) -> Timer | None:
        row = self.db.one("SELECT * FROM timers WHERE id = ?", (timer_id,))
        return _row(row) if row else None

    def pending(
        self,
        *,
        due_by: datetime | None = None,
        kind: str | None = None,
        ref: str | None = None,
    ) -> list[Timer]:
        """Unfired, uncancelled deadlines, earliest first; due_by: only those due by then."""
        where = ["fired_at IS NULL", "cancelled_at IS NULL"]
        params: list[Any] = []
        if due_by is not None:
            # ISO-8601 UTC strings with a fixed layout sort as the instants they name
            where.append("due_at <= ?")
            params.append(iso(due_by))
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if ref is not None:
            where.append("ref = ?")
            params.append(ref)
        sql = f"SELECT * FROM timers WHERE {' AND '.join(where)} ORDER BY due_at, id"
        return [_row(r) for r in self.db.query(sql, tuple(params))]

    def claim(self, timer_id: int, token: str) -> Timer | None:
        """Mark a pending deadline fired; None if it was fired, cancelled or re-tokened already.

        Call inside `with db.write()` so the claim and what the firing changes commit together.
        """
        cur = self.db.execute(
            "UPDATE timers SET fired_at = ? WHERE id = ? AND token = ?"
            " AND fired_at IS NULL AND cancelled_at IS NULL",
            (iso(self.clock.now()), timer_id, token),
        )
        if cur.rowcount != 1:
            return None
        return self.get(timer_id)

    def cancel(self, kind: str, ref: str) -> list[int]:
        """Cancel every pending deadline of this kind for this ref; the ids cancelled."""
        with self.db.write():
            ids = [t.id for t in self.pending(kind=kind, ref=ref)]
            if ids:
                self.db.execute(
                    f"UPDATE timers SET cancelled_at = ? WHERE id IN ({','.join('?' * len(ids))})",
                    (iso(self.clock.now()), *ids),
                )
        return ids
