"""Flatten: plan the closing orders, then close each venue to zero exactly once.

Exactly once rests on three things: a client order id derived from (incident, venue, symbol,
attempt); the intent written to SQLite before the order is sent; and a new attempt made only
after the previous one is terminal at the venue and the position has been read back since. Sizes
come from the venue's position at that moment and orders are reduce-only, so a late fill can
shrink what is left but never flip it. Giving up at the timeout cancels the closes still working,
so the residual reported is the one that stays.

VenueCloser runs the passes and reads the venue back; its parts live beside it: close_plan.py
(planning the closes), close_orders.py (placing them) and close_ledger.py (recording them).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

from pydantic import BaseModel, Field

from rollbot.brokers.base import Position, Venue, VenueError
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.close_ledger import CloseLedger
from rollbot.commands.rollback.close_orders import ClosePlacer
from rollbot.commands.rollback.close_plan import (
    D0,
    FlattenPlan,
    PlannedOrder,
    Strategy,
    VenuePlan,
    aggressive_limit,
    choose_strategy,
    client_order_id,
    plan_flatten,
    plan_venue,
)
from rollbot.storage.events import Actor

__all__ = [  # the plan's names too: callers import them from here
    "FlattenPlan",
    "PlannedOrder",
    "Strategy",
    "SymbolOutcome",
    "VenueCloser",
    "VenueFlatten",
    "VenuePlan",
    "aggressive_limit",
    "choose_strategy",
    "client_order_id",
    "plan_flatten",
    "plan_venue",
]


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
        self.ledger = CloseLedger(app, venue.name, incident_id, actor)
        self.placer = ClosePlacer(app, venue, self.ledger, strategy, self._stop_now)
        # what the engine last knew (step 3's read until this run reads the venue itself): with
        # what orders sent since that read filled (the placer's), the residual if it goes away
        self._last_seen = [p for p in assessed or [] if self._wanted(p)]
        self._known = assessed is not None

    @property
    def errors(self) -> list[str]:
        """What went wrong on the way (the ledger notes it)."""
        return self.ledger.errors

    def _wanted(self, p: Position) -> bool:
        return p.quantity != 0 and (not self.symbols or p.symbol in self.symbols)

    def _stop_now(self) -> bool:
        if self.stopped_by is None and self.halted is not None:
            self.stopped_by = self.halted()
        return self.stopped_by is not None

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
            if positions and all(p.symbol in self.ledger.refused for p in positions):
                break  # what is left the venue will not close: waiting changes nothing
            if clock.now() >= deadline:
                timed_out = True
                break
            if self._stop_now():
                break
            acted = await self.placer.advance_all(positions) if positions else False
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
            self.ledger.note(f"reading positions failed: {exc}")
            await self._reconnect()
            return None
        self._last_seen = positions
        self.placer.filled_since_read.clear()
        self._known = True
        return positions

    async def _reconnect(self) -> None:
        try:
            await self.venue.connect()
        except VenueError as exc:
            self.ledger.note(f"reconnect failed: {exc}")

    async def _settle_ledger(self) -> None:
        """Flat: bring every close the ledger still has open up to date from the venue. One sent
        just before a restart, for a position that was flat when the run resumed, is not
        advanced again by the loop, and would stay PENDING in the ledger and the report."""
        for intent in self.ledger.intents.for_incident(self.incident_id):
            if intent.venue != self.venue.name or intent.terminal:
                continue
            try:
                order = await self.venue.order_by_client_id(intent.client_order_id)
            except VenueError as exc:
                self.ledger.note(
                    f"{intent.symbol}: reading order {intent.client_order_id} failed: {exc}"
                )
                continue
            if order is not None:
                self.ledger.record_found(intent, order)

    async def _stand_down(self) -> bool:
        """Giving up: cancel our closes still working, so nothing fills after the residual is
        reported, then read the venue back once more. True when that read succeeded."""
        for intent in self.ledger.intents.for_incident(self.incident_id):
            if intent.venue != self.venue.name or intent.terminal:
                continue
            try:
                order = await self.venue.order_by_client_id(intent.client_order_id)
                if order is not None and not order.status.is_terminal:
                    await self.venue.cancel_order(order.order_id)
                    self.ledger.event(
                        "ORDER_CANCEL_REQUESTED",
                        intent.client_order_id,
                        order,
                        reason=f"flatten stopped: {self.stopped_by}"
                        if self.stopped_by
                        else f"flatten gave up after {self.cfg.timeout_s:g} s",
                    )
                    order = await self.venue.order_by_client_id(intent.client_order_id)
                if order is not None:
                    self.ledger.record_found(intent, order)
            except VenueError as exc:
                self.ledger.note(f"{intent.symbol}: standing down {intent.client_order_id}: {exc}")
        return await self._read_positions() is not None

    def _residual(self, verified: bool) -> list[Position]:
        if verified:
            return self._last_seen
        out = []
        for p in self._last_seen:
            left = max(abs(p.quantity) - self.placer.filled_since_read.get(p.symbol, D0), D0)
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
                for i in self.ledger.intents.for_symbol(self.incident_id, self.venue.name, symbol)
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
            refused={s: why for s, why in self.ledger.refused.items() if s in remaining},
            stopped_by=self.stopped_by,
        )
