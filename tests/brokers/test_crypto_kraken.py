"""Kraken spot through ccxt against the loopback fake of Kraken's REST API
(tests/fakes/kraken.py: API-Sign HMAC-SHA512 and an increasing nonce checked): every resting
kind sits in one list, so one listing and one CancelAll cover limits, stop-losses and trailing
stops; coins are closed at market; NAV is the balance plus coins at the last trade."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from fakes.exchange import FakeExchange, fast_venue
from fakes.kraken import KrakenBook

from rollbot.brokers.base import CloseRequest, OrderStatus, Side
from rollbot.brokers.crypto.venue import CryptoVenue

D = Decimal


@pytest.fixture
async def kraken() -> AsyncIterator[FakeExchange]:
    async with FakeExchange("kraken", balances={"USDT": "1000", "XXBT": "0.5"}) as fake:
        yield fake
        assert fake.book.unknown == [], "ccxt asked the fake for routes it does not serve"


def book(fake: FakeExchange) -> KrakenBook:
    assert isinstance(fake.book, KrakenBook)
    return fake.book


@pytest.fixture
async def venue(kraken: FakeExchange) -> AsyncIterator[CryptoVenue]:
    venue = fast_venue(kraken, "kraken", 1)
    yield venue
    await venue.close()


async def test_coins_are_positions_and_nav_is_balance_plus_coins(venue: CryptoVenue) -> None:
    assert [(p.symbol, p.quantity) for p in await venue.positions()] == [("BTC/USDT", D("0.5"))]
    assert (await venue.account()).nav == 1000 + D("0.5") * 60000
    assert venue.unverified() == []  # in the tested matrix: no start-up warning


async def test_limit_stop_loss_and_trailing_stop_are_listed_and_cancelled(
    kraken: FakeExchange, venue: CryptoVenue
) -> None:
    b = book(kraken)
    b.add("XBTUSDT", "sell", "0.2", "limit", "70000")
    b.add("XBTUSDT", "sell", "0.2", "stop-loss", "50000")
    b.add("XBTUSDT", "sell", "0.1", "trailing-stop", "500")
    listed = await venue.open_orders()
    assert sorted(o.quantity for o in listed) == [D("0.1"), D("0.2"), D("0.2")]
    assert [o.stop_price for o in listed if o.quantity == D("0.2") and o.stop_price] == [D(50000)]
    result = await venue.cancel_all()
    assert (result.requested, len(result.cancelled), result.remaining) == (3, 3, [])
    assert b.live() == [] and len(b.requests_to("/0/private/CancelAll")) == 1
    assert venue.coverage().read == [
        "spot every kind (limit, stop-loss, take-profit, trailing-stop) orders"
    ]


async def test_coins_are_sold_at_market_once_per_client_id(
    kraken: FakeExchange, venue: CryptoVenue
) -> None:
    request = CloseRequest(symbol="BTC/USDT", side=Side.SELL, quantity=D(1), client_order_id="rb1")
    sold = await venue.submit_close(request)  # capped at the 0.5 held
    again = await venue.submit_close(request)
    assert (sold.status, sold.quantity, again.order_id) == (
        OrderStatus.FILLED,
        D("0.5"),
        sold.order_id,
    )
    sent = [
        (r["pair"], r["type"], r["ordertype"], r["volume"]) for r in book(kraken).order_requests
    ]
    assert sent == [("XBTUSDT", "sell", "market", "0.5")]
    assert book(kraken).assets["XXBT"] == 0
