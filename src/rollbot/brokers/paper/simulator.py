"""What the paper venue does on its own, whatever is asked of it: the connection and the faults
configured or injected into it (latency, a message-rate limit, a disconnect after N calls, an
outage, a rejection rate), and its fills (whole, partial or none, and fills that land after their
cancel). Faults are configured, not mocked.

PaperVenue (venue.py) is this simulator with the Venue protocol's reads and writes on top: a
base class, not a collaborator, because every request is one step of this one simulated session
(`_call`) and because the drill, the tests and the benchmarks drive and watch it on the venue
itself (`calls`, `messages_sent`, `stay_down`, `disconnect_in`, `seed`)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from decimal import ROUND_DOWN, Decimal
from typing import Any

from rollbot.brokers.base import (
    Order,
    OrderRejected,
    OrderStatus,
    OrderType,
    Side,
    VenueEvent,
    VenueEventKind,
    VenueListener,
    VenueUnavailable,
)
from rollbot.brokers.pacing import TokenBucket
from rollbot.brokers.paper.book import D0, PaperBook, dec, to_order
from rollbot.brokers.paper.scenario import Scenario, load_scenario
from rollbot.clock import Clock, SystemClock, iso
from rollbot.config import PaperVenueConfig


class PaperSimulator:
    """One simulated session over a PaperBook, with the configured faults."""

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
                qty = self._fillable(r, dec(r["quantity"]) - dec(r["filled"]))
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
                        order=to_order(self.name, r),
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

    def _rejects(self, client_order_id: str) -> bool:
        if self.cfg.reject_rate <= 0:
            return False
        digest = hashlib.sha256(f"{self.cfg.seed}:{client_order_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.cfg.reject_rate

    def _try_fill(self, row: dict[str, Any], mark: Decimal, now: str) -> None:
        side = Side(row["side"])
        if row["type"] == OrderType.LIMIT.value:
            limit = dec(row["limit_price"])
            marketable = limit >= mark if side is Side.BUY else limit <= mark
            if not marketable:
                return
        if self.cfg.fill == "none":
            return
        want = dec(row["quantity"]) - dec(row["filled"])
        if self.cfg.fill == "partial":
            step = Decimal(1).scaleb(min(int(want.as_tuple().exponent), 0))
            part = (want * self.cfg.partial_ratio).quantize(step, rounding=ROUND_DOWN)
            want = part if part > 0 else want
        qty = self._fillable(row, want)
        if qty > 0:
            self.book.apply_fill(row, qty, mark, now)
            self._emit(VenueEventKind.FILL, value=float(qty), order=to_order(self.name, row))
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

    def _refuse_if_read_only(self) -> None:
        if self.read_only:
            raise OrderRejected(
                self.name, "connected read-only: orders are refused", code="READ_ONLY"
            )

    def seed(self, scenario: Scenario) -> None:
        self.book.seed(scenario)

    def advance_prices(self) -> dict[str, Decimal] | None:
        return self.book.advance_prices()

    def fills(self) -> list[dict[str, Any]]:
        return self.book.db.query("SELECT * FROM fills ORDER BY id")

    def orders_by_client_prefix(self, prefix: str) -> list[Order]:
        rows = self.book.order_rows("WHERE client_order_id LIKE ?", (prefix + "%",))
        return [to_order(self.name, r) for r in rows]
