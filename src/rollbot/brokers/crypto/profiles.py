"""What ccxt's unified API does not say about an exchange and rollbot needs to know.

Everything else is read from ccxt itself (`has`, `features`); this table holds what ccxt does
not unify: how to find one of our orders by client id cheaply, the kinds of resting order an
exchange keeps in lists of their own (OKX's algo orders: one listing per ordType), whether
ccxt's balance `total` already includes unrealised PnL, whether spot and derivatives share
one wallet, and how a hedge-mode position is closed. The exchanges named here are the ones
the support matrix (README) tests against fakes; any other runs on ccxt's unified API with a
start-up warning naming what is unverified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Raw = dict[str, Any]


@dataclass(frozen=True)
class OrderKind:
    """One list of resting orders an exchange keeps: how to list it and cancel one of it."""

    label: str
    list_params: Raw = field(default_factory=dict)
    cancel_params: Raw = field(default_factory=dict)

    @property
    def conditional(self) -> bool:
        return bool(self.cancel_params)


PLAIN = OrderKind("plain")
TRIGGER = OrderKind("trigger", {"trigger": True}, {"trigger": True})

# OKX v5: GET /trade/orders-algo-pending takes one ordType per request (conditional and oco
# may be combined, nothing else), and ccxt's {"trigger": True} asks for ordType=trigger only;
# every algo kind is cancelled through POST /trade/cancel-algos (ccxt: {"trigger": True}).
_OKX_KINDS = (
    PLAIN,
    OrderKind("trigger", {"trigger": True}, {"trigger": True}),
    OrderKind("conditional (stop-loss/take-profit)", {"ordType": "conditional"}, {"trigger": True}),
    OrderKind("oco", {"ordType": "oco"}, {"trigger": True}),
    OrderKind("trailing", {"trailing": True}, {"trailing": True}),
    OrderKind("iceberg", {"ordType": "iceberg"}, {"trigger": True}),
    OrderKind("twap", {"ordType": "twap"}, {"trigger": True}),
)


# Bitget v2 USDT-M: orders-plan-pending takes one planType per request and ccxt's
# {"trigger": True} asks for normal_plan only: take-profit/stop-loss (profit_loss) and trailing
# stops (track_plan) are lists of their own; cancel-plan-order cancels each by its planType.
_BITGET_DERIVATIVE_KINDS = (
    PLAIN,
    OrderKind(
        "trigger (normal_plan)", {"trigger": True}, {"trigger": True, "planType": "normal_plan"}
    ),
    OrderKind(
        "take-profit/stop-loss (profit_loss)",
        {"planType": "profit_loss"},
        {"trigger": True, "planType": "profit_loss"},
    ),
    OrderKind(
        "trailing (track_plan)", {"trailing": True}, {"trigger": True, "planType": "track_plan"}
    ),
)


@dataclass(frozen=True)
class Profile:
    # fetch_order(id, symbol, {"clientOrderId": ...}) finds an order open or done by client id
    fetch_order_by_client_id: bool = False
    # an exchange parameter that narrows order lists (open and history) to one client id;
    # without it we list and match locally, which can miss an order beyond the first page
    client_id_param: str | None = None
    # the resting-order lists, when ccxt's features (plain + trigger) do not tell them all
    order_kinds: tuple[OrderKind, ...] | None = None
    # the same for derivatives only, where spot keeps ccxt's lists
    derivative_kinds: tuple[OrderKind, ...] | None = None
    # one open-orders / positions request covers spot and derivatives (no type parameter)
    lists_all_markets: bool = False
    # ccxt's balance total for the quote already holds unrealised PnL (equity); None: unknown
    total_includes_upl: bool | None = None
    # where NAV comes from, for the README and the start-up warning
    nav_field: str = ""
    # spot and derivatives share one wallet (one balance read serves both)
    one_wallet: bool = False
    # params that close a hedge-mode position of side "long"/"short"
    hedge_close: str = "hedged"  # "hedged" (ccxt picks the index), "posSide", "POSITIONSIDE"
    # what ccxt puts before our client order id (gate's "t-"), taken off when reading back
    client_id_prefix: str = ""


PROFILES: dict[str, Profile] = {
    "binance": Profile(
        fetch_order_by_client_id=True,
        total_includes_upl=True,
        nav_field="spot: free + locked; USDⓈ-M: assets[].marginBalance (wallet + unrealised)",
        hedge_close="POSITIONSIDE",
    ),
    "bitget": Profile(
        derivative_kinds=_BITGET_DERIVATIVE_KINDS,
        total_includes_upl=True,
        nav_field="USDT-FUTURES accounts[].accountEquity (includes unrealizedPL)",
    ),
    "bybit": Profile(
        client_id_param="orderLinkId",
        total_includes_upl=False,
        nav_field="coin[].walletBalance + positions' unrealisedPnl",
        one_wallet=True,
    ),
    "gate": Profile(
        # spot/open_orders and spot/price_orders: ccxt's plain and {"trigger": True} lists
        client_id_prefix="t-",
        total_includes_upl=True,  # spot here: nothing unrealised beside the balance
        nav_field="spot/accounts available + locked, coins at the last trade",
    ),
    "kraken": Profile(
        # OpenOrders holds every kind (limit, stop-loss, take-profit, trailing-stop) and
        # CancelAll cancels them all
        order_kinds=(OrderKind("every kind (limit, stop-loss, take-profit, trailing-stop)"),),
        total_includes_upl=True,  # spot only: nothing unrealised beside the balance
        nav_field="Balance (BalanceEx balance) + coins at the last trade",
    ),
    "okx": Profile(
        order_kinds=_OKX_KINDS,
        lists_all_markets=True,
        total_includes_upl=True,
        nav_field="details[].eq (cash + unrealised)",
        one_wallet=True,
        hedge_close="posSide",
    ),
}


def profile_for(exchange_id: str) -> Profile:
    return PROFILES.get(exchange_id, Profile())


def hedge_close_params(profile: Profile, side: str) -> Raw:
    """Params that close the `side` ("long"/"short") leg of a hedge-mode position. OKX and
    Binance refuse reduceOnly there: an order on the leg's own side of the book closes it."""
    if profile.hedge_close == "posSide":
        return {"positionSide": side}
    if profile.hedge_close == "POSITIONSIDE":
        return {"positionSide": side.upper()}
    return {"reduceOnly": True, "hedged": True}
