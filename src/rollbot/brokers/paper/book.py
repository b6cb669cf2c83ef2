"""The paper venue's book: positions, orders, fills, marks and the price path in one SQLite file,
so the bot, the CLI and a drill in separate processes all see one book; and the one conversion of
its order rows into the Order records that cross the Venue protocol."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rollbot.brokers.base import Order, OrderStatus, OrderType, Side
from rollbot.brokers.paper.scenario import Scenario
from rollbot.clock import Clock, iso
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

D0 = Decimal(0)


def dec(text: Any) -> Decimal:
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
        return {r["symbol"]: dec(r["price"]) for r in self.db.query("SELECT * FROM marks")}

    def mark(self, symbol: str) -> Decimal | None:
        """One symbol's mark: a close reads its own, never the whole table."""
        row = self.db.one("SELECT price FROM marks WHERE symbol = ?", (symbol,))
        return dec(row["price"]) if row else None

    def position(self, symbol: str) -> Decimal:
        row = self.db.one("SELECT quantity FROM positions WHERE symbol = ?", (symbol,))
        return dec(row["quantity"]) if row else D0

    def order_rows(self, where: str = "", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return self.db.query(f"SELECT * FROM orders {where} ORDER BY order_id", params)

    def start_nav(self) -> Decimal:
        row = self.db.one("SELECT start_nav FROM account")
        return dec(row["start_nav"]) if row else D0

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
        old = dec(pos_row["quantity"]) if pos_row else D0
        avg = dec(pos_row["avg_price"]) if pos_row else price
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
        cash = dec(self.db.one("SELECT cash FROM account")["cash"])  # type: ignore[index]
        self.db.execute("UPDATE account SET cash = ?", (str(cash - signed * price),))
        filled = dec(order["filled"]) + qty
        status = (
            OrderStatus.FILLED if filled >= dec(order["quantity"]) else OrderStatus.PARTIALLY_FILLED
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


def to_order(venue: str, r: dict[str, Any]) -> Order:
    return Order(
        venue=venue,
        order_id=r["order_id"],
        client_order_id=r["client_order_id"],
        symbol=r["symbol"],
        side=Side(r["side"]),
        type=OrderType(r["type"]),
        quantity=dec(r["quantity"]),
        filled_quantity=dec(r["filled"]),
        limit_price=dec(r["limit_price"]) if r["limit_price"] is not None else None,
        stop_price=dec(r["stop_price"]) if r["stop_price"] is not None else None,
        status=OrderStatus(r["status"]),
        reduce_only=bool(r["reduce_only"]),
        reason=r["reason"],
    )
