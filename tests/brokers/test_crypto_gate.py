"""Gate spot through ccxt against the loopback fake of Gate API v4 (tests/fakes/gate.py:
SIGN = HMAC-SHA512 over method, path, query, body hash and timestamp, checked): price-triggered
orders live apart (spot/price_orders) and are listed and cancelled there; the client order id
comes back with the "t-" Gate requires and still finds its order, so a close is sent once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from fakes.exchange import FakeExchange, fast_venue
from fakes.gate import GateBook

from rollbot.brokers.base import CloseRequest, OrderStatus, OrderType, Side
from rollbot.brokers.crypto.venue import CryptoVenue

D = Decimal


@pytest.fixture
async def gate() -> AsyncIterator[FakeExchange]:
    async with FakeExchange("gate", balances={"USDT": "1000", "BTC": "0.5"}) as fake:
        yield fake
        assert fake.book.unknown == [], "ccxt asked the fake for routes it does not serve"


def book(fake: FakeExchange) -> GateBook:
    assert isinstance(fake.book, GateBook)
    return fake.book


@pytest.fixture
async def venue(gate: FakeExchange) -> AsyncIterator[CryptoVenue]:
    venue = fast_venue(gate, "gate", 1)
    yield venue
    await venue.close()


async def test_coins_are_positions_and_nav_is_balance_plus_coins(venue: CryptoVenue) -> None:
    assert [(p.symbol, p.quantity) for p in await venue.positions()] == [("BTC/USDT", D("0.5"))]
    assert (await venue.account()).nav == 1000 + D("0.5") * 60000
    assert venue.unverified() == []


async def test_price_triggered_orders_are_listed_and_cancelled_apart(
    gate: FakeExchange, venue: CryptoVenue
) -> None:
    b = book(gate)
    b.add("BTC_USDT", "sell", "0.2", "70000")
    b.add("BTC_USDT", "sell", "0.3", "49900", trigger="50000")  # a stop-loss
    listed = sorted((o.type, o.stop_price, o.quantity) for o in await venue.open_orders())
    assert listed == [
        (OrderType.LIMIT, None, D("0.2")),
        (OrderType.STOP_LIMIT, D(50000), D("0.3")),
    ]
    assert venue.coverage().read == ["spot plain orders", "spot trigger orders"]
    result = await venue.cancel_all()
    assert (result.requested, len(result.cancelled), result.remaining) == (2, 2, [])
    assert b.live() == [] and b.requests_to("/api/v4/spot/price_orders")


async def test_a_close_is_sent_once_per_client_id_despite_the_t_prefix(
    gate: FakeExchange, venue: CryptoVenue
) -> None:
    request = CloseRequest(
        symbol="BTC/USDT", side=Side.SELL, quantity=D("0.5"), client_order_id="rb1"
    )
    sold = await venue.submit_close(request)
    again = await venue.submit_close(request)
    assert (sold.status, sold.client_order_id) == (OrderStatus.FILLED, "rb1")
    assert again.order_id == sold.order_id and again.client_order_id == "rb1"
    assert await venue.order_by_client_id("rb1") == again
    sent = [
        (r["currency_pair"], r["side"], r["type"], r["amount"], r["text"])
        for r in book(gate).order_requests
    ]
    assert sent == [("BTC_USDT", "sell", "market", "0.5", "t-rb1")]
