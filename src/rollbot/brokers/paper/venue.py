"""The embedded paper venue: a simulated broker whose book lives in its own SQLite file, so the
bot, the CLI and a drill in separate processes all see one book. Faults are configured, not
mocked: latency, partial or no fills, a rejection rate, a message-rate limit, a disconnect after
N calls, and fills that land after their cancel."""

from __future__ import annotations

import asyncio
import hashlib
import time
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
    VenueEvent,
    VenueEventKind,
    VenueListener,
    VenueUnavailable,
)
from rollbot.brokers.pacing import TokenBucket
from rollbot.brokers.paper.scenario import Scenario, load_scenario
from rollbot.clock import Clock, SystemClock, iso
from rollbot.config import PaperVenueConfig
from rollbot.storage.db import Database

BOOK_SCHEMA = """
CREATE TABLE account (id INTEGER PRIMARY KEY CHECK (id = 1), cash TEXT NOT NULL,
    currency TEXT NOT NULL, start_nav TEXT NOT NULL);
CREATE TABLE positions (symbol TEXT PRIMARY KEY, quantity TEXT NOT NULL, avg_price TEXT NOT NULL);
CREATE TABLE marks (symbol TEXT PRIMARY KEY, price TEXT NOT NULL);
CREATE TABLE orders (
    order_id TEXT PRIMARY KEY, client_order_id TEXT UNIQUE, symbol TEXT NOT NULL,
    side TEXT NOT NULL, type TEXT NOT NULL, quantity TEXT NOT NULL,
    filled TEXT NOT NULL DEFAULT '0', limit_price TEXT, stop_price TEXT, status TEXT NOT NULL,
    reduce_only INTEGER NOT NULL DEFAULT 0, reason TEXT,
    late_fill_pending INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE fills (id INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL,
    symbol TEXT NOT NULL, side TEXT NOT NULL, quantity TEXT NOT NULL, price TEXT NOT NULL,
    at TEXT NOT NULL);
CREATE TABLE price_path (step INTEGER NOT NULL, symbol TEXT NOT NULL, price TEXT NOT NULL,
    PRIMARY KEY (step, symbol));
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# The book's hot reads by index, so a call costs what it touches, not the book's size: working
# orders (the global cancel and its read-back), late fills waiting (looked for on every call).
BOOK_INDEXES = """
CREATE INDEX IF NOT EXISTS orders_working ON orders (order_id)
    WHERE status IN ('OPEN', 'PARTIALLY_FILLED');
CREATE INDEX IF NOT EXISTS orders_late_fill ON orders (order_id) WHERE late_fill_pending = 1;
"""
WORKING = "status IN ('OPEN', 'PARTIALLY_FILLED')"

BOOK_MIGRATIONS = [BOOK_SCHEMA, BOOK_INDEXES]
INLINE_CANCEL_MAX = 500  # working orders a global cancel handles on the event loop (~1 ms)

D0 = Decimal(0)


def _d(text: Any) -> Decimal:
    return Decimal(str(text))


class PaperBook:
    """The venue's side of the wire: positions, orders, fills and marks in SQLite."""

    def __init__(self, path: Any, clock: Clock) -> None:
        self.db = Database(path, migrations=BOOK_MIGRATIONS)
        self.clock = clock

    @property
    def seeded(self) -> bool:
        return self.db.one("SELECT 1 AS x FROM account") is not None

    def seed(self, scenario: Scenario) -> None:
        now = iso(self.clock.now())
        with self.db.write():
            for table in ("account", "positions", "marks", "orders", "fills", "price_path", "meta"):
                self.db.execute(f"DELETE FROM {table}")
            marks = scenario.initial_marks()
            for symbol, price in marks.items():
                self.db.execute("INSERT INTO marks VALUES (?, ?)", (symbol, str(price)))
            for p in scenario.positions:
                self.db.execute(
                    "INSERT INTO positions VALUES (?, ?, ?)",
                    (p.symbol, str(p.quantity), str(p.avg_price)),
                )
            cash = scenario.account.cash
            nav = cash + sum((p.quantity * marks[p.symbol] for p in scenario.positions), D0)
            self.db.execute(
                "INSERT INTO account VALUES (1, ?, ?, ?)",
                (str(cash), scenario.account.currency, str(nav)),
            )
            for o in scenario.orders:
                self._insert_order(
                    o.symbol,
                    o.side,
                    o.type,
                    o.quantity,
                    o.limit_price,
                    o.stop_price,
                    None,
                    False,
                    now,
                )
            for step, row in enumerate(scenario.price_path):
                for symbol, price in row.items():
                    self.db.execute(
                        "INSERT INTO price_path VALUES (?, ?, ?)", (step, symbol, str(price))
                    )
            self._set_meta("path_step", "-1")

    def _meta(self, key: str, default: str = "0") -> str:
        row = self.db.one("SELECT value FROM meta WHERE key = ?", (key,))
        return row["value"] if row else default

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def _insert_order(
        self,
        symbol: str,
        side: Side,
        type_: OrderType,
        qty: Decimal,
        limit: Decimal | None,
        stop: Decimal | None,
        client_id: str | None,
        reduce_only: bool,
        now: str,
    ) -> str:
        seq = int(self._meta("order_seq")) + 1
        self._set_meta("order_seq", str(seq))
        order_id = f"P{seq:06d}"
        self.db.execute(
            "INSERT INTO orders (order_id, client_order_id, symbol, side, type, quantity,"
            " limit_price, stop_price, status, reduce_only, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'OPEN', ?, ?, ?)",
            (
                order_id,
                client_id,
                symbol,
                side.value,
                type_.value,
                str(qty),
                None if limit is None else str(limit),
                None if stop is None else str(stop),
                int(reduce_only),
                now,
                now,
            ),
        )
        return order_id

    # -- reads ------------------------------------------------------------------------------
    def marks(self) -> dict[str, Decimal]:
        return {r["symbol"]: _d(r["price"]) for r in self.db.query("SELECT * FROM marks")}

    def mark(self, symbol: str) -> Decimal | None:
        """One symbol's mark: a close reads its own, never the whole table."""
        row = self.db.one("SELECT price FROM marks WHERE symbol = ?", (symbol,))
        return _d(row["price"]) if row else None

    def position(self, symbol: str) -> Decimal:
        row = self.db.one("SELECT quantity FROM positions WHERE symbol = ?", (symbol,))
        return _d(row["quantity"]) if row else D0

    def order_rows(self, where: str = "", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return self.db.query(f"SELECT * FROM orders {where} ORDER BY order_id", params)

    def start_nav(self) -> Decimal:
        row = self.db.one("SELECT start_nav FROM account")
        return _d(row["start_nav"]) if row else D0

    # -- writes -----------------------------------------------------------------------------
    def working_count(self) -> int:
        row = self.db.one(f"SELECT COUNT(*) AS n FROM orders WHERE {WORKING}")
        return int(row["n"]) if row else 0

    def cancel_working(self, now: str, late_fill: bool, *, own_connection: bool) -> list[str]:
        """Cancel every working order in one transaction; their ids. With `own_connection` it
        opens one of its own, so it may run in a worker thread while the venue's connection
        serves the loop."""
        late = ", late_fill_pending = reduce_only" if late_fill else ""
        db = Database(self.db.path, migrations=BOOK_MIGRATIONS) if own_connection else self.db
        try:
            with db.write() as conn:
                # the ids as one string and the UPDATE as one step: a row at a time would take
                # the GIL back from the event loop 5,000 times per venue
                ids = conn.execute(
                    f"SELECT group_concat(order_id, char(31)) FROM orders WHERE {WORKING}"
                ).fetchone()[0]
                conn.execute(
                    f"UPDATE orders SET status = 'CANCELLED', updated_at = ?{late} WHERE {WORKING}",
                    (now,),
                )
        finally:
            if own_connection:
                db.close()
        return sorted(ids.split("\x1f")) if ids else []

    def apply_fill(self, order: dict[str, Any], qty: Decimal, price: Decimal, now: str) -> None:
        side = Side(order["side"])
        signed = qty if side is Side.BUY else -qty
        pos_row = self.db.one("SELECT * FROM positions WHERE symbol = ?", (order["symbol"],))
        old = _d(pos_row["quantity"]) if pos_row else D0
        avg = _d(pos_row["avg_price"]) if pos_row else price
        new = old + signed
        if old == 0 or (old > 0) == (signed > 0):  # opening or adding: new average
            avg = (abs(old) * avg + qty * price) / abs(new)
        if new == 0:
            self.db.execute("DELETE FROM positions WHERE symbol = ?", (order["symbol"],))
        else:
            self.db.execute(
                "INSERT OR REPLACE INTO positions VALUES (?, ?, ?)",
                (
                    order["symbol"],
                    str(new),
                    str(avg if (old > 0) == (new > 0) or old == 0 else price),
                ),
            )
        cash = _d(self.db.one("SELECT cash FROM account")["cash"])  # type: ignore[index]
        self.db.execute("UPDATE account SET cash = ?", (str(cash - signed * price),))
        filled = _d(order["filled"]) + qty
        status = (
            OrderStatus.FILLED if filled >= _d(order["quantity"]) else OrderStatus.PARTIALLY_FILLED
        )
        self.db.execute(
            "UPDATE orders SET filled = ?, status = ?, updated_at = ? WHERE order_id = ?",
            (str(filled), status.value, now, order["order_id"]),
        )
        order["filled"] = str(filled)
        order["status"] = status.value
        self.db.execute(
            "INSERT INTO fills (order_id, symbol, side, quantity, price, at) VALUES (?,?,?,?,?,?)",
            (order["order_id"], order["symbol"], side.value, str(qty), str(price), now),
        )

    def advance_prices(self) -> dict[str, Decimal] | None:
        """Step the marks along the scenario's price path; None at its end."""
        with self.db.write():
            step = int(self._meta("path_step", "-1")) + 1
            rows = self.db.query("SELECT symbol, price FROM price_path WHERE step = ?", (step,))
            if not rows:
                return None
            for r in rows:
                self.db.execute(
                    "INSERT OR REPLACE INTO marks VALUES (?, ?)", (r["symbol"], r["price"])
                )
            self._set_meta("path_step", str(step))
        return self.marks()


def _to_order(venue: str, r: dict[str, Any]) -> Order:
    return Order(
        venue=venue,
        order_id=r["order_id"],
        client_order_id=r["client_order_id"],
        symbol=r["symbol"],
        side=Side(r["side"]),
        type=OrderType(r["type"]),
        quantity=_d(r["quantity"]),
        filled_quantity=_d(r["filled"]),
        limit_price=_d(r["limit_price"]) if r["limit_price"] is not None else None,
        stop_price=_d(r["stop_price"]) if r["stop_price"] is not None else None,
        status=OrderStatus(r["status"]),
        reduce_only=bool(r["reduce_only"]),
        reason=r["reason"],
    )


class PaperVenue:
    """The Venue protocol over a PaperBook, with the configured faults."""

    def __init__(self, cfg: PaperVenueConfig, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.clock = clock or SystemClock()
        self.book = PaperBook(cfg.book_path, self.clock)
        scenario = None if self.book.seeded else load_scenario(cfg.scenario)
        if scenario is not None:
            with self.book.db.write():  # two processes starting at once seed it once
                if not self.book.seeded:
                    self.book.seed(scenario)
        self.pacer = TokenBucket(cfg.max_msgs_per_sec) if cfg.max_msgs_per_sec else None
        self.connected = False
        self.read_only = False
        self.reconnect_allowed = True
        self.calls = 0
        self.disconnects_done = 0
        self.down_after_disconnect = False  # see stay_down()
        self._disconnect_at: int | None = None  # see disconnect_in()
        self.messages_sent = 0
        self._listeners: list[VenueListener] = []

    # -- plumbing -----------------------------------------------------------------------------
    def subscribe(self, listener: VenueListener) -> None:
        self._listeners.append(listener)

    def _emit(self, kind: VenueEventKind, **kw: Any) -> None:
        event = VenueEvent(venue=self.name, kind=kind, at=self.clock.now(), **kw)
        for listener in list(self._listeners):
            listener(event)

    def set_reconnect(self, allowed: bool) -> None:
        self.reconnect_allowed = allowed

    async def connect(self, read_only: bool = False) -> None:
        await self._latency()
        self._refuse_if_down()
        if not self.connected:
            self.connected = True
            if self.calls:
                self._emit(VenueEventKind.RECONNECT, message="connected")
        self.read_only = read_only

    async def close(self) -> None:
        self.connected = False

    async def _latency(self) -> None:
        if self.cfg.latency_ms:
            started = time.perf_counter()
            await asyncio.sleep(self.cfg.latency_ms / 1000)
            self._emit(VenueEventKind.LATENCY, value=(time.perf_counter() - started) * 1000)

    async def _call(self, *, message: bool = False) -> None:
        """One round trip: connection state, injected disconnect, pacing, latency."""
        if not self.connected:
            self._refuse_if_down()
            if self.calls == 0 or self.reconnect_allowed:
                self.connected = True
                if self.calls:
                    self._emit(VenueEventKind.RECONNECT, message="reconnected")
            else:
                raise VenueUnavailable(self.name, "disconnected; reconnecting is switched off")
        self.calls += 1
        limit = (
            self.cfg.disconnect_after_calls if self._disconnect_at is None else self._disconnect_at
        )
        if limit is not None and self.calls > limit and self.disconnects_done == 0:
            self.disconnects_done += 1
            self.connected = False
            self._emit(VenueEventKind.DISCONNECT, message="injected disconnect")
            raise VenueUnavailable(self.name, "connection lost (injected disconnect)")
        if message:
            if self.pacer:
                await self.pacer.acquire()
            self.messages_sent += 1
        await self._latency()
        self._settle_late_fills()

    def _settle_late_fills(self) -> None:
        rows = self.book.order_rows("WHERE late_fill_pending = 1")
        if not rows:
            return
        now = iso(self.clock.now())
        with self.book.db.write():
            # read again under the lock: another process sharing the book may have settled them
            rows = self.book.order_rows("WHERE late_fill_pending = 1")
            for r in rows:
                qty = self._fillable(r, _d(r["quantity"]) - _d(r["filled"]))
                self.book.db.execute(
                    "UPDATE orders SET late_fill_pending = 0 WHERE order_id = ?", (r["order_id"],)
                )
                mark = self.book.mark(r["symbol"])
                if qty > 0 and mark is not None:
                    self.book.apply_fill(r, qty, mark, now)
                    if r["status"] != OrderStatus.FILLED.value:  # the rest stays cancelled
                        r["status"] = OrderStatus.CANCELLED.value
                        self.book.db.execute(
                            "UPDATE orders SET status = ? WHERE order_id = ?",
                            (r["status"], r["order_id"]),
                        )
                    self._emit(
                        VenueEventKind.FILL,
                        value=float(qty),
                        message="late fill",
                        order=_to_order(self.name, r),
                    )

    def _fillable(self, r: dict[str, Any], qty: Decimal) -> Decimal:
        """Reduce-only orders never fill past flat: the venue trims them, as exchanges do."""
        if not r["reduce_only"]:
            return qty
        pos = self.book.position(r["symbol"])
        side = Side(r["side"])
        if pos == 0 or (pos > 0 and side is Side.BUY) or (pos < 0 and side is Side.SELL):
            return D0
        return min(qty, abs(pos))

    # -- reads --------------------------------------------------------------------------------
    async def account(self) -> AccountSnapshot:
        await self._call()
        acct = self.book.db.one("SELECT * FROM account")
        if acct is None:
            raise VenueUnavailable(self.name, "paper book is not seeded")
        marks = self.book.marks()
        value = sum(
            (
                _d(r["quantity"]) * marks[r["symbol"]]
                for r in self.book.db.query("SELECT * FROM positions")
            ),
            D0,
        )
        return AccountSnapshot(
            venue=self.name,
            nav=_d(acct["cash"]) + value,
            currency=acct["currency"],
            at=self.clock.now(),
        )

    async def positions(self) -> list[Position]:
        await self._call()
        marks = self.book.marks()
        out = []
        for r in self.book.db.query("SELECT * FROM positions ORDER BY symbol"):
            qty, avg, mark = _d(r["quantity"]), _d(r["avg_price"]), marks[r["symbol"]]
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
        return [_to_order(self.name, r) for r in rows]

    async def trading_permission(self) -> tuple[bool, str]:
        """(may trade and cancel, why): the paper book is this process's own file."""
        await self._call()
        return True, "the paper venue trades in its own book"

    async def order_by_client_id(self, client_order_id: str) -> Order | None:
        await self._call()
        rows = self.book.order_rows("WHERE client_order_id = ?", (client_order_id,))
        return _to_order(self.name, rows[0]) if rows else None

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
                    VenueEventKind.ORDER, order=_to_order(self.name, {**r, "status": "CANCELLED"})
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
            return _to_order(self.name, existing[0])
        if self.read_only:
            raise OrderRejected(
                self.name, "connected read-only: orders are refused", code="READ_ONLY"
            )
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
                return _to_order(self.name, again[0])
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
        order = _to_order(self.name, self.book.order_rows("WHERE order_id = ?", (order_id,))[0])
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
        if self.read_only:
            raise OrderRejected(
                self.name, "connected read-only: orders are refused", code="READ_ONLY"
            )
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
        order = _to_order(self.name, self.book.order_rows("WHERE order_id = ?", (order_id,))[0])
        self._emit(VenueEventKind.ORDER, order=order)
        return order

    def _rejects(self, client_order_id: str) -> bool:
        if self.cfg.reject_rate <= 0:
            return False
        digest = hashlib.sha256(f"{self.cfg.seed}:{client_order_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.cfg.reject_rate

    def _try_fill(self, row: dict[str, Any], mark: Decimal, now: str) -> None:
        side = Side(row["side"])
        if row["type"] == OrderType.LIMIT.value:
            limit = _d(row["limit_price"])
            marketable = limit >= mark if side is Side.BUY else limit <= mark
            if not marketable:
                return
        if self.cfg.fill == "none":
            return
        want = _d(row["quantity"]) - _d(row["filled"])
        if self.cfg.fill == "partial":
            step = Decimal(1).scaleb(min(int(want.as_tuple().exponent), 0))
            part = (want * self.cfg.partial_ratio).quantize(step, rounding=ROUND_DOWN)
            want = part if part > 0 else want
        qty = self._fillable(row, want)
        if qty > 0:
            self.book.apply_fill(row, qty, mark, now)
            self._emit(VenueEventKind.FILL, value=float(qty), order=_to_order(self.name, row))
        # immediate-or-cancel: the unfilled rest of a partially filled market order does not rest
        if (
            self.cfg.fill == "partial"
            and row["type"] == OrderType.MARKET.value
            and OrderStatus(row["status"]) is not OrderStatus.FILLED
        ):
            self.book.db.execute(
                "UPDATE orders SET status = 'CANCELLED', updated_at = ? WHERE order_id = ?",
                (now, row["order_id"]),
            )

    # -- simulation controls (drill, tests, benchmarks) -----------------------------------------
    def disconnect_in(self, calls: int) -> None:
        """Inject the disconnect on the `calls`-th call from now (a drill aims it at a step)."""
        self._disconnect_at = self.calls + calls - 1
        self.disconnects_done = 0

    def stay_down(self, down: bool = True) -> None:
        """Make the injected disconnect an outage: once it has happened, connecting again fails
        (the gateway is gone) until stay_down(False)."""
        self.down_after_disconnect = down

    def _refuse_if_down(self) -> None:
        if self.down_after_disconnect and self.disconnects_done:
            raise VenueUnavailable(self.name, "gateway unreachable (injected outage)")

    def seed(self, scenario: Scenario) -> None:
        self.book.seed(scenario)

    def advance_prices(self) -> dict[str, Decimal] | None:
        return self.book.advance_prices()

    def fills(self) -> list[dict[str, Any]]:
        return self.book.db.query("SELECT * FROM fills ORDER BY id")

    def orders_by_client_prefix(self, prefix: str) -> list[Order]:
        rows = self.book.order_rows("WHERE client_order_id LIKE ?", (prefix + "%",))
        return [_to_order(self.name, r) for r in rows]
