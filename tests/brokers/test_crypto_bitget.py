"""Bitget USDT-M perpetuals through ccxt against the loopback fake of Bitget's v2 API
(tests/fakes/bitget.py: ACCESS-SIGN and ACCESS-PASSPHRASE checked): the passphrase from the
environment, the three plan-order lists (normal_plan, profit_loss, track_plan) each read and
cancelled — ccxt's trigger flag alone reads normal_plan only — NAV from accountEquity with
unrealised PnL counted once, and a reduce-only close."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from fakes.bitget import BitgetBook
from fakes.exchange import FakeExchange

from rollbot.brokers.base import CloseRequest, OrderType, Side
from rollbot.brokers.crypto.venue import CryptoVenue
from rollbot.brokers.registry import build_venue
from rollbot.config import CryptoVenueConfig, Secrets

D = Decimal


@pytest.fixture
async def bitget() -> AsyncIterator[FakeExchange]:
    async with FakeExchange("bitget") as fake:
        book(fake).set_position("BTCUSDT", "0.5", entry="50000")  # +5000 at 60000
        yield fake
        assert fake.book.unknown == [], "ccxt asked the fake for routes it does not serve"


def book(fake: FakeExchange) -> BitgetBook:
    assert isinstance(fake.book, BitgetBook)
    return fake.book


@pytest.fixture
async def venue(
    bitget: FakeExchange, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[CryptoVenue]:
    for name, value in bitget.env("bitget").items():
        monkeypatch.setenv(name, value)
    cfg = CryptoVenueConfig(**bitget.venue_config("bitget", rate_limit_ms=1))
    venue = build_venue(cfg, Secrets())  # key, secret and passphrase from the environment
    assert isinstance(venue, CryptoVenue)
    venue.exchange.timeout_on_exit = 0
    yield venue
    await venue.close()


async def test_every_plan_order_list_is_read_and_cancelled(
    bitget: FakeExchange, venue: CryptoVenue
) -> None:
    b = book(bitget)
    b.add("BTCUSDT", "sell", "0.1", price="70000")
    b.add("BTCUSDT", "sell", "0.5", plan_type="normal_plan", trigger="45000")
    b.add("BTCUSDT", "sell", "0.5", plan_type="profit_loss", trigger="48000")
    b.add("BTCUSDT", "sell", "0.5", plan_type="track_plan", trigger="58000")
    listed = sorted((o.type, o.stop_price or 0) for o in await venue.open_orders())
    assert listed == [
        (OrderType.LIMIT, 0),
        (OrderType.STOP, 45000),
        (OrderType.STOP, 48000),
        (OrderType.STOP, 58000),
    ]
    assert venue.coverage().read == [
        "derivatives plain orders",
        "derivatives trigger (normal_plan) orders",
        "derivatives take-profit/stop-loss (profit_loss) orders",
        "derivatives trailing (track_plan) orders",
    ]
    result = await venue.cancel_all()
    assert (result.requested, len(result.cancelled), result.remaining) == (4, 4, [])
    assert b.live() == []
    signed = [r for r in b.requests if r.path.startswith("/api/v2/mix/order/")]
    assert signed and all(r.status == 200 for r in signed)  # signature and passphrase held


async def test_nav_is_account_equity_with_unrealised_pnl_once(venue: CryptoVenue) -> None:
    assert (await venue.account()).nav == D(15000)  # 10000 available + 5000 unrealised


async def test_the_perpetual_is_closed_reduce_only(
    bitget: FakeExchange, venue: CryptoVenue
) -> None:
    request = CloseRequest(
        symbol="BTC/USDT:USDT", side=Side.SELL, quantity=D("0.5"), client_order_id="rb1"
    )
    await venue.submit_close(request)
    sent = [
        (r["symbol"], r["side"], r["size"], r["reduceOnly"]) for r in book(bitget).order_requests
    ]
    assert sent == [("BTCUSDT", "sell", "0.5", "YES")]
    assert book(bitget).position("BTCUSDT") == 0
