"""Binance spot and USDⓈ-M futures in one venue, through ccxt against the loopback fake
(tests/fakes/binance_usdm.py): conditional orders in the algo service listed and cancelled,
NAV from marginBalance (unrealised PnL counted once), hedge-mode closes per leg."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from fakes.binance_usdm import BinanceUsdmBook
from fakes.exchange import FakeExchange, fast_venue

from rollbot.brokers.base import CloseRequest, OrderType, Side

D = Decimal
SYMBOLS = ["BTC/USDT:USDT", "ETH/USDT:USDT"]


@pytest.fixture
async def binance() -> AsyncIterator[FakeExchange]:
    # spot: 1000 USDT + 0.25 BTC; futures: 10000 USDT wallet, 0.5 BTC long from 50000 (+5000)
    async with FakeExchange("binance", balances={"USDT": "1000", "BTC": "0.25"}) as fake:
        book(fake).set_futures_position("BTCUSDT", "0.5", entry="50000")
        yield fake
        assert fake.book.unknown == [], "ccxt asked the fake for routes it does not serve"


def book(fake: FakeExchange) -> BinanceUsdmBook:
    assert isinstance(fake.book, BinanceUsdmBook)
    return fake.book


def venue_on(fake: FakeExchange, market: str = "all") -> Any:
    return fast_venue(fake, "binance", 1, market=market, symbols=SYMBOLS)


async def test_spot_and_usdm_positions_in_one_venue(binance: FakeExchange) -> None:
    venue = venue_on(binance)
    try:
        held = {p.symbol: p.quantity for p in await venue.positions()}
        read = venue.coverage().read
    finally:
        await venue.close()
    assert held == {"BTC/USDT:USDT": D("0.5"), "BTC/USDT": D("0.25")}
    assert "USDT-settled derivatives positions" in read and "spot balances" in read


async def test_algo_conditional_orders_are_listed_and_cancelled(binance: FakeExchange) -> None:
    b = book(binance)
    b.add_futures_order("BTCUSDT", "SELL", "0.1", "LIMIT", price="70000")
    b.add_futures_order("BTCUSDT", "SELL", "0.5", "STOP_MARKET", trigger_price="45000")
    b.add_futures_order("BTCUSDT", "SELL", "0.5", "TAKE_PROFIT_MARKET", trigger_price="75000")
    b.add_futures_order("ETHUSDT", "SELL", "1", "TRAILING_STOP_MARKET", trigger_price="2900")
    venue = venue_on(binance, "derivatives")
    try:
        listed = await venue.open_orders()
        result = await venue.cancel_all()
        read = venue.coverage().read
    finally:
        await venue.close()
    assert sorted((o.symbol, o.type, o.stop_price) for o in listed) == [
        ("BTC/USDT:USDT", OrderType.LIMIT, None),
        ("BTC/USDT:USDT", OrderType.STOP, D(45000)),
        ("BTC/USDT:USDT", OrderType.STOP, D(75000)),
        ("ETH/USDT:USDT", OrderType.STOP, D(2900)),
    ]
    assert (result.requested, len(result.cancelled), result.remaining) == (4, 4, [])
    assert b.live_futures() == []
    assert b.requests_to("/fapi/v1/algoOpenOrders")  # the algo service's own cancel-all
    assert read == ["derivatives plain orders", "derivatives trigger orders"]


async def test_nav_is_margin_balance_with_unrealised_pnl_once(binance: FakeExchange) -> None:
    futures = venue_on(binance, "derivatives")
    try:
        assert (await futures.account()).nav == D(15000)  # main: 20000, the +5000 twice
    finally:
        await futures.close()
    both = venue_on(binance, "all")
    try:
        assert (await both.account()).nav == D(15000) + 1000 + D("0.25") * 60000
    finally:
        await both.close()


async def test_hedge_mode_closes_each_leg_by_position_side_without_reduce_only() -> None:
    async with FakeExchange("binance", hedge_mode=True) as fake:
        b = book(fake)
        b.set_futures_position("BTCUSDT", "0.5", side="LONG")
        b.set_futures_position("BTCUSDT", "-0.2", side="SHORT")
        venue = venue_on(fake, "derivatives")
        try:
            held = sorted(p.quantity for p in await venue.positions())
            assert held == [D("-0.2"), D("0.5")]
            for side, qty, cid in ((Side.SELL, "0.5", "rblong"), (Side.BUY, "0.2", "rbshort")):
                request = CloseRequest(
                    symbol="BTC/USDT:USDT", side=side, quantity=D(qty), client_order_id=cid
                )
                await venue.submit_close(request)
            assert await venue.positions() == []
        finally:
            await venue.close()
        sent = [(r["side"], r["positionSide"], "reduceOnly" in r) for r in b.order_requests]
        assert sent == [("SELL", "LONG", False), ("BUY", "SHORT", False)]
