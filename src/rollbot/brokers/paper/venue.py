"""The embedded paper venue: a simulated broker whose book lives in its own SQLite file, so the
bot, the CLI and a drill in separate processes all see one book.

Three modules, each named for what it holds: book.py the book (and its rows as Order records),
simulator.py the session and its faults and fills, and here the Venue protocol's reads and writes
on top of that simulator."""

from __future__ import annotations

import asyncio
from decimal import ROUND_DOWN, Decimal
from functools import partial
from typing import Any

from rollbot.brokers.base import (
    AccountSnapshot,
    CancelAllResult,
    CloseRequest,
    Order,
    OrderRejected,
    OrderStatus,
    OrderType,
    Position,
    Side,
    VenueEventKind,
    VenueUnavailable,
)
from rollbot.brokers.paper.book import D0, WORKING, dec, to_order
from rollbot.brokers.paper.simulator import PaperSimulator
from rollbot.clock import iso

INLINE_CANCEL_MAX = 500  # working orders a global cancel handles on the event loop (~1 ms)


class PaperVenue(PaperSimulator):
    """The Venue protocol over a PaperBook, with the configured faults."""

    # -- reads --------------------------------------------------------------------------------
    async def account(self) -> AccountSnapshot:
        await self._call()
        acct = self.book.db.one("SELECT * FROM account")
        if acct is None:
            raise VenueUnavailable(self.name, "paper book is not seeded")
        marks = self.book.marks()
        value = sum(
            (
                dec(r["quantity"]) * marks[r["symbol"]]
                for r in self.book.db.query("SELECT * FROM positions")
            ),
            D0,
        )
        return AccountSnapshot(
            venue=self.name,
            nav=dec(acct["cash"]) + value,
            currency=acct["currency"],
            at=self.clock.now(),
        )

    async def positions(self) -> list[Position]:
        await self._call()
        marks = self.book.marks()
        out = []
        for r in self.book.db.query("SELECT * FROM positions ORDER BY symbol"):
            qty, avg, mark = dec(r["quantity"]), dec(r["avg_price"]), marks[r["symbol"]]
            out.append(
                Position(
                    venue=self.name,
                    symbol=r["symbol"],
                    quantity=qty,
                    avg_price=avg,
                    market_price=mark,
                    unrealized_pnl=qty * (mark - avg),
                )
            )
        return out

    async def open_orders(self) -> list[Order]:
        await self._call()
        rows = self.book.order_rows(f"WHERE {WORKING}")
        return [to_order(self.name, r) for r in rows]

    async def trading_permission(self) -> tuple[bool, str]:
        """(may trade and cancel, why): the paper book is this process's own file."""
        await self._call()
        return True, "the paper venue trades in its own book"

    async def order_by_client_id(self, client_order_id: str) -> Order | None:
        await self._call()
        rows = self.book.order_rows("WHERE client_order_id = ?", (client_order_id,))
        return to_order(self.name, rows[0]) if rows else None

    # -- writes -------------------------------------------------------------------------------
    async def cancel_order(self, order_id: str) -> None:
        await self._call(message=True)
        self._cancel(self.book.order_rows("WHERE order_id = ?", (order_id,)))

    def _cancel(self, rows: list[dict[str, Any]]) -> list[str]:
        now = iso(self.clock.now())
        done = []
        with self.book.db.write():
            for r in rows:
                if OrderStatus(r["status"]).is_terminal:
                    continue
                late = int(self.cfg.late_fill and bool(r["reduce_only"]))
                self.book.db.execute(
                    "UPDATE orders SET status = 'CANCELLED', late_fill_pending = ?, updated_at = ?"
                    " WHERE order_id = ?",
                    (late, now, r["order_id"]),
                )
                done.append(r["order_id"])
                self._emit(
                    VenueEventKind.ORDER, order=to_order(self.name, {**r, "status": "CANCELLED"})
                )
        return done

    async def cancel_all(self) -> CancelAllResult:
        """One global-cancel message (like IB's reqGlobalCancel), then a read-back.

        The book cancels every working order in one UPDATE; past INLINE_CANCEL_MAX of them, in
        a worker thread on its own connection: a kill over 50,000 resting orders neither holds
        the bot's one event loop (10 venues cancel side by side) nor builds and keeps an event
        per order. One ORDER event says how many were cancelled; a single cancel_order still
        reports its order."""
        await self._call(message=True)
        now, late = iso(self.clock.now()), self.cfg.late_fill
        if self.book.working_count() > INLINE_CANCEL_MAX:
            cancelled = await asyncio.to_thread(
                partial(self.book.cancel_working, now, late, own_connection=True)
            )
        else:  # a thread and a connection would cost more than the cancel
            cancelled = self.book.cancel_working(now, late, own_connection=False)
        if cancelled:
            self._emit(
                VenueEventKind.ORDER,
                value=float(len(cancelled)),
                message=f"global cancel: {len(cancelled)} orders cancelled",
            )
        remaining = await self.open_orders()
        return CancelAllResult(
            venue=self.name, requested=len(cancelled), cancelled=cancelled, remaining=remaining
        )

    async def submit_close(self, request: CloseRequest) -> Order:
        existing = self.book.order_rows("WHERE client_order_id = ?", (request.client_order_id,))
        if existing:  # the same client order id never makes a second order
            await self._call()
            return to_order(self.name, existing[0])
        self._refuse_if_read_only()
        await self._call(message=True)
        mark = self.book.mark(request.symbol)
        if mark is None:
            raise OrderRejected(
                self.name, f"unknown symbol {request.symbol!r}", code="UNKNOWN_SYMBOL"
            )
        if request.type not in (OrderType.MARKET, OrderType.LIMIT):
            raise OrderRejected(self.name, "closing orders are MARKET or LIMIT", code="BAD_TYPE")
        pos = self.book.position(request.symbol)
        if pos == 0 or request.side is not (Side.SELL if pos > 0 else Side.BUY):
            raise OrderRejected(
                self.name,
                f"reduce-only {request.side.value} {request.symbol} would not reduce"
                f" position {pos}",
                code="WOULD_NOT_REDUCE",
            )
        now = iso(self.clock.now())
        self._emit(VenueEventKind.ORDER_SENT, message=request.client_order_id)
        with self.book.db.write():
            # another process may have sent this very client id meanwhile: one order, not two
            again = self.book.order_rows("WHERE client_order_id = ?", (request.client_order_id,))
            if again:
                return to_order(self.name, again[0])
            qty = min(request.quantity, abs(self.book.position(request.symbol)) or abs(pos))
            order_id = self.book._insert_order(
                request.symbol,
                request.side,
                request.type,
                qty,
                request.limit_price,
                None,
                request.client_order_id,
                True,
                now,
            )
            row = self.book.order_rows("WHERE order_id = ?", (order_id,))[0]
            if self._rejects(request.client_order_id):
                self.book.db.execute(
                    "UPDATE orders SET status = 'REJECTED', reason = ? WHERE order_id = ?",
                    ("simulated reject", order_id),
                )
                row = {**row, "status": "REJECTED", "reason": "simulated reject"}
            else:
                self._try_fill(row, mark, now)
        order = to_order(self.name, self.book.order_rows("WHERE order_id = ?", (order_id,))[0])
        if order.status is OrderStatus.REJECTED:
            self._emit(
                VenueEventKind.REJECT, code="SIMULATED", message="simulated reject", order=order
            )
        else:
            self._emit(VenueEventKind.ORDER, order=order)
        return order

    async def place_sentinel(self, client_order_id: str) -> Order:
        """One BUY limit of 1 (the paper book's smallest size) at half the mark of its first
        symbol: it rests far from the market, for the venue drill to prove a kill cancels it."""
        self._refuse_if_read_only()
        await self._call(message=True)
        marks = self.book.marks()
        if not marks:
            raise OrderRejected(self.name, "the paper book has no market", code="UNKNOWN_SYMBOL")
        symbol = sorted(marks)[0]
        price = (marks[symbol] / 2).quantize(Decimal("0.01"), rounding=ROUND_DOWN)
        now = iso(self.clock.now())
        self._emit(VenueEventKind.ORDER_SENT, message=client_order_id)
        with self.book.db.write():
            order_id = self.book._insert_order(
                symbol,
                Side.BUY,
                OrderType.LIMIT,
                Decimal(1),
                price,
                None,
                client_order_id,
                False,
                now,
            )
        order = to_order(self.name, self.book.order_rows("WHERE order_id = ?", (order_id,))[0])
        self._emit(VenueEventKind.ORDER, order=order)
        return order
