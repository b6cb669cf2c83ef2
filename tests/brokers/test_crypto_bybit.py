"""Bybit linear perpetuals through ccxt (real HTTP, signing on) against the loopback fake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from fakes.exchange import (
    FAST_BACKOFF,
    FakeExchange,
    RunningFakeExchange,
    fast_venue,
    start_fake_exchange,
)

from rollbot.brokers.base import (
    CloseRequest,
    OrderRejected,
    OrderStatus,
    OrderType,
    RateLimited,
    Side,
    Venue,
    VenueError,
    VenueEvent,
    VenueEventKind,
    VenueUnavailable,
)
from rollbot.brokers.crypto.venue import CryptoVenue

BTC, ETH, SOL = "BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT"
FAST_PACING_MS = 0.2  # ccxt's limiter stays on, at 1/100 of bybit's real spacing


def make_venue(fake: FakeExchange | RunningFakeExchange, secret: str | None = None) -> CryptoVenue:
    return fast_venue(fake, "bybit", FAST_PACING_MS, secret)


@pytest.fixture
async def fake() -> AsyncIterator[FakeExchange]:
    async with FakeExchange("bybit", positions={"BTCUSDT": "0.5", "ETHUSDT": "-2"}) as fake:
        yield fake
        assert fake.book.unknown == [], "ccxt asked the fake for routes it does not serve"


@pytest.fixture
async def venue(fake: FakeExchange) -> AsyncIterator[CryptoVenue]:
    venue = make_venue(fake)
    await venue.connect()
    yield venue
    await venue.close()


@pytest.fixture
def events(venue: CryptoVenue) -> list[VenueEvent]:
    seen: list[VenueEvent] = []
    venue.subscribe(seen.append)
    return seen


def kinds(events: list[VenueEvent], kind: VenueEventKind) -> list[VenueEvent]:
    return [e for e in events if e.kind is kind]


def close_all_request(symbol: str, side: Side, qty: Decimal, cid: str) -> CloseRequest:
    return CloseRequest(symbol=symbol, side=side, quantity=qty, client_order_id=cid)


async def test_is_a_venue(venue: CryptoVenue) -> None:
    assert isinstance(venue, Venue)


async def test_positions_are_signed_with_prices_and_pnl(
    fake: FakeExchange, venue: CryptoVenue
) -> None:
    fake.book.set_position("BTCUSDT", "0.5", entry="58000")
    by_symbol = {p.symbol: p for p in await venue.positions()}
    assert by_symbol[BTC].quantity == Decimal("0.5")
    assert by_symbol[BTC].avg_price == Decimal(58000)
    assert by_symbol[BTC].market_price == Decimal(60000)
    assert by_symbol[BTC].unrealized_pnl == Decimal(1000)
    assert by_symbol[ETH].quantity == Decimal(-2)
    assert by_symbol[ETH].closing_side is Side.BUY


async def test_nav_is_wallet_plus_unrealized_pnl(fake: FakeExchange, venue: CryptoVenue) -> None:
    fake.book.set_position("BTCUSDT", "0.5", entry="58000")  # +1000 at a mark of 60000
    snapshot = await venue.account()
    assert snapshot.nav == Decimal(101000)
    assert snapshot.currency == "USDT"


async def test_long_and_short_flattened_with_reduce_only_market_orders(
    fake: FakeExchange, venue: CryptoVenue, events: list[VenueEvent]
) -> None:
    for i, p in enumerate(await venue.positions()):
        order = await venue.submit_close(
            close_all_request(p.symbol, p.closing_side, abs(p.quantity), f"flat-{i}")
        )
        assert order.status is OrderStatus.FILLED
        assert order.reduce_only and order.type is OrderType.MARKET
    sent = fake.book.order_requests
    assert [(r["symbol"], r["side"], r["qty"]) for r in sent] == [
        ("BTCUSDT", "Sell", "0.5"),
        ("ETHUSDT", "Buy", "2"),
    ]
    assert all(r["reduceOnly"] is True and r["orderType"] == "Market" for r in sent)
    assert await venue.positions() == []
    assert fake.book.position("BTCUSDT") == fake.book.position("ETHUSDT") == 0
    assert len(kinds(events, VenueEventKind.ORDER_SENT)) == 2
    assert all(e.value and e.value > 0 for e in kinds(events, VenueEventKind.LATENCY))


async def test_cancel_all_includes_the_stop_order(fake: FakeExchange, venue: CryptoVenue) -> None:
    fake.book.add_order("BTCUSDT", "SELL", "0.1", "70000")
    stop = fake.book.add_order("BTCUSDT", "SELL", "0.5", trigger_price="50000", reduce_only=True)
    listed = {o.order_id: o for o in await venue.open_orders()}
    assert listed[stop.order_id].type is OrderType.STOP
    assert listed[stop.order_id].stop_price == Decimal(50000)
    assert len(listed) == 2

    result = await venue.cancel_all()

    assert result.complete and result.remaining == []
    assert result.requested == 2 and sorted(result.cancelled) == sorted(listed)
    assert fake.book.open_orders() == []
    filters = [r.params.get("orderFilter") for r in fake.book.requests_to("/v5/order/cancel-all")]
    assert filters == [None, "StopOrder"]  # the conditional book needs its own call


async def test_cancel_all_with_nothing_open_sends_no_cancel(
    fake: FakeExchange, venue: CryptoVenue
) -> None:
    result = await venue.cancel_all()
    assert result.complete and result.requested == 0
    assert fake.book.requests_to("/v5/order/cancel-all") == []


async def test_cancel_all_reports_what_it_could_not_cancel(
    fake: FakeExchange, venue: CryptoVenue
) -> None:
    stop = fake.book.add_order("ETHUSDT", "BUY", "2", trigger_price="3500", reduce_only=True)
    fake.book.rate_limit(100, path="/v5/order/cancel")  # cancel-all and single cancels alike
    result = await venue.cancel_all()
    assert not result.complete
    assert [o.order_id for o in result.remaining] == [stop.order_id]
    assert result.cancelled == []


async def test_rate_limit_is_retried_and_counted(
    fake: FakeExchange, venue: CryptoVenue, events: list[VenueEvent]
) -> None:
    fake.book.rate_limit(2, path="/v5/position/list")
    positions = await venue.positions()
    assert {p.symbol for p in positions} == {BTC, ETH}
    pacing = kinds(events, VenueEventKind.PACING)
    assert [e.value for e in pacing] == [1, 2]
    assert all(e.code == "10006" for e in pacing)
    assert venue.counts["pacing"] == 2 and fake.book.rate_limited == 2


async def test_rate_limit_gives_up_after_the_backoff(
    fake: FakeExchange, venue: CryptoVenue, events: list[VenueEvent]
) -> None:
    fake.book.rate_limit(10, path="/v5/position/list")
    with pytest.raises(RateLimited):
        await venue.positions()
    assert len(kinds(events, VenueEventKind.PACING)) == len(FAST_BACKOFF) + 1


async def test_exchange_error_mid_flatten_leaves_an_exact_residual(
    fake: FakeExchange, venue: CryptoVenue, events: list[VenueEvent]
) -> None:
    fake.book.set_position("SOLUSDT", "10")
    fake.book.fail_orders_after(1)  # the first close goes through, then the venue errors
    failures: dict[str, VenueError] = {}
    for p in sorted(await venue.positions(), key=lambda p: p.symbol):  # BTC, ETH, SOL
        try:
            await venue.submit_close(
                close_all_request(p.symbol, p.closing_side, abs(p.quantity), f"mid-{p.symbol}")
            )
        except VenueError as exc:
            failures[p.symbol] = exc

    residual = {p.symbol: p.quantity for p in await venue.positions()}
    assert residual == {ETH: Decimal(-2), SOL: Decimal(10)}
    assert set(failures) == {ETH, SOL}
    assert all(type(e) is VenueError and e.code == "10016" for e in failures.values())
    assert len(kinds(events, VenueEventKind.ORDER_SENT)) == 3
    assert len(kinds(events, VenueEventKind.ERROR)) == 2
    # nothing was left behind at the venue for the failed ones
    assert await venue.order_by_client_id(f"mid-{ETH}") is None


async def test_close_larger_than_the_position_is_capped(
    fake: FakeExchange, venue: CryptoVenue
) -> None:
    order = await venue.submit_close(close_all_request(BTC, Side.SELL, Decimal(5), "cap-1"))
    assert order.quantity == Decimal("0.5") and order.status is OrderStatus.FILLED
    assert fake.book.order_requests[-1]["qty"] == "0.5"
    assert fake.book.position("BTCUSDT") == 0  # flat, not flipped short


async def test_same_client_order_id_sends_one_order(
    fake: FakeExchange, venue: CryptoVenue, events: list[VenueEvent]
) -> None:
    first = await venue.submit_close(close_all_request(ETH, Side.BUY, Decimal(1), "same-id"))
    second = await venue.submit_close(close_all_request(ETH, Side.BUY, Decimal(1), "same-id"))
    assert second.order_id == first.order_id
    assert len(fake.book.order_requests) == 1
    assert fake.book.position("ETHUSDT") == Decimal(-1)
    assert len(kinds(events, VenueEventKind.ORDER_SENT)) == 1


async def test_idempotent_across_restarts(fake: FakeExchange, venue: CryptoVenue) -> None:
    sent = await venue.submit_close(close_all_request(BTC, Side.SELL, Decimal("0.2"), "restart"))
    fresh = make_venue(fake)
    try:
        found = await fresh.order_by_client_id("restart")  # no memory of sending it
        again = await fresh.submit_close(
            close_all_request(BTC, Side.SELL, Decimal("0.2"), "restart")
        )
    finally:
        await fresh.close()
    assert found is not None and found.order_id == sent.order_id
    assert found.status is OrderStatus.FILLED and found.filled_quantity == Decimal("0.2")
    assert again.order_id == sent.order_id
    assert len(fake.book.order_requests) == 1


async def test_a_close_that_would_add_is_refused_and_nothing_sent(
    fake: FakeExchange, venue: CryptoVenue
) -> None:
    with pytest.raises(OrderRejected) as same_side:
        await venue.submit_close(close_all_request(BTC, Side.BUY, Decimal("0.1"), "wrong-way"))
    assert same_side.value.code == "WOULD_INCREASE"
    with pytest.raises(OrderRejected) as none:
        await venue.submit_close(close_all_request(SOL, Side.SELL, Decimal(1), "no-pos"))
    assert none.value.code == "NO_POSITION"
    assert fake.book.order_requests == []


async def test_unfilled_limit_close_can_be_read_back_and_cancelled(
    fake: FakeExchange, venue: CryptoVenue
) -> None:
    fake.book.no_fill = True
    request = CloseRequest(
        symbol=BTC,
        side=Side.SELL,
        quantity=Decimal("0.5"),
        type=OrderType.LIMIT,
        limit_price=Decimal("59880.04"),
        client_order_id="limit-1",
    )
    order = await venue.submit_close(request)
    assert order.status is OrderStatus.OPEN and order.limit_price == Decimal("59880")
    assert fake.book.order_requests[-1]["price"] == "59880"  # on the 0.1 tick

    await venue.cancel_order(order.order_id)

    after = await venue.order_by_client_id("limit-1")
    assert after is not None and after.status is OrderStatus.CANCELLED
    assert fake.book.position("BTCUSDT") == Decimal("0.5")


async def test_unknown_client_id_is_none(venue: CryptoVenue) -> None:
    assert await venue.order_by_client_id("never-sent") is None


async def test_read_only_refuses_to_trade(fake: FakeExchange, venue: CryptoVenue) -> None:
    await venue.connect(read_only=True)
    with pytest.raises(VenueError) as refused:
        await venue.submit_close(close_all_request(BTC, Side.SELL, Decimal("0.5"), "ro"))
    assert refused.value.code == "READ_ONLY"
    with pytest.raises(VenueError):
        await venue.cancel_all()
    assert fake.book.order_requests == []


async def test_venue_down_is_a_disconnect_and_reconnect_can_be_forbidden(
    fake: FakeExchange, venue: CryptoVenue, events: list[VenueEvent]
) -> None:
    venue.set_reconnect(False)
    await fake.stop()
    with pytest.raises(VenueUnavailable):
        await venue.positions()
    assert len(kinds(events, VenueEventKind.DISCONNECT)) == 1
    asked = len(fake.book.requests)
    with pytest.raises(VenueUnavailable, match="not allowed"):
        await venue.positions()
    assert len(fake.book.requests) == asked
    assert len(kinds(events, VenueEventKind.DISCONNECT)) == 1  # refused locally, not retried


async def test_bad_credentials_are_a_venue_error(fake: FakeExchange) -> None:
    venue = make_venue(fake, secret="wrong")
    try:
        with pytest.raises(VenueError) as refused:
            await venue.positions()
    finally:
        await venue.close()
    assert refused.value.code == "10004"
    assert "wrong" not in str(refused.value)


async def test_no_funds_is_order_rejected_with_a_reject_event(
    fake: FakeExchange, venue: CryptoVenue, events: list[VenueEvent]
) -> None:
    fake.book.fail_orders_after(0, code=110007, message="ab not enough for new order")
    with pytest.raises(OrderRejected) as rejected:
        await venue.submit_close(close_all_request(BTC, Side.SELL, Decimal("0.5"), "poor"))
    assert rejected.value.code == "110007"
    (reject,) = kinds(events, VenueEventKind.REJECT)
    assert reject.order is not None and reject.order.status is OrderStatus.REJECTED
    assert reject.order.reduce_only and reject.order.quantity == Decimal("0.5")
    assert fake.book.position("BTCUSDT") == Decimal("0.5")


async def test_closed_venue_reopens_unless_reconnect_is_forbidden(venue: CryptoVenue) -> None:
    await venue.close()
    assert len(await venue.positions()) == 2  # reopened on its own
    await venue.close()
    venue.set_reconnect(False)
    with pytest.raises(VenueUnavailable, match="closed"):
        await venue.positions()
    await venue.connect()  # an explicit connect is always allowed
    assert len(await venue.positions()) == 2


def test_usable_from_one_event_loop_after_another() -> None:
    """A CLI may run each command in its own asyncio.run with the same venue object."""
    with start_fake_exchange("bybit", positions={"BTCUSDT": "-0.25"}) as fake:
        venue = make_venue(fake)

        async def read() -> list[Decimal]:
            try:
                return [p.quantity for p in await venue.positions()]
            finally:
                await venue.close()

        assert asyncio.run(read()) == [Decimal("-0.25")]
        assert asyncio.run(read()) == [Decimal("-0.25")]


async def test_concurrent_closes_are_capped_and_deduplicated(
    fake: FakeExchange, venue: CryptoVenue
) -> None:
    """flatten runs closes concurrently; twins must not both reach the venue."""
    twins = [close_all_request(BTC, Side.SELL, Decimal("0.5"), "twin") for _ in range(3)]
    other = close_all_request(ETH, Side.BUY, Decimal(2), "other")
    orders = await asyncio.gather(*(venue.submit_close(r) for r in [*twins, other]))
    assert len({o.order_id for o in orders[:3]}) == 1
    assert [(r["symbol"], r["qty"]) for r in fake.book.order_requests] == [
        ("BTCUSDT", "0.5"),
        ("ETHUSDT", "2"),
    ]
    assert await venue.positions() == []


async def test_two_processes_racing_one_client_id_get_one_order(
    fake: FakeExchange, venue: CryptoVenue, events: list[VenueEvent]
) -> None:
    """The loser is refused as a duplicate (110072) and returns the winner's order."""
    other = make_venue(fake)
    try:
        request = close_all_request(BTC, Side.SELL, Decimal("0.5"), "raced")
        mine, theirs = await asyncio.gather(
            venue.submit_close(request), other.submit_close(request)
        )
    finally:
        await other.close()
    assert mine.order_id == theirs.order_id
    assert [o.client_id for o in fake.book.orders] == ["raced"]
    assert fake.book.position("BTCUSDT") == 0
    assert kinds(events, VenueEventKind.REJECT) == []


# a position row whose numbers ccxt cannot parse: ccxt raises a plain ValueError, none of its own
GARBLED_POSITIONS = {
    "category": "linear",
    "list": [
        {
            "symbol": "BTCUSDT",
            "size": "0.5",
            "side": "Buy",
            "avgPrice": "60000",
            "markPrice": "60000",
            "positionValue": "x",
            "positionIM": "x",
            "unrealisedPnl": "0",
            "positionIdx": 0,
            "leverage": "10",
            "tradeMode": 0,
            "liqPrice": "",
            "createdTime": "1700000000000",
            "updatedTime": "1700000000000",
        }
    ],
    "nextPageCursor": "",
}


async def test_an_error_the_library_does_not_know_is_a_venue_error_naming_the_venue(
    fake: FakeExchange, venue: CryptoVenue, events: list[VenueEvent]
) -> None:
    from rollbot.commands.rollback.positions import read_book

    fake.book.malformed["/v5/position/list"] = GARBLED_POSITIONS
    for read in (venue.positions, venue.account):
        with pytest.raises(VenueError) as failed:
            await read()
        assert str(failed.value).startswith("bybit: ")
        assert "unexpected ValueError from bybit" in str(failed.value)
    book = await read_book(venue)  # what `positions` and step 4/5 see: a named failure
    assert book.error is not None and "unexpected ValueError" in book.error
    assert [e.code for e in events if e.kind is VenueEventKind.ERROR][:1] == ["UNEXPECTED"]


async def test_linear_and_spot_in_one_unified_account() -> None:
    """market = "all": perpetuals and coins of one unified wallet, spot orders (plain and
    conditional) listed in their own market and cancelled, the coins sold at market, NAV the
    wallet once plus unrealised PnL plus the coins."""
    async with FakeExchange(
        "bybit", positions={"BTCUSDT": "0.5"}, wallet={"USDT": "1000", "ETH": "2"}
    ) as fake:
        fake.book.set_position("BTCUSDT", "0.5", entry="58000")  # +1000 unrealised
        fake.book.add_order("BTCUSDT", "SELL", "0.5", trigger_price="50000")
        fake.book.add_spot_order("ETHUSDT", "SELL", "1", "4000")
        fake.book.add_spot_order("ETHUSDT", "SELL", "1", trigger_price="2500")
        venue = fast_venue(fake, "bybit", FAST_PACING_MS, market="all")
        try:
            held = {p.symbol: p.quantity for p in await venue.positions()}
            assert held == {BTC: Decimal("0.5"), "ETH/USDT": Decimal(2)}
            assert (await venue.account()).nav == 1000 + 1000 + 2 * 3000
            listed = sorted((o.symbol, o.type.value) for o in await venue.open_orders())
            assert listed == [(BTC, "STOP"), ("ETH/USDT", "LIMIT"), ("ETH/USDT", "STOP")]
            assert venue.coverage().read[-4:] == [
                "spot plain orders",
                "spot trigger orders",
                "derivatives plain orders",
                "derivatives trigger orders",
            ]
            result = await venue.cancel_all()
            assert (len(result.cancelled), result.remaining) == (3, [])
            assert fake.book.open_orders() == []
            sold = await venue.submit_close(
                close_all_request("ETH/USDT", Side.SELL, Decimal(2), "rbspot")
            )
            assert sold.status is OrderStatus.FILLED
        finally:
            await venue.close()
        assert fake.book.wallet["ETH"] == 0
        spot = [r for r in fake.book.order_requests if r["category"] == "spot"]
        assert [(r["symbol"], r["side"], r["qty"], r["orderType"]) for r in spot] == [
            ("ETHUSDT", "Sell", "2", "Market")
        ]
        assert fake.book.unknown == []


async def test_hedge_mode_closes_each_leg_by_its_position_index() -> None:
    async with FakeExchange("bybit", positions={}) as fake:
        fake.book.set_hedge_position("BTCUSDT", 1, "0.5")  # the long leg
        fake.book.set_hedge_position("BTCUSDT", 2, "0.2")  # the short leg
        venue = fast_venue(fake, "bybit", FAST_PACING_MS)
        try:
            held = sorted(p.quantity for p in await venue.positions())
            assert held == [Decimal("-0.2"), Decimal("0.5")]
            await venue.submit_close(close_all_request(BTC, Side.SELL, Decimal("0.5"), "rbl"))
            await venue.submit_close(close_all_request(BTC, Side.BUY, Decimal("0.2"), "rbs"))
            assert await venue.positions() == []
        finally:
            await venue.close()
        sent = [(r["side"], r["positionIdx"], "reduceOnly" in r) for r in fake.book.order_requests]
        assert sent == [("Sell", 1, False), ("Buy", 2, False)]
