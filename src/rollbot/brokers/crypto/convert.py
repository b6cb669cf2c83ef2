"""ccxt's unified dicts -> rollbot's Decimal records.

ccxt hands numbers over as floats; Decimal(repr(float)) recovers the shortest decimal that
round-trips, which is the text the venue sent for any quantity with up to 15 digits.
Derivative quantities become base units (contracts x contract size) so that a position's
market value is right on venues whose contracts are not one coin; closes convert back.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from rollbot.brokers.base import Order, OrderStatus, OrderType, Position, Side

D0 = Decimal(0)


def dec(value: Any, default: Decimal = D0) -> Decimal:
    if value is None or value == "":
        return default
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        # 60000.0 -> 60000, not 60000.0: quantities and prices print as the venue sent them
        return Decimal(int(value)) if value.is_integer() else Decimal(repr(value))
    return Decimal(str(value))


def dec_or_none(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    result = dec(value)
    return result if result != 0 else None


def ticker_price(ticker: Mapping[str, Any] | None) -> Decimal:
    """The price a holding is worth now: last trade, else mid, else mark."""
    if not ticker:
        return D0
    for key in ("last", "close"):
        price = dec(ticker.get(key))
        if price > 0:
            return price
    bid, ask = dec(ticker.get("bid")), dec(ticker.get("ask"))
    if bid > 0 and ask > 0:
        return (bid + ask) / 2
    return dec(ticker.get("markPrice"))


def _scaled(contracts: Decimal, contract_size: Decimal) -> Decimal:
    """Contracts in base units; one-coin contracts keep the venue's digits untouched."""
    return contracts if contract_size == 1 else contracts * contract_size


_STATUS = {
    "open": OrderStatus.OPEN,
    "closed": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "cancelled": OrderStatus.CANCELLED,
    "expired": OrderStatus.CANCELLED,
    "rejected": OrderStatus.REJECTED,
}


def order_status(raw: Mapping[str, Any]) -> OrderStatus:
    status = _STATUS.get(str(raw.get("status") or "open").lower(), OrderStatus.OPEN)
    amount, filled = dec(raw.get("amount")), dec(raw.get("filled"))
    if status is OrderStatus.OPEN and filled > 0:
        return OrderStatus.FILLED if amount and filled >= amount else OrderStatus.PARTIALLY_FILLED
    return status


def _trigger_price(raw: Mapping[str, Any]) -> Decimal | None:
    """The price that fires a conditional order: its trigger, or (OKX conditional and OCO
    algo orders) its stop-loss, else its take-profit trigger."""
    for key in ("triggerPrice", "stopPrice", "stopLossPrice", "takeProfitPrice"):
        price = dec_or_none(raw.get(key))
        if price is not None:
            return price
    return None


def order_type(raw: Mapping[str, Any], trigger: bool = False) -> OrderType:
    kind = str(raw.get("type") or "").lower()
    has_trigger = trigger or _trigger_price(raw)
    is_limit = "limit" in kind or (kind != "market" and dec_or_none(raw.get("price")) is not None)
    if has_trigger:
        return OrderType.STOP_LIMIT if is_limit else OrderType.STOP
    return OrderType.LIMIT if is_limit else OrderType.MARKET


def order_from_ccxt(
    venue: str,
    raw: Mapping[str, Any],
    *,
    contract_size: Decimal = Decimal(1),
    trigger: bool = False,
    fallback: Mapping[str, Any] | None = None,
) -> Order:
    """`fallback` fills what a bare acknowledgement leaves out (bybit's create answer is
    just the ids): symbol, side, type, amount, price, reduceOnly as they were sent."""
    merged: dict[str, Any] = dict(fallback or {})
    merged.update({k: v for k, v in raw.items() if v is not None})
    kind = order_type(merged, trigger)
    limit = (
        dec_or_none(merged.get("price"))
        if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        else None
    )
    side = Side.BUY if str(merged.get("side") or "").lower() == "buy" else Side.SELL
    return Order(
        venue=venue,
        order_id=str(merged.get("id") or ""),
        client_order_id=merged.get("clientOrderId") or None,
        symbol=str(merged.get("symbol") or ""),
        side=side,
        type=kind,
        quantity=_scaled(dec(merged.get("amount")), contract_size),
        filled_quantity=_scaled(dec(merged.get("filled")), contract_size),
        limit_price=limit,
        stop_price=_trigger_price(merged),
        status=order_status(merged),
        reduce_only=bool(merged.get("reduceOnly")),
    )


def position_from_ccxt(
    venue: str, raw: Mapping[str, Any], market: Mapping[str, Any], quote: str
) -> Position | None:
    contracts = dec(raw.get("contracts"))
    if contracts == 0:
        return None
    size = _scaled(abs(contracts), dec(market.get("contractSize"), Decimal(1)))
    side = str(raw.get("side") or "").lower()
    if side not in ("long", "short"):
        side = "long" if contracts > 0 else "short"
    return Position(
        venue=venue,
        symbol=str(raw.get("symbol")),
        quantity=size if side == "long" else -size,
        avg_price=dec(raw.get("entryPrice")),
        market_price=dec(raw.get("markPrice")),
        unrealized_pnl=dec(raw.get("unrealizedPnl")),
        currency=str(market.get("settle") or quote),
        instrument={
            "market_id": str(market.get("id") or ""),
            "type": str(market.get("type") or ""),
            "contract_size": str(dec(market.get("contractSize"), Decimal(1))),
            "side": side,
            "hedged": "true" if raw.get("hedged") else "false",
        },
    )
