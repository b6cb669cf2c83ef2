"""What ccxt's unified API does not say about an exchange and rollbot needs to know.

Everything else is read from ccxt itself (`has`, `features`); this table only holds the
ways to find one of our orders by its client id cheaply, which ccxt does not unify.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    # fetch_order(id, symbol, {"clientOrderId": ...}) finds an order open or done by client id
    fetch_order_by_client_id: bool = False
    # an exchange parameter that narrows order lists (open and history) to one client id;
    # without it we list and match locally, which can miss an order beyond the first page
    client_id_param: str | None = None


PROFILES: dict[str, Profile] = {
    "binance": Profile(fetch_order_by_client_id=True),
    "binanceus": Profile(fetch_order_by_client_id=True),
    "bybit": Profile(client_id_param="orderLinkId"),
}


def profile_for(exchange_id: str) -> Profile:
    return PROFILES.get(exchange_id, Profile())
