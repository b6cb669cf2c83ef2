"""OKX through ccxt against the loopback fake of OKX v5 (tests/fakes/okx.py): the passphrase
from the environment, spot and swaps in one venue, every algo order kind listed and cancelled,
NAV with unrealised PnL counted once, hedge-mode closes per side, and a wrong market that is
reported as not checked instead of flat."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from fakes.exchange import FakeExchange, fast_venue
from fakes.okx import OkxBook

from rollbot.brokers.base import CloseRequest, OrderType, Side, VenueError
from rollbot.brokers.registry import build_venue
from rollbot.commands.rollback.positions import read_book
from rollbot.config import CryptoVenueConfig, Secrets
from rollbot.errors import ConfigError

D = Decimal


@pytest.fixture
async def okx() -> AsyncIterator[FakeExchange]:
    # 50 contracts of 0.01 BTC long from 50000 (unrealised +5000 at 60000), 0.5 BTC spot
    async with FakeExchange("okx", balances={"USDT": "10000", "BTC": "0.5"}) as fake:
        fake.book.set_position("BTC-USDT-SWAP", "50", entry="50000")
        yield fake
        assert fake.book.unknown == [], "ccxt asked the fake for routes it does not serve"


def book(fake: FakeExchange) -> OkxBook:
    assert isinstance(fake.book, OkxBook)
    return fake.book


def resting_algo_book(fake: FakeExchange) -> None:
    """A plain limit and one order of each algo kind a strategy leaves on OKX."""
    b = book(fake)
    b.add("BTC-USDT-SWAP", "sell", "10", "limit", px="70000")
    b.add("BTC-USDT-SWAP", "sell", "50", "conditional", trigger_px="55000", reduce_only=True)
    b.add("BTC-USDT-SWAP", "sell", "50", "oco", trigger_px="54000", reduce_only=True)
    b.add("BTC-USDT-SWAP", "sell", "50", "move_order_stop", trigger_px="58000")
    b.add("BTC-USDT-SWAP", "buy", "5", "trigger", trigger_px="65000")
    b.add("BTC-USDT", "sell", "0.5", "conditional", trigger_px="50000")


async def test_passphrase_comes_from_the_environment_and_signs_every_request(
    okx: FakeExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = CryptoVenueConfig(**okx.venue_config("okx"))
    for name, value in okx.env("okx").items():
        monkeypatch.setenv(name, value)
    venue = build_venue(cfg, Secrets())
    venue.exchange.timeout_on_exit = 0  # type: ignore[attr-defined]
    try:
        await venue.connect()
        assert {p.symbol for p in await venue.positions()} == {"BTC/USDT:USDT", "BTC/USDT"}
    finally:
        await venue.close()
    private = [r for r in book(okx).requests if r.path.startswith("/api/v5/account/")]
    assert private and all(r.status == 200 for r in private)  # the fake checked each signature


async def test_a_wrong_passphrase_is_the_venues_refusal_and_a_missing_one_is_a_config_error(
    okx: FakeExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = CryptoVenueConfig(**okx.venue_config("okx"))
    for name, value in okx.env("okx").items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ROLLBOT_FAKE_OKX_PASSPHRASE")
    with pytest.raises(ConfigError) as missing:
        build_venue(cfg, Secrets())
    assert str(missing.value) == (
        "venue 'okx': environment variable ROLLBOT_FAKE_OKX_PASSPHRASE (password) is not set"
        " (export it, or put it in .env in the working directory)"
    )
    monkeypatch.setenv("ROLLBOT_FAKE_OKX_PASSPHRASE", "not-the-passphrase")
    venue = build_venue(cfg, Secrets())
    venue.exchange.timeout_on_exit = 0  # type: ignore[attr-defined]
    try:
        await venue.connect()
        with pytest.raises(VenueError) as refused:
            await venue.positions()
    finally:
        await venue.close()
    assert "50105" in str(refused.value) and "not-the-passphrase" not in str(refused.value)


async def test_every_algo_order_kind_is_listed_with_its_trigger(okx: FakeExchange) -> None:
    resting_algo_book(okx)
    venue = fast_venue(okx, "okx", 1)
    try:
        orders = await venue.open_orders()
        coverage = venue.coverage()
    finally:
        await venue.close()
    seen = sorted(
        (o.symbol, o.side.value, o.quantity, o.type.value, o.stop_price or 0) for o in orders
    )
    assert seen == [
        ("BTC/USDT", "SELL", D("0.5"), "STOP", 50000),
        ("BTC/USDT:USDT", "BUY", D("0.05"), "STOP", 65000),
        ("BTC/USDT:USDT", "SELL", D("0.1"), "LIMIT", 0),
        ("BTC/USDT:USDT", "SELL", D("0.5"), "STOP", 54000),
        ("BTC/USDT:USDT", "SELL", D("0.5"), "STOP", 55000),
        ("BTC/USDT:USDT", "SELL", D("0.5"), "STOP", 58000),
    ]
    assert coverage.not_checked == []
    for kind in ("plain", "conditional", "oco", "trailing", "trigger", "iceberg", "twap"):
        assert any(kind in read for read in coverage.read), kind


async def test_cancel_all_cancels_every_algo_order_and_reads_back_none(okx: FakeExchange) -> None:
    resting_algo_book(okx)
    venue = fast_venue(okx, "okx", 1)
    try:
        result = await venue.cancel_all()
    finally:
        await venue.close()
    assert (result.requested, len(result.cancelled), result.remaining) == (6, 6, [])
    assert book(okx).live() == []  # the fake's own book: nothing resting, stops included
    algo_cancels = book(okx).requests_to("/api/v5/trade/cancel-algos")
    assert sum(len(r.params["_list"]) for r in algo_cancels) == 5


async def test_nav_counts_unrealised_pnl_once(okx: FakeExchange) -> None:
    """OKX's eq is cash + unrealised: 10000 + 5000. Spot adds 0.5 BTC at 60000."""
    derivatives = fast_venue(okx, "okx", 1, market="derivatives")
    both = fast_venue(okx, "okx", 1, market="all")
    try:
        assert (await derivatives.account()).nav == D(15000)
        assert (await both.account()).nav == D(15000) + D("0.5") * 60000
    finally:
        await derivatives.close()
        await both.close()


async def test_one_venue_closes_a_swap_reduce_only_and_sells_spot(okx: FakeExchange) -> None:
    venue = fast_venue(okx, "okx", 1)
    try:
        swap = await venue.submit_close(
            CloseRequest(
                symbol="BTC/USDT:USDT", side=Side.SELL, quantity=D("0.5"), client_order_id="rbswap1"
            )
        )
        spot = await venue.submit_close(
            CloseRequest(
                symbol="BTC/USDT", side=Side.SELL, quantity=D("0.5"), client_order_id="rbspot1"
            )
        )
    finally:
        await venue.close()
    assert (swap.type, spot.type) == (OrderType.MARKET, OrderType.MARKET)
    sent = [
        (r["instId"], r["side"], r["sz"], r["tdMode"], r.get("reduceOnly"))
        for r in book(okx).order_requests
    ]
    assert sent == [
        ("BTC-USDT-SWAP", "sell", "50", "cross", True),
        ("BTC-USDT", "sell", "0.5", "cash", None),
    ]
    assert book(okx).position("BTC-USDT-SWAP") == 0 and book(okx).cash["BTC"] == 0


async def test_hedge_mode_closes_each_side_by_its_position_side() -> None:
    async with FakeExchange("okx", long_short_mode=True) as fake:
        b = book(fake)
        b.set_position("BTC-USDT-SWAP", "50", pos_side="long")
        b.set_position("BTC-USDT-SWAP", "20", pos_side="short")
        venue = fast_venue(fake, "okx", 1, market="derivatives")
        try:
            held = sorted(p.quantity for p in await venue.positions())
            assert held == [D("-0.2"), D("0.5")]
            for side, qty, cid in ((Side.SELL, "0.5", "rblong"), (Side.BUY, "0.2", "rbshort")):
                await venue.submit_close(
                    CloseRequest(
                        symbol="BTC/USDT:USDT", side=side, quantity=D(qty), client_order_id=cid
                    )
                )
            assert await venue.positions() == []
        finally:
            await venue.close()
        sent = [(r["side"], r["posSide"], r["sz"], "reduceOnly" in r) for r in b.order_requests]
        assert sent == [("sell", "long", "50", False), ("buy", "short", "20", False)]


async def test_spot_coins_on_a_derivatives_only_venue_are_not_checked_never_flat() -> None:
    """A spot-only account read with the default market = "derivatives": no positions, but
    the read names the coins it did not check instead of passing for flat."""
    async with FakeExchange("okx", balances={"USDT": "100", "BTC": "0.5"}) as fake:
        venue = fast_venue(fake, "okx", 1, market="derivatives")
        try:
            seen = await read_book(venue)
        finally:
            await venue.close()
    assert seen.error is None and seen.positions == []
    assert seen.not_checked == [
        'spot holdings (market "spot" not configured; the balance shows BTC/USDT 0.5)'
    ]


async def test_a_market_the_exchange_lacks_is_refused_before_any_request() -> None:
    with pytest.raises(ConfigError) as refused:
        CryptoVenue_for("kraken", market="derivatives")
    assert str(refused.value) == (
        "venue 'k': market: kraken has no derivatives market in ccxt (it offers: spot)"
    )


def CryptoVenue_for(exchange: str, **overrides: str) -> object:
    cfg = CryptoVenueConfig(kind="crypto", name="k", exchange=exchange, **overrides)  # type: ignore[arg-type]
    return build_venue(cfg, Secrets())


async def test_a_market_missing_in_the_quote_refuses_to_connect_naming_it(
    okx: FakeExchange,
) -> None:
    venue = fast_venue(okx, "okx", 1, quote="USDC", market="derivatives")
    try:
        with pytest.raises(VenueError) as refused:
            await venue.connect()
    finally:
        await venue.close()
    assert refused.value.code == "BAD_MARKET"
    assert str(refused.value).startswith(
        "okx: market 'derivatives': okx lists no derivatives market in USDC"
    )


async def test_one_algo_order_is_cancelled_by_its_id_through_cancel_algos(
    okx: FakeExchange,
) -> None:
    """What flatten does to a resting stop on a symbol it closes."""
    stop = book(okx).add("BTC-USDT-SWAP", "sell", "50", "conditional", trigger_px="55000")
    venue = fast_venue(okx, "okx", 1)
    try:
        await venue.cancel_order(stop.ord_id)
    finally:
        await venue.close()
    assert stop.state == "canceled"
    (sent,) = book(okx).requests_to("/api/v5/trade/cancel-algos")
    assert sent.params["_list"] == [{"algoId": stop.ord_id, "instId": "BTC-USDT-SWAP"}]
