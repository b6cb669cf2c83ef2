"""What the guard allowed under REDUCING and has not yet seen filled or cancelled, and the
position it measured them against: the last read of the venue. In SQLite, so every process that
runs the guard (the bot, `guard serve`, a trading system calling `check_order`) shares them."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from rollbot.clock import iso, parse_iso
from rollbot.storage.db import Database


class Reservations:
    def __init__(self, db: Database) -> None:
        self.db = db

    def read_at(self, venue: str) -> datetime | None:
        row = self.db.one("SELECT read_at FROM guard_position_reads WHERE venue = ?", (venue,))
        return parse_iso(row["read_at"]) if row else None

    def position(self, venue: str, symbol: str) -> Decimal:
        row = self.db.one(
            "SELECT quantity FROM guard_positions WHERE venue = ? AND symbol = ?", (venue, symbol)
        )
        return Decimal(row["quantity"]) if row else Decimal(0)

    def reserved(self, venue: str, symbol: str) -> Decimal:
        rows = self.db.query(
            "SELECT quantity FROM guard_reservations"
            " WHERE venue = ? AND symbol = ? AND released_at IS NULL",
            (venue, symbol),
        )
        return sum((Decimal(r["quantity"]) for r in rows), Decimal(0))

    def reserve(
        self,
        venue: str,
        symbol: str,
        side: str,
        quantity: Decimal,
        order_id: str | None,
        now: datetime,
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO guard_reservations (venue, symbol, side, quantity, order_id, reserved_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (venue, symbol, side, str(quantity), order_id, iso(now)),
        )
        return int(cur.lastrowid or 0)

    def release(self, order_id: str, reason: str, now: datetime, venue: str | None = None) -> int:
        """Release the open reservations of this order id; how many were released."""
        sql = (
            "UPDATE guard_reservations SET released_at = ?, release_reason = ?"
            " WHERE order_id = ? AND released_at IS NULL"
        )
        params: tuple[str, ...] = (iso(now), reason, order_id)
        if venue:
            sql += " AND venue = ?"
            params += (venue,)
        return self.db.execute(sql, params).rowcount

    def store_read(
        self,
        venue: str,
        started: datetime,
        positions: dict[str, Decimal],
        open_orders: list[tuple[str, str | None, str, str, Decimal]],
        send_grace_s: float,
    ) -> None:
        """One venue read: orders first, then positions (see Guard.refresh), taken from
        `started`. A reservation made at least `send_grace_s` before the read whose order is no
        longer open is done (its fill is in the positions just read); one still open keeps only
        what remains. Without an order id, any open order on that symbol and side keeps it."""
        with self.db.write():
            self.db.execute("DELETE FROM guard_positions WHERE venue = ?", (venue,))
            for symbol, qty in positions.items():
                self.db.execute(
                    "INSERT INTO guard_positions (venue, symbol, quantity) VALUES (?, ?, ?)",
                    (venue, symbol, str(qty)),
                )
            self.db.execute(
                "INSERT INTO guard_position_reads (venue, read_at) VALUES (?, ?)"
                " ON CONFLICT (venue) DO UPDATE SET read_at = excluded.read_at",
                (venue, iso(started)),
            )
            by_id: dict[str, Decimal] = {}
            working: set[tuple[str, str]] = set()
            for order_id, client_id, symbol, side, remaining in open_orders:
                by_id[order_id] = remaining
                if client_id:
                    by_id[client_id] = remaining
                working.add((symbol, side))
            for row in self.db.query(
                "SELECT id, symbol, side, order_id, reserved_at FROM guard_reservations"
                " WHERE venue = ? AND released_at IS NULL",
                (venue,),
            ):
                oid = row["order_id"]
                if oid and oid in by_id:  # still working: only what remains can still fill
                    self.db.execute(
                        "UPDATE guard_reservations SET quantity = ? WHERE id = ?",
                        (str(by_id[oid]), row["id"]),
                    )
                    continue
                age = (started - parse_iso(row["reserved_at"])).total_seconds()
                if age < send_grace_s:  # the order may not have reached the venue yet
                    continue
                if not oid and (row["symbol"], row["side"]) in working:
                    continue
                self.db.execute(
                    "UPDATE guard_reservations SET released_at = ?, release_reason = ?"
                    " WHERE id = ?",
                    (iso(started), "not open at the venue read", row["id"]),
                )
