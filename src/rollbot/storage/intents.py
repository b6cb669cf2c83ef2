"""Order intents: every closing order is written here, under a deterministic client order id,
before it is sent. A restart reads them back from the venue instead of sending again."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from rollbot.clock import iso, parse_iso
from rollbot.storage.db import Database


class Intent(BaseModel):
    client_order_id: str
    incident_id: str | None
    venue: str
    symbol: str
    side: str
    quantity: Decimal
    type: str
    limit_price: Decimal | None = None
    attempt: int
    status: str  # PENDING (written, maybe sent), then the venue's order status
    venue_order_id: str | None = None
    filled_quantity: Decimal = Decimal(0)
    detail: str | None = None
    created_at: datetime
    updated_at: datetime

    @property
    def terminal(self) -> bool:
        return self.status in ("FILLED", "CANCELLED", "REJECTED", "NOT_SENT")


def _intent(row: dict[str, Any]) -> Intent:
    row = dict(row)
    row["created_at"] = parse_iso(row["created_at"])
    row["updated_at"] = parse_iso(row["updated_at"])
    return Intent(**row)


class Intents:
    def __init__(self, db: Database) -> None:
        self.db = db

    def for_symbol(self, incident_id: str, venue: str, symbol: str) -> list[Intent]:
        rows = self.db.query(
            "SELECT * FROM order_intents WHERE incident_id = ? AND venue = ? AND symbol = ?"
            " ORDER BY attempt",
            (incident_id, venue, symbol),
        )
        return [_intent(r) for r in rows]

    def for_incident(self, incident_id: str) -> list[Intent]:
        rows = self.db.query(
            "SELECT * FROM order_intents WHERE incident_id = ? ORDER BY created_at, attempt",
            (incident_id,),
        )
        return [_intent(r) for r in rows]

    def create(self, intent: Intent) -> bool:
        """False when this client order id exists already (a concurrent or repeated run)."""
        cur = self.db.execute(
            "INSERT INTO order_intents (client_order_id, incident_id, venue, symbol,"
            " side, quantity, type, limit_price, attempt, status, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                intent.client_order_id,
                intent.incident_id,
                intent.venue,
                intent.symbol,
                intent.side,
                str(intent.quantity),
                intent.type,
                None if intent.limit_price is None else str(intent.limit_price),
                intent.attempt,
                intent.status,
                iso(intent.created_at),
                iso(intent.updated_at),
            ),
        )
        return cur.rowcount == 1

    def update(
        self,
        client_order_id: str,
        *,
        status: str,
        now: datetime,
        venue_order_id: str | None = None,
        filled: Decimal | None = None,
        detail: str | None = None,
    ) -> None:
        self.db.execute(
            "UPDATE order_intents SET status = ?, updated_at = ?,"
            " venue_order_id = COALESCE(?, venue_order_id),"
            " filled_quantity = COALESCE(?, filled_quantity), detail = COALESCE(?, detail)"
            " WHERE client_order_id = ?",
            (
                status,
                iso(now),
                venue_order_id,
                None if filled is None else str(filled),
                detail,
                client_order_id,
            ),
        )
