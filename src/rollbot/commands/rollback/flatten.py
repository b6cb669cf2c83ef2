"""Flatten: plan the closing orders, then close each venue to zero exactly once.

Exactly once rests on three things: a client order id derived from (incident, venue, symbol,
attempt); the intent written to SQLite before the order is sent; and a new attempt made only
after the previous one is terminal at the venue and the position has been read back since. Sizes
come from the venue's position at that moment and orders are reduce-only, so a late fill can
shrink what is left but never flip it. Giving up at the timeout cancels the closes still working,
so the residual reported is the one that stays.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

from rollbot.brokers.base import (
    CloseRequest,
    Order,
    OrderRejected,
    OrderStatus,
    OrderType,
    Position,
    RateLimited,
    RejectedForGood,
    Side,
    Venue,
    VenueError,
    VenueUnavailable,
)
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.paging import escalation
from rollbot.commands.rollback.positions import VenueBook
from rollbot.config import FlattenConfig
from rollbot.storage.events import Actor
from rollbot.storage.intents import Intent, Intents

log = logging.getLogger(__name__)
Strategy = Literal["MARKET_ORDERS", "LIMIT_ORDERS_WITH_TIMEOUT"]
D0 = Decimal(0)


class PlannedOrder(BaseModel):
    venue: str
    symbol: str
    side: Side
    quantity: Decimal
    type: OrderType
    limit_note: str = ""
    # the limit it would carry if sent now; the real one is set from the live mark when sent
    limit_now: Decimal | None = None

    def describe(self) -> str:
        note = f" ({self.limit_note})" if self.limit_note else ""
        price = f" {self.limit_now} now" if self.limit_now is not None else ""
        return (
            f"{self.venue}: {self.side.value} {self.quantity} {self.symbol} {self.type.value}"
            f"{price}{note}"
        )


class VenuePlan(BaseModel):
    venue: str
    strategy: Strategy
    exposure: Decimal
    orders: list[PlannedOrder] = Field(default_factory=list)
    error: str | None = None


class FlattenPlan(BaseModel):
    venues: list[VenuePlan]

    @property
    def orders(self) -> list[PlannedOrder]:
        return [o for v in self.venues for o in v.orders]

    def canonical(self) -> list[dict[str, str]]:
        """What an approval binds to: venue, symbol, side, quantity, type. Limit prices are set
        at send time from the live mark, so they are not part of the hash."""
        rows = [
            {
                "venue": o.venue,
                "symbol": o.symbol,
                "side": o.side.value,
                "quantity": str(o.quantity.normalize()),
                "type": o.type.value,
            }
            for o in self.orders
        ]
        rows += [{"venue": v.venue, "error": v.error} for v in self.venues if v.error]
        return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))

    @property
    def hash(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def choose_strategy(exposure: Decimal, cfg: FlattenConfig) -> Strategy:
    """IBKR seed, step 3: small books close at market; large ones with limits and a timeout."""
    return (
        "MARKET_ORDERS" if exposure < cfg.market_exposure_threshold else "LIMIT_ORDERS_WITH_TIMEOUT"
    )


def plan_venue(book: VenueBook, cfg: FlattenConfig, symbols: set[str] | None = None) -> VenuePlan:
    if book.error:
        return VenuePlan(venue=book.venue, strategy="MARKET_ORDERS", exposure=D0, error=book.error)
    positions = [
        p for p in book.positions if p.quantity != 0 and (not symbols or p.symbol in symbols)
    ]
    exposure = sum((p.exposure for p in positions), D0)
    strategy = choose_strategy(exposure, cfg)
    order_type = OrderType.MARKET if strategy == "MARKET_ORDERS" else OrderType.LIMIT
    note = "" if order_type is OrderType.MARKET else f"mark ± {cfg.limit_offset_bps} bps"
    orders = [
        PlannedOrder(
            venue=book.venue,
            symbol=p.symbol,
            side=p.closing_side,
            quantity=abs(p.quantity),
            type=order_type,
            limit_note=note,
            limit_now=(
                aggressive_limit(p, cfg.limit_offset_bps) if order_type is OrderType.LIMIT else None
            ),
        )
        for p in positions
    ]
    return VenuePlan(venue=book.venue, strategy=strategy, exposure=exposure, orders=orders)


def plan_flatten(books: list[VenueBook], cfg: FlattenConfig) -> FlattenPlan:
    return FlattenPlan(venues=[plan_venue(b, cfg) for b in books])


def aggressive_limit(position: Position, offset_bps: Decimal) -> Decimal:
    """Cross the mark by `offset_bps`, rounded to the mark's tick (cents at least)."""
    mark = position.market_price or position.avg_price
    factor = offset_bps / Decimal(10000)
    price = mark * (1 - factor) if position.closing_side is Side.SELL else mark * (1 + factor)
    exponent = min(int(mark.as_tuple().exponent), -2)
    return price.quantize(Decimal(1).scaleb(exponent))


def client_order_id(incident_id: str, venue: str, symbol: str, attempt: int) -> str:
    """Deterministic and short: venues cap client ids (Bybit and Binance at 36 characters)."""
    digest = hashlib.sha256(f"{incident_id}|{venue}|{symbol}|{attempt}".encode()).hexdigest()
    return f"rb{digest[:22]}"


class SymbolOutcome(BaseModel):
    symbol: str
    start_quantity: Decimal
    remaining: Decimal
    orders: list[dict[str, str]] = Field(default_factory=list)


class VenueFlatten(BaseModel):
    venue: str
    strategy: Strategy
    outcomes: list[SymbolOutcome] = Field(default_factory=list)
    residual: list[Position] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    verified: bool = False  # the last read of positions succeeded
    timed_out: bool = False
    known: bool = True  # False: the venue's positions were never read (residual unknown)
    # symbol -> the venue's words, for closes it refused for good: not re-sent, escalated
    refused: dict[str, str] = Field(default_factory=dict)
    stopped_by: str | None = None  # a kill over its scope stopped it before its next order

    @property
    def flat(self) -> bool:
        return self.verified and not self.residual


class VenueCloser:
    """Drives one venue to flat for one incident; safe to run again after a crash."""

    def __init__(
        self,
        app: Rollbot,
        venue: Venue,
        incident_id: str,
        strategy: Strategy,
        actor: Actor,
        symbols: set[str] | None = None,
        assessed: list[Position] | None = None,
        halted: Callable[[], str | None] | None = None,
    ) -> None:
        self.app = app
        # asked before every order: a kill set since the flatten started stops it (why, or None)
        self.halted = halted
        self.stopped_by: str | None = None
        self.venue = venue
        self.incident_id = incident_id
        self.strategy = strategy
        self.actor = actor
        self.symbols = symbols
        self.cfg = app.settings.flatten
        self.intents = Intents(app.db)
        self.errors: list[str] = []
        # what the engine last knew (step 3's read until this run reads the venue itself), and
        # what orders sent since that read filled: together the residual if the venue goes away
        self._last_seen = [p for p in assessed or [] if self._wanted(p)]
        self._known = assessed is not None
        self._filled_since_read: dict[str, Decimal] = {}
        self._refused = self._refused_before()

    def _wanted(self, p: Position) -> bool:
        return p.quantity != 0 and (not self.symbols or p.symbol in self.symbols)

    def _stop_now(self) -> bool:
        if self.stopped_by is None and self.halted is not None:
            self.stopped_by = self.halted()
        return self.stopped_by is not None

    def _note(self, message: str) -> None:
        if message not in self.errors:
            self.errors.append(message)

    async def run(self) -> VenueFlatten:
        clock = self.app.clock
        deadline = clock.now() + timedelta(seconds=self.cfg.timeout_s)
        start: dict[str, Decimal] = {p.symbol: p.quantity for p in self._last_seen}
        verified = False
        timed_out = False
        quiet = 0  # passes in a row that changed nothing
        while True:
            positions = await self._read_positions()
            verified = positions is not None
            for p in positions or []:
                start.setdefault(p.symbol, p.quantity)
            if verified and not positions:
                break
            if positions and all(p.symbol in self._refused for p in positions):
                break  # what is left the venue will not close: waiting changes nothing
            if clock.now() >= deadline:
                timed_out = True
                break
            if self._stop_now():
                break
            acted = await self._advance_all(positions) if positions else False
            quiet = 0 if acted else quiet + 1
            # after acting, look again soon (market orders mostly fill at once); when nothing
            # moves, back off to the interval. The exponent is capped: 2**1024 overflows a float.
            await clock.sleep(min(self.cfg.recheck_interval_s, 0.05 * 2 ** min(quiet, 8)))
        if timed_out or self.stopped_by:
            verified = await self._stand_down()
        elif verified:
            await self._settle_ledger()
        return self._result(start, verified, timed_out)

    async def _read_positions(self) -> list[Position] | None:
        """The venue's positions in scope, or None when they cannot be read (reconnect tried)."""
        try:
            positions = [p for p in await self.venue.positions() if self._wanted(p)]
        except VenueError as exc:
            self._note(f"reading positions failed: {exc}")
            await self._reconnect()
            return None
        self._last_seen, self._filled_since_read = positions, {}
        self._known = True
        return positions

    async def _reconnect(self) -> None:
        try:
            await self.venue.connect()
        except VenueError as exc:
            self._note(f"reconnect failed: {exc}")

    async def _settle_ledger(self) -> None:
        """Flat: bring every close the ledger still has open up to date from the venue. One sent
        just before a restart, for a position that was flat when the run resumed, is not
        advanced again by the loop, and would stay PENDING in the ledger and the report."""
        for intent in self.intents.for_incident(self.incident_id):
            if intent.venue != self.venue.name or intent.terminal:
                continue
            try:
                order = await self.venue.order_by_client_id(intent.client_order_id)
            except VenueError as exc:
                self._note(f"{intent.symbol}: reading order {intent.client_order_id} failed: {exc}")
                continue
            if order is not None:
                self._record_found(intent, order)

    def _record_found(self, intent: Intent, order: Order) -> None:
        """An order read back by its client id. Found while the ledger still says PENDING, it
        was sent before a restart and never recorded: ORDER_SENT is written now."""
        if intent.status == "PENDING":
            self._event(
                "ORDER_SENT",
                intent.client_order_id,
                order,
                reason="found at the venue by its client order id: its send was never confirmed"
                " (a restart, or an answer lost)",
                extra={"attempt": intent.attempt, "found_by_client_id": True},
            )
        self._record(intent, order)

    async def _stand_down(self) -> bool:
        """Giving up: cancel our closes still working, so nothing fills after the residual is
        reported, then read the venue back once more. True when that read succeeded."""
        for intent in self.intents.for_incident(self.incident_id):
            if intent.venue != self.venue.name or intent.terminal:
                continue
            try:
                order = await self.venue.order_by_client_id(intent.client_order_id)
                if order is not None and not order.status.is_terminal:
                    await self.venue.cancel_order(order.order_id)
                    self._event(
                        "ORDER_CANCEL_REQUESTED",
                        intent.client_order_id,
                        order,
                        reason=f"flatten stopped: {self.stopped_by}"
                        if self.stopped_by
                        else f"flatten gave up after {self.cfg.timeout_s:g} s",
                    )
                    order = await self.venue.order_by_client_id(intent.client_order_id)
                if order is not None:
                    self._record_found(intent, order)
            except VenueError as exc:
                self._note(f"{intent.symbol}: standing down {intent.client_order_id}: {exc}")
        return await self._read_positions() is not None

    async def _advance_all(self, positions: list[Position]) -> bool:
        limit = asyncio.Semaphore(16)  # hide round trips; the venue's pacer bounds the rate

        async def one(p: Position) -> bool:
            async with limit:
                return await self._advance(p)

        return any(await asyncio.gather(*(one(p) for p in positions)))

    async def _advance(self, position: Position) -> bool:
        """One step for one symbol; True when something changed (sent, cancelled, ended)."""
        if position.symbol in self._refused:
            return False  # refused for good: a new attempt would meet the same refusal
        now = self.app.clock.now()
        history = self.intents.for_symbol(self.incident_id, self.venue.name, position.symbol)
        last = history[-1] if history else None
        if last is not None and not last.terminal:
            # Whatever happens, no new attempt this pass: one that just ended may have filled
            # after `position` was read, so the next size comes from the next read.
            return await self._settle(last, position, now)
        attempt = (last.attempt + 1) if last else 1
        return await self._send(position, attempt, now)

    async def _settle(self, intent: Intent, position: Position, now: datetime) -> bool:
        """Bring the intent up to date from the venue; cancel it once it waited too long."""
        try:
            order = await self.venue.order_by_client_id(intent.client_order_id)
        except VenueError as exc:
            self._note(f"{position.symbol}: reading order {intent.client_order_id} failed: {exc}")
            return False
        if order is None:
            if intent.status == "PENDING" and not self._stop_now():
                # written but never accepted by the venue: send the same id again (idempotent)
                return await self._submit(intent, position)
            return False
        self._record_found(intent, order)
        if order.status.is_terminal:
            return True
        age = (now - intent.created_at).total_seconds()
        if age >= self.cfg.limit_timeout_s:
            try:
                await self.venue.cancel_order(order.order_id)
                self._event(
                    "ORDER_CANCEL_REQUESTED",
                    intent.client_order_id,
                    order,
                    reason=f"unfilled after {age:.0f} s",
                )
                return True
            except VenueError as exc:
                self._note(f"{position.symbol}: cancel of {order.order_id} failed: {exc}")
        return False

    async def _send(self, position: Position, attempt: int, now: datetime) -> bool:
        if self._stop_now():  # checked before every new order, not only once per pass
            return False
        order_type = OrderType.MARKET if self.strategy == "MARKET_ORDERS" else OrderType.LIMIT
        limit = (
            aggressive_limit(position, self.cfg.limit_offset_bps)
            if order_type is OrderType.LIMIT
            else None
        )
        intent = Intent(
            client_order_id=client_order_id(
                self.incident_id, self.venue.name, position.symbol, attempt
            ),
            incident_id=self.incident_id,
            venue=self.venue.name,
            symbol=position.symbol,
            side=position.closing_side.value,
            quantity=abs(position.quantity),
            type=order_type.value,
            limit_price=limit,
            attempt=attempt,
            status="PENDING",
            created_at=now,
            updated_at=now,
        )
        if not self.intents.create(intent):
            return False  # another run of this incident took this attempt
        return await self._submit(intent, position)

    async def _submit(self, intent: Intent, position: Position) -> bool:
        request = CloseRequest(
            symbol=intent.symbol,
            side=Side(intent.side),
            quantity=intent.quantity,
            type=OrderType(intent.type),
            limit_price=intent.limit_price,
            client_order_id=intent.client_order_id,
            instrument=position.instrument,
        )
        try:
            order = await self.venue.submit_close(request)
        except RejectedForGood as exc:
            self.intents.update(
                intent.client_order_id,
                status="REJECTED",
                now=self.app.clock.now(),
                detail=exc.detail,
            )
            self._refuse(intent, exc.detail)
            return False
        except OrderRejected as exc:
            self.intents.update(
                intent.client_order_id,
                status="REJECTED",
                now=self.app.clock.now(),
                detail=exc.detail,
            )
            self._rejected(intent, exc.detail)
            return False  # not progress: a venue that refuses everything is not hammered
        except (VenueUnavailable, RateLimited) as exc:
            # outcome unknown: the intent stays PENDING and is read back by its client id
            self._note(f"{intent.symbol}: {exc}")
            return False
        except VenueError as exc:
            self.intents.update(
                intent.client_order_id, status="NOT_SENT", now=self.app.clock.now(), detail=str(exc)
            )
            self._note(f"{intent.symbol}: {exc}")
            return False  # nor an exchange error: one failing every order is not hammered either
        self._event(
            "ORDER_SENT",
            intent.client_order_id,
            order,
            reason=None,
            extra={
                "attempt": intent.attempt,
                "limit_price": None if intent.limit_price is None else str(intent.limit_price),
            },
        )
        self._record(intent, order)
        # sent after the last read of positions, so this fill is not in that read: if the venue
        # goes away now, the residual is that read less this (older orders' fills are unknown)
        self._filled_since_read[order.symbol] = (
            self._filled_since_read.get(order.symbol, D0) + order.filled_quantity
        )
        return order.status is not OrderStatus.REJECTED

    def _rejected(self, intent: Intent, detail: str, final: bool = False) -> None:
        self.app.events.append(
            "ORDER_REJECTED",
            self.actor,
            incident_id=self.incident_id,
            scope=f"venue:{self.venue.name}",
            reason=detail,
            data={
                "client_order_id": intent.client_order_id,
                "symbol": intent.symbol,
                "side": intent.side,
                "quantity": str(intent.quantity),
                "attempt": intent.attempt,
                **({"final": True} if final else {}),
            },
        )
        self._note(f"{intent.symbol}: rejected: {detail}")

    def _refused_before(self) -> dict[str, str]:
        """Closes this incident's earlier runs saw refused for good: a rerun does not resend."""
        return {
            e.data["symbol"]: e.reason or ""
            for e in self.app.events.list(incident_id=self.incident_id, kinds=["ORDER_REJECTED"])
            if e.data.get("final") and e.scope == f"venue:{self.venue.name}"
        }

    def _refuse(self, intent: Intent, detail: str) -> None:
        """A close refused for a reason that will not change: recorded, told in the incident's
        thread at once with the venue's words, and escalated (pages the chain if nobody is yet);
        never re-sent. The position stays for a person to close by hand."""
        self._refused[intent.symbol] = detail
        with self.app.db.write():
            self._rejected(intent, detail, final=True)
            self.app.outbox.put(
                "thread",
                incident_id=self.incident_id,
                text=f"⚠️ {self.venue.name} refused the close of {intent.symbol} "
                f"({intent.side} {intent.quantity}) and would refuse it again: {detail}. "
                "Not re-sent: close it by hand.",
                dedupe_key=f"refused:{self.incident_id}:{self.venue.name}:{intent.symbol}",
            )
        try:
            escalation.escalate_incident(self.app, self.incident_id, self.actor)
        except Exception as exc:  # paging must not stop the closes of the other symbols
            log.exception("escalating %s after a refused close failed", self.incident_id)
            self._note(f"escalating the refused close of {intent.symbol} failed: {exc}")

    def _record(self, intent: Intent, order: Order) -> None:
        """Store what the venue says about one of our orders; write ORDER_REJECTED the first
        time the venue refuses it."""
        self.intents.update(
            intent.client_order_id,
            status=order.status.value,
            now=self.app.clock.now(),
            venue_order_id=order.order_id,
            filled=order.filled_quantity,
            detail=order.reason,
        )
        if order.status is OrderStatus.REJECTED and intent.status != "REJECTED":
            if order.rejected_for_good:  # refused after it was accepted: no new attempt either
                self._refuse(intent, order.reason or "rejected by the venue")
            else:
                self._rejected(intent, order.reason or "rejected by the venue")

    def _event(
        self,
        kind: str,
        client_id: str,
        order: Order,
        reason: str | None,
        extra: dict[str, object] | None = None,
    ) -> None:
        self.app.events.append(
            kind,
            self.actor,
            incident_id=self.incident_id,
            scope=f"venue:{self.venue.name}",
            reason=reason,
            data={
                "client_order_id": client_id,
                "order_id": order.order_id,
                "symbol": order.symbol,
                "side": order.side.value,
                "quantity": str(order.quantity),
                "type": order.type.value,
                "status": order.status.value,
                "filled": str(order.filled_quantity),
                **(extra or {}),
            },
        )

    def _residual(self, verified: bool) -> list[Position]:
        if verified:
            return self._last_seen
        out = []
        for p in self._last_seen:
            left = max(abs(p.quantity) - self._filled_since_read.get(p.symbol, D0), D0)
            if left:
                out.append(p.model_copy(update={"quantity": left if p.quantity > 0 else -left}))
        return out

    def _result(self, start: dict[str, Decimal], verified: bool, timed_out: bool) -> VenueFlatten:
        residual = self._residual(verified)
        remaining = {p.symbol: p.quantity for p in residual}
        outcomes = []
        for symbol, qty in sorted(start.items()):
            orders = [
                {
                    "client_order_id": i.client_order_id,
                    "side": i.side,
                    "quantity": str(i.quantity),
                    "type": i.type,
                    "status": i.status,
                    "filled": str(i.filled_quantity),
                }
                for i in self.intents.for_symbol(self.incident_id, self.venue.name, symbol)
            ]
            outcomes.append(
                SymbolOutcome(
                    symbol=symbol,
                    start_quantity=qty,
                    remaining=remaining.get(symbol, D0),
                    orders=orders,
                )
            )
        return VenueFlatten(
            venue=self.venue.name,
            strategy=self.strategy,
            outcomes=outcomes,
            residual=residual,
            errors=self.errors,
            verified=verified,
            timed_out=timed_out,
            known=self._known,
            refused={s: why for s, why in self._refused.items() if s in remaining},
            stopped_by=self.stopped_by,
        )
