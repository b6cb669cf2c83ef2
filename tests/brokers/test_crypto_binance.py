"""Binance spot through ccxt (real HTTP, signing on) against the loopback fake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from fakes.exchange import FakeExchange, RunningFakeExchange, fast_venue, start_fake_exchange

from rollbot.brokers.base import (
    CloseRequest,
    OrderRejected,
    OrderStatus,
    OrderType,
    Side,
    VenueError,
    VenueEvent,
    VenueEventKind,
)
from rollbot.brokers.crypto.venue import CryptoVenue
from rollbot.brokers.registry import build_venues
from rollbot.config import load_settings

BTC, ETH, DOGE = "BTC/USDT", "ETH/USDT", "DOGE/USDT"
FAST_PACING_MS = 0.5  # ccxt's limiter stays on, at 1/100 of binance's real spacing
HOLDINGS = {"BTC": "0.5", "ETH": "2", "DOGE": "3", "USDT": "100"}  # DOGE: 0.3 USDT of dust


def make_venue(fake: FakeExchange | RunningFakeExchange, secret: str | None = None) -> CryptoVenue:
    return fast_venue(fake, "binance", FAST_PACING_MS, secret)


@pytest.fixture
async def fake() -> AsyncIterator[FakeExchange]:
    async with FakeExchange("binance", balances=HOLDINGS) as fake:
        yield fake
        assert fake.book.unknown == [], "ccxt asked the fake for routes it does not serve"


@pytest.fixture
async def venue(fake: FakeExchange) -> AsyncIterator[CryptoVenue]:
    venue = make_venue(fake)
    yield venue
    await venue.close()


@pytest.fixture
def events(venue: CryptoVenue) -> list[VenueEvent]:
    seen: list[VenueEvent] = []
    venue.subscribe(seen.append)
    return seen


def sell(symbol: str, qty: str, cid: str) -> CloseRequest:
    return CloseRequest(symbol=symbol, side=Side.SELL, quantity=Decimal(qty), client_order_id=cid)


async def test_holdings_valued_in_quote_and_dust_ignored(venue: CryptoVenue) -> None:
    positions = {p.symbol: p for p in await venue.positions()}
    assert set(positions) == {BTC, ETH}  # DOGE is worth 0.3 USDT, below the dust of 1
    assert positions[BTC].quantity == Decimal("0.5")
    assert positions[BTC].market_price == Decimal(60000)
    assert positions[ETH].market_value == Decimal(6000)
    snapshot = await venue.account()
    assert snapshot.nav == Decimal("36100.3")  # dust still counts towards NAV


async def test_spot_sold_down_to_the_quote_currency(
    fake: FakeExchange, venue: CryptoVenue, events: list[VenueEvent]
) -> None:
    for p in await venue.positions():
        order = await venue.submit_close(sell(p.symbol, str(p.quantity), f"sell-{p.symbol[:3]}"))
        assert order.status is OrderStatus.FILLED and order.type is OrderType.MARKET
        assert not order.reduce_only

    assert await venue.positions() == []
    assert fake.book.balance("BTC") == fake.book.balance("ETH") == 0
    assert fake.book.balance("DOGE") == 3
    assert fake.book.balance("USDT") == Decimal(100 + 30000 + 6000)
    sent = fake.book.order_requests
    assert [(r["symbol"], r["side"], r["type"], r["quantity"]) for r in sent] == [
        ("BTCUSDT", "SELL", "MARKET", "0.5"),
        ("ETHUSDT", "SELL", "MARKET", "2"),
    ]
    assert [r["newClientOrderId"] for r in sent] == ["sell-BTC", "sell-ETH"]
    assert all("reduceOnly" not in r for r in sent)  # spot has no such flag
    assert len([e for e in events if e.kind is VenueEventKind.ORDER_SENT]) == 2


async def test_cancel_all_per_symbol_includes_the_stop_loss(
    fake: FakeExchange, venue: CryptoVenue
) -> None:
    fake.book.add_order("BTCUSDT", "SELL", "0.1", "70000")
    stop = fake.book.add_order("ETHUSDT", "SELL", "1", "2500", trigger_price="2600")
    listed = {o.order_id: o for o in await venue.open_orders()}
    assert listed[stop.order_id].type is OrderType.STOP_LIMIT
    assert listed[stop.order_id].stop_price == Decimal(2600)

    result = await venue.cancel_all()

    assert result.complete and result.requested == 2
    assert sorted(result.cancelled) == sorted(listed)
    assert fake.book.open_orders() == []
    assert fake.book.balance("ETH") == 2 and fake.book.locked["ETH"] == 0
    # binance needs a symbol per cancel-all: one for each symbol that had orders
    deleted = sorted(
        r.params["symbol"]
        for r in fake.book.requests_to("/api/v3/openOrders")
        if r.method == "DELETE"
    )
    assert deleted == ["BTCUSDT", "ETHUSDT"]


async def test_exchange_error_mid_sell_down_leaves_an_exact_residual(
    fake: FakeExchange, venue: CryptoVenue, events: list[VenueEvent]
) -> None:
    fake.book.fail_orders_after(1)  # then HTTP 500 {"code": -1000}
    failed = []
    for p in sorted(await venue.positions(), key=lambda p: p.symbol):  # BTC, then ETH
        try:
            await venue.submit_close(sell(p.symbol, str(p.quantity), f"mid-{p.symbol[:3]}"))
        except VenueError as exc:
            failed.append((p.symbol, exc.code, type(exc)))
    assert failed == [(ETH, "-1000", VenueError)]
    assert {p.symbol: p.quantity for p in await venue.positions()} == {ETH: Decimal(2)}
    assert [e.code for e in events if e.kind is VenueEventKind.ERROR] == ["-1000"]


async def test_a_bad_signature_is_refused_by_the_fake(fake: FakeExchange) -> None:
    venue = make_venue(fake, secret="not-the-secret")
    try:
        with pytest.raises(VenueError) as refused:
            await venue.positions()
    finally:
        await venue.close()
    assert refused.value.code == "-1022"
    assert fake.book.requests_to("/api/v3/account")[-1].status == 400


async def test_http_429_is_retried_and_counted(
    fake: FakeExchange, venue: CryptoVenue, events: list[VenueEvent]
) -> None:
    fake.book.rate_limit(1, path="/api/v3/account")
    assert {p.symbol for p in await venue.positions()} == {BTC, ETH}
    pacing = [e for e in events if e.kind is VenueEventKind.PACING]
    assert len(pacing) == 1 and pacing[0].code == "-1003"
    assert venue.counts["pacing"] == 1


async def test_sale_capped_at_what_is_free(fake: FakeExchange, venue: CryptoVenue) -> None:
    fake.book.add_order("BTCUSDT", "SELL", "0.1", "70000")  # locks 0.1 of the 0.5
    order = await venue.submit_close(sell(BTC, "5", "cap-1"))
    assert order.quantity == Decimal("0.4") and order.status is OrderStatus.FILLED
    assert fake.book.order_requests[-1]["quantity"] == "0.4"
    assert fake.book.balance("BTC") == Decimal("0.1")  # the resting order still holds it


async def test_same_client_order_id_sends_one_order(fake: FakeExchange, venue: CryptoVenue) -> None:
    first = await venue.submit_close(sell(ETH, "1", "same-id"))
    second = await venue.submit_close(sell(ETH, "1", "same-id"))
    assert second.order_id == first.order_id
    assert len(fake.book.order_requests) == 1
    assert fake.book.balance("ETH") == 1
    found = await venue.order_by_client_id("same-id")
    assert found is not None and found.filled_quantity == Decimal(1)


async def test_order_by_client_id_walks_symbols_after_a_restart(
    fake: FakeExchange, venue: CryptoVenue
) -> None:
    sent = await venue.submit_close(sell(ETH, "1", "before-restart"))
    fresh = make_venue(fake)
    try:
        found = await fresh.order_by_client_id("before-restart")  # binance needs a symbol
        missing = await fresh.order_by_client_id("never-sent")
    finally:
        await fresh.close()
    assert found is not None and found.order_id == sent.order_id
    assert missing is None


async def test_venue_rejection_is_order_rejected_with_a_reject_event(
    fake: FakeExchange, venue: CryptoVenue, events: list[VenueEvent]
) -> None:
    fake.book.fail_orders_after(0, code=-2010, message="Account has insufficient balance.")
    with pytest.raises(OrderRejected) as rejected:
        await venue.submit_close(sell(BTC, "0.5", "refused"))
    assert rejected.value.code == "-2010"
    reject = [e for e in events if e.kind is VenueEventKind.REJECT]
    assert len(reject) == 1 and reject[0].order is not None
    assert reject[0].order.status is OrderStatus.REJECTED
    assert reject[0].order.client_order_id == "refused"
    assert venue.counts["rejects"] == 1 and venue.counts["orders_sent"] == 1


async def test_buying_more_of_a_holding_is_refused(fake: FakeExchange, venue: CryptoVenue) -> None:
    buy = CloseRequest(symbol=BTC, side=Side.BUY, quantity=Decimal("0.1"), client_order_id="up")
    with pytest.raises(OrderRejected) as refused:
        await venue.submit_close(buy)
    assert refused.value.code == "WOULD_INCREASE"
    with pytest.raises(OrderRejected) as tiny:
        await venue.submit_close(sell(BTC, "0.0001", "tiny"))  # below the 0.001 lot
    assert tiny.value.code == "BELOW_MIN_SIZE"
    assert fake.book.order_requests == []


def test_threaded_fake_serves_a_venue_built_from_config_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the CLI tests will do: a fake in its own thread, rollbot.toml and env only."""
    with start_fake_exchange("binance", balances=HOLDINGS) as fake:
        config = tmp_path / "rollbot.toml"
        config.write_text(fake.venue_toml("spot"))
        for key, value in fake.env("spot").items():
            monkeypatch.setenv(key, value)
        venue = build_venues(load_settings(config))["spot"]

        async def read() -> set[str]:
            try:
                return {p.symbol for p in await venue.positions()}
            finally:
                await venue.close()

        assert asyncio.run(read()) == {BTC, ETH}
        assert fake.book.unknown == []
        assert fake.book.requests_to("/api/v3/account")[0].status == 200
