"""Planning the closes (flatten.py closes): per venue, the strategy its exposure calls for
(small books at market, large ones with limits and a timeout), one reduce-only order per
position, and the plan's hash an approval binds to; the aggressive limit and the deterministic
client order id every close is sent with."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

from rollbot.brokers.base import OrderType, Position, Side
from rollbot.commands.rollback.positions import VenueBook
from rollbot.config import FlattenConfig

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
