"""NAV samples per venue: the monitors' input and the report chart's line."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel

from rollbot.clock import iso, parse_iso
from rollbot.storage.db import Database


class NavSample(BaseModel):
    venue: str
    at: datetime
    nav: Decimal
    currency: str


class NavSamples:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, venue: str, at: datetime, nav: Decimal, currency: str) -> None:
        self.db.execute(
            "INSERT INTO nav_samples (venue, at, nav, currency) VALUES (?, ?, ?, ?)",
            (venue, iso(at), str(nav), currency),
        )

    def list(
        self, venue: str | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> list[NavSample]:
        where, params = [], []
        if venue:
            where.append("venue = ?")
            params.append(venue)
        if since:
            where.append("at >= ?")
            params.append(iso(since))
        if until:
            where.append("at <= ?")
            params.append(iso(until))
        sql = "SELECT venue, at, nav, currency FROM nav_samples"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.db.query(sql + " ORDER BY at, id", tuple(params))
        return [
            NavSample(
                venue=r["venue"],
                at=parse_iso(r["at"]),
                nav=Decimal(r["nav"]),
                currency=r["currency"],
            )
            for r in rows
        ]
