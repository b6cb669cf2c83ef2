"""Pure translations from ib_async's objects and error codes to rollbot's records. No I/O."""

from __future__ import annotations

import math
from decimal import Decimal

from rollbot.brokers.base import Order, OrderStatus, OrderType, Position, Side, VenueEventKind
from rollbot.brokers.ibkr._ib import UNSET_DOUBLE, IbPosition, PortfolioItem, Trade

# IB statuses after which an order can no longer trade.
DONE = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})
# Statuses only the venue sets: an order that reached one of them was accepted.
ACKNOWLEDGED = frozenset({"PreSubmitted", "Submitted", "Filled"})

PACING = 100
REJECT_CODES = frozenset({201, 203})  # order rejected; security not allowed for this account
NO_DEFINITION = 200  # "No security definition has been found": the contract is not known
# Order refusals: a price off the contract's tick (110), a direct-routed stock order under TWS's
# order precautions (10311). With an unknown contract (200, also a failed contract lookup) these
# are what the same order meets again if re-sent: reported at once, never re-sent in a loop.
ORDER_REJECT_CODES = frozenset({110, *REJECT_CODES, 10311})
FINAL_REJECT_CODES = frozenset({NO_DEFINITION, *ORDER_REJECT_CODES})
# The venue would not cancel: the order is still working (ib_async marks it Cancelled anyway).
CANCEL_REFUSED_CODES = frozenset({161, 10147, 10148})
ORDER_CANCELLED = 202  # the confirmation of a cancel we asked for, reported as an "error"
# Routine notices sent on every connect ("market data farm connection is OK"): nothing is wrong,
# and counting them as errors would trip the connection-failure kill switch for no reason.
INFO_CODES = frozenset({ORDER_CANCELLED, 2104, 2106, 2107, 2108, 2158})
CLIENT_ID_IN_USE = 326  # at connect: another API client has this id (the venue tries the next)
LOST = 1100
RESTORED = frozenset({1101, 1102})
# "Error validating request:-'bY' : cause - The API interface is currently in Read-Only mode.":
# 321 is any request TWS would not validate (an account code missing, too); the cause says which
VALIDATION = 321
READ_ONLY_CAUSE = "read-only mode"
READ_ONLY_ACTION = (
    "in TWS or IB Gateway, uncheck Global Configuration > API > Settings > Read-Only API"
    " (IBC: ReadOnlyApi=no): through a read-only API no kill can cancel or close"
)


def read_only_refusal(code: int, text: str) -> bool:
    return code == VALIDATION and READ_ONLY_CAUSE in text.lower()


# The contract types rollbot closes (each has a row in the README's venue support matrix).
# Others (futures options, bonds, warrants, combos...) are read and shown, never closed by us.
CLOSABLE_TYPES = ("STK", "FUT", "OPT", "CASH", "CFD")


def event_kind_for(code: int) -> VenueEventKind | None:
    """What an IB error code means to a subscriber; None for routine notices."""
    if code in INFO_CODES:
        return None
    if code == PACING:
        return VenueEventKind.PACING
    if code in ORDER_REJECT_CODES:
        return VenueEventKind.REJECT
    if code == LOST:
        return VenueEventKind.DISCONNECT
    if code in RESTORED:
        return VenueEventKind.RECONNECT
    return VenueEventKind.ERROR


def decimal(value: float | Decimal | str | None) -> Decimal:
    """IB floats as Decimal; IB's "unset" sentinel, NaN and None read as 0.

    repr() is the shortest text that round-trips, so 0.1 stays 0.1 instead of 0.1000000000000000055.
    """
    if value is None or value == "":
        return Decimal(0)
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str):
        return Decimal(value)
    if value == 0 or math.isnan(value) or math.isinf(value) or value >= UNSET_DOUBLE:
        return Decimal(0)  # also turns -0.0 into 0
    if value.is_integer():
        return Decimal(int(value))  # 100, not 100.0, in every message a person reads
    return Decimal(repr(value))


def optional_price(value: float | Decimal | None) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float) and (math.isnan(value) or value >= UNSET_DOUBLE):
        return None
    return decimal(value)


def order_id_of(trade: Trade) -> str:
    """IB's permId: unique across clients and sessions, the id TWS shows. Before TWS has
    acknowledged an order it has none yet, so "clientId:orderId" stands in."""
    perm = trade.order.permId or trade.orderStatus.permId
    return str(perm) if perm else local_id_of(trade)


def local_id_of(trade: Trade) -> str:
    return f"{trade.order.clientId}:{trade.order.orderId}"


def symbol_of(symbol: str, local_symbol: str) -> str:
    # localSymbol names the exact listing (ESZ5, EUR.USD); for stocks it equals the symbol
    return local_symbol or symbol


def order_type_of(ib_type: str) -> OrderType:
    t = ib_type.upper()
    stop = "STP" in t or "TRAIL" in t
    limit = "LMT" in t or "LIMIT" in t or t in {"LOC", "LOO", "REL", "MIDPRICE"} or "PEG" in t
    if stop:
        return OrderType.STOP_LIMIT if limit else OrderType.STOP
    return OrderType.LIMIT if limit else OrderType.MARKET


def _error_text(message: str) -> str:
    # ib_async logs "Error 201, reqId 5: Order rejected - reason: ..."; keep what TWS said
    return message.split(": ", 1)[-1]


def refusal(trade: Trade) -> tuple[int, str] | None:
    """(code, text) when IB refused the order outright, so it never worked at the venue."""
    if trade.orderStatus.status not in DONE:
        return None
    for entry in reversed(trade.log):
        code = entry.errorCode
        if not code or code in CANCEL_REFUSED_CODES or code == ORDER_CANCELLED:
            continue
        accepted = any(e.status in ACKNOWLEDGED for e in trade.log)
        if code == PACING or code in FINAL_REJECT_CODES or not accepted:
            return code, _error_text(entry.message)
        return None
    return None


def _cancel_was_refused(trade: Trade) -> bool:
    last = trade.log[-1] if trade.log else None
    return last is not None and last.errorCode in CANCEL_REFUSED_CODES


def filled_quantity(trade: Trade) -> Decimal:
    filled = decimal(trade.orderStatus.filled)
    if not filled:
        # completed orders read back from TWS carry the filled size on the order itself
        filled = decimal(getattr(trade.order, "filledQuantity", 0.0))
    if not filled and trade.fills:
        filled = sum((decimal(f.execution.shares) for f in trade.fills), Decimal(0))
    if not filled and trade.orderStatus.status == "Filled":
        filled = decimal(trade.order.totalQuantity)
    return filled


def status_of(trade: Trade) -> tuple[OrderStatus, str | None]:
    ib_status = trade.orderStatus.status
    refused = refusal(trade)
    if refused is not None:
        return OrderStatus.REJECTED, f"{refused[0]}: {refused[1]}"
    filled, total = filled_quantity(trade), decimal(trade.order.totalQuantity)
    if filled >= total > 0 and ib_status not in ("Cancelled", "ApiCancelled"):
        return OrderStatus.FILLED, None  # the execution can arrive before its orderStatus
    working = OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.OPEN
    if _cancel_was_refused(trade):
        return working, None
    if ib_status == "Filled":
        return OrderStatus.FILLED, None
    if ib_status in ("Cancelled", "ApiCancelled"):
        return OrderStatus.CANCELLED, None
    if ib_status == "Inactive":
        why = trade.orderStatus.whyHeld or (trade.log[-1].message if trade.log else "")
        return OrderStatus.REJECTED, f"inactive at IB{': ' + why if why else ''}"
    return working, None


def to_order(venue: str, trade: Trade, *, reduce_only: bool = False, symbol: str = "") -> Order:
    """symbol: a fallback for orders we placed by conId alone, whose contract names nothing."""
    o, c = trade.order, trade.contract
    status, reason = status_of(trade)
    order_type = order_type_of(o.orderType)
    limit = (
        optional_price(o.lmtPrice)
        if order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        else None
    )
    stop = (
        optional_price(o.auxPrice) if order_type in (OrderType.STOP, OrderType.STOP_LIMIT) else None
    )
    refused = refusal(trade) if status is OrderStatus.REJECTED else None
    return Order(
        venue=venue,
        order_id=order_id_of(trade),
        client_order_id=o.orderRef or None,
        symbol=symbol_of(c.symbol, c.localSymbol) or symbol,
        side=Side.BUY if o.action.upper() == "BUY" else Side.SELL,
        type=order_type,
        quantity=decimal(o.totalQuantity),
        filled_quantity=filled_quantity(trade),
        limit_price=limit,
        stop_price=stop,
        status=status,
        reduce_only=reduce_only,
        reason=reason,
        rejected_for_good=refused is not None and refused[0] in FINAL_REJECT_CODES,
        account=o.account or None,
    )


def to_position(venue: str, pos: IbPosition, item: PortfolioItem | None) -> Position:
    c = pos.contract
    multiplier = decimal(c.multiplier) if c.multiplier else Decimal(1)
    instrument = {
        "conId": str(c.conId),
        "secType": c.secType,
        "exchange": c.exchange or c.primaryExchange,
        "currency": c.currency,
        "account": pos.account,
    }
    if c.multiplier:
        instrument["multiplier"] = str(c.multiplier)
    return Position(
        venue=venue,
        symbol=symbol_of(c.symbol, c.localSymbol),
        quantity=decimal(pos.position),
        # IB's avgCost includes the multiplier for futures and options; ours is per unit
        avg_price=decimal(pos.avgCost) / (multiplier or Decimal(1)),
        market_price=decimal(item.marketPrice) if item else Decimal(0),
        unrealized_pnl=decimal(item.unrealizedPNL) if item else Decimal(0),
        currency=c.currency or "USD",
        instrument=instrument,
        multiplier=multiplier or Decimal(1),
    )
