"""Placing one venue's closing orders, one step per symbol a pass (flatten.py runs the passes):
bring the last attempt up to date, cancel it once it waited too long, or send the next attempt —
its intent written first under a client order id derived from (incident, venue, symbol,
attempt), sized from the position just read, reduce-only, limits set from the live mark."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from rollbot.brokers.base import (
    CloseRequest,
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
from rollbot.commands.rollback.close_ledger import CloseLedger
from rollbot.commands.rollback.close_plan import D0, Strategy, aggressive_limit, client_order_id
from rollbot.storage.intents import Intent


@dataclass
class ClosePlacer:
    """Places one venue's closes for the closer (flatten.py), which reads the venue back."""

    app: Rollbot
    venue: Venue
    ledger: CloseLedger
    strategy: Strategy
    # asked before every new order: a kill since the flatten started stops it
    stop_now: Callable[[], bool]
    # what orders sent since the closer's last read of positions filled (it clears this at each
    # read): with that read, the residual if the venue goes away
    filled_since_read: dict[str, Decimal] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cfg = self.app.settings.flatten

    async def advance_all(self, positions: list[Position]) -> bool:
        limit = asyncio.Semaphore(16)  # hide round trips; the venue's pacer bounds the rate

        async def one(p: Position) -> bool:
            async with limit:
                return await self._advance(p)

        return any(await asyncio.gather(*(one(p) for p in positions)))

    async def _advance(self, position: Position) -> bool:
        """One step for one symbol; True when something changed (sent, cancelled, ended)."""
        if position.symbol in self.ledger.refused:
            return False  # refused for good: a new attempt would meet the same refusal
        now = self.app.clock.now()
        history = self.ledger.intents.for_symbol(
            self.ledger.incident_id, self.venue.name, position.symbol
        )
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
            self.ledger.note(
                f"{position.symbol}: reading order {intent.client_order_id} failed: {exc}"
            )
            return False
        if order is None:
            if intent.status == "PENDING" and not self.stop_now():
                # written but never accepted by the venue: send the same id again (idempotent)
                return await self._submit(intent, position)
            return False
        self.ledger.record_found(intent, order)
        if order.status.is_terminal:
            return True
        age = (now - intent.created_at).total_seconds()
        if age >= self.cfg.limit_timeout_s:
            try:
                await self.venue.cancel_order(order.order_id)
                self.ledger.event(
                    "ORDER_CANCEL_REQUESTED",
                    intent.client_order_id,
                    order,
                    reason=f"unfilled after {age:.0f} s",
                )
                return True
            except VenueError as exc:
                self.ledger.note(f"{position.symbol}: cancel of {order.order_id} failed: {exc}")
        return False

    async def _send(self, position: Position, attempt: int, now: datetime) -> bool:
        if self.stop_now():  # checked before every new order, not only once per pass
            return False
        order_type = OrderType.MARKET if self.strategy == "MARKET_ORDERS" else OrderType.LIMIT
        limit = (
            aggressive_limit(position, self.cfg.limit_offset_bps)
            if order_type is OrderType.LIMIT
            else None
        )
        intent = Intent(
            client_order_id=client_order_id(
                self.ledger.incident_id, self.venue.name, position.symbol, attempt
            ),
            incident_id=self.ledger.incident_id,
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
        if not self.ledger.intents.create(intent):
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
            self.ledger.intents.update(
                intent.client_order_id,
                status="REJECTED",
                now=self.app.clock.now(),
                detail=exc.detail,
            )
            self.ledger.refuse(intent, exc.detail)
            return False
        except OrderRejected as exc:
            self.ledger.intents.update(
                intent.client_order_id,
                status="REJECTED",
                now=self.app.clock.now(),
                detail=exc.detail,
            )
            self.ledger.rejected(intent, exc.detail)
            return False  # not progress: a venue that refuses everything is not hammered
        except (VenueUnavailable, RateLimited) as exc:
            # outcome unknown: the intent stays PENDING and is read back by its client id
            self.ledger.note(f"{intent.symbol}: {exc}")
            return False
        except VenueError as exc:
            self.ledger.intents.update(
                intent.client_order_id, status="NOT_SENT", now=self.app.clock.now(), detail=str(exc)
            )
            self.ledger.note(f"{intent.symbol}: {exc}")
            return False  # nor an exchange error: one failing every order is not hammered either
        self.ledger.event(
            "ORDER_SENT",
            intent.client_order_id,
            order,
            reason=None,
            extra={
                "attempt": intent.attempt,
                "limit_price": None if intent.limit_price is None else str(intent.limit_price),
            },
        )
        self.ledger.record(intent, order)
        # sent after the last read of positions, so this fill is not in that read: if the venue
        # goes away now, the residual is that read less this (older orders' fills are unknown)
        self.filled_since_read[order.symbol] = (
            self.filled_since_read.get(order.symbol, D0) + order.filled_quantity
        )
        return order.status is not OrderStatus.REJECTED
