"""IBKR contract types against the loopback fake TWS: STK, FUT, OPT, CASH (FX) and CFD positions
read with their multiplier, listed and cancelled orders, and closes TWS accepts (routing, tick,
units). The README's "Venue support matrix" rows for IBKR cite these tests.

The fake answers as TWS does (tests/fakes/tws.py): a position's contract names the listing
exchange, a direct-routed stock order is refused with 10311 while the order precautions are on,
a limit price off the contract's market rule is refused with 110.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from rollbot.brokers.base import (
    CloseRequest,
    OrderRejected,
    OrderStatus,
    OrderType,
    Position,
    RejectedForGood,
)
from rollbot.brokers.ibkr.venue import IbkrVenue
from rollbot.commands.rollback.flatten import choose_strategy
from rollbot.config import FlattenConfig, IbkrVenueConfig

try:
    from fakes.tws import REQ_POSITIONS, FakeTws
except ModuleNotFoundError:  # tests/ made a package
    from tests.fakes.tws import REQ_POSITIONS, FakeTws

D = Decimal


@dataclass(frozen=True)
class Held:
    """One holding of a contract type as a desk holds it, and what TWS must be sent to close it."""

    sec_type: str
    symbol: str
    quantity: Decimal
    avg: Decimal  # per unit
    mark: Decimal
    contract: dict[str, Any]
    exchange: str  # where its close must go
    multiplier: Decimal
    off_tick: Decimal  # a limit price TWS refuses for this contract (error 110)
    on_tick_sell: Decimal  # ...which a SELL close sends instead (rounded down to the tick)


BOOK = [
    Held("STK", "AAPL", D(100), D("190.5"), D("200.25"), {}, "SMART", D(1),
         D("200.123"), D("200.12")),
    Held("FUT", "ES", D(2), D("5000.25"), D("5012.5"),
         {"local_symbol": "ESZ6", "last_trade": "20261218"}, "CME", D(50),
         D("5002.23"), D("5002")),
    Held("OPT", "AAPL  261218C00200000", D(10), D("3.2"), D("4.15"),
         {"last_trade": "20261218", "strike": D(200), "right": "C"}, "SMART", D(100),
         D("4.12"), D("4.1")),
    Held("CASH", "EUR", D(25000), D("1.08"), D("1.0845"),
         {"local_symbol": "EUR.USD", "primary_exchange": ""}, "IDEALPRO", D(1),
         D("1.084237"), D("1.0842")),
    Held("CFD", "IBUS500", D(-20), D("5010"), D("5000.5"), {}, "SMART", D(1),
         D("5000.503"), D("5000.5")),
]  # fmt: skip
IDS = [h.sec_type for h in BOOK]


def hold(tws: FakeTws, h: Held) -> None:
    contract = dict(h.contract)
    if h.sec_type == "OPT":
        contract.setdefault("local_symbol", h.symbol)
        symbol = "AAPL"
    else:
        symbol = h.symbol
    tws.add_position(symbol, h.quantity, h.avg, h.mark, sec_type=h.sec_type, **contract)


def shown_as(h: Held) -> str:
    return h.contract.get("local_symbol") or h.symbol


@pytest.fixture
async def tws() -> AsyncIterator[FakeTws]:
    fake = FakeTws()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def venue(tws: FakeTws) -> AsyncIterator[IbkrVenue]:
    v = IbkrVenue(IbkrVenueConfig(port=tws.port, timeout_s=2, reconnect_backoff_s=[0.05]))
    yield v
    await v.close()


async def held(venue: IbkrVenue, symbol: str) -> Position:
    return next(p for p in await venue.positions() if p.symbol == symbol)


def close_of(p: Position, ref: str, limit: Decimal | None = None) -> CloseRequest:
    return CloseRequest(
        symbol=p.symbol,
        side=p.closing_side,
        quantity=abs(p.quantity),
        type=OrderType.MARKET if limit is None else OrderType.LIMIT,
        limit_price=limit,
        client_order_id=ref,
        instrument=p.instrument,
    )


# ---------------------------------------------------------------- positions: exposure and PnL


@pytest.mark.parametrize("h", BOOK, ids=IDS)
async def test_exposure_and_pnl_count_the_contract_multiplier(
    h: Held, tws: FakeTws, venue: IbkrVenue
) -> None:
    hold(tws, h)

    p = await held(venue, shown_as(h))

    assert p.quantity == h.quantity and p.multiplier == h.multiplier
    assert p.avg_price == h.avg and p.market_price == h.mark  # per unit, as quoted
    assert p.exposure == abs(h.quantity) * h.mark * h.multiplier
    assert p.unrealized_pnl == h.quantity * (h.mark - h.avg) * h.multiplier
    assert p.instrument["secType"] == h.sec_type


async def test_an_es_future_of_two_counts_about_half_a_million_and_is_closed_with_limits(
    tws: FakeTws, venue: IbkrVenue
) -> None:
    """The issue's case: 2 ES at 5012.5 is 501,250 of exposure, not 10,025; and one contract
    (250,625) is far above the market/limit threshold, not below it at 5,012."""
    tws.add_position("ES", 1, "5000.25", "5012.5", sec_type="FUT", local_symbol="ESZ6")

    es = await held(venue, "ESZ6")

    assert es.exposure == D("250625")
    assert choose_strategy(es.exposure, FlattenConfig()) == "LIMIT_ORDERS_WITH_TIMEOUT"


async def test_nav_is_the_accounts_net_liquidation_with_every_contract_type_held(
    tws: FakeTws, venue: IbkrVenue
) -> None:
    for h in BOOK:
        hold(tws, h)

    account = await venue.account()

    assert account.nav == tws.net_liquidation() and account.currency == "USD"


# ------------------------------------------------------------ orders: listed and cancelled


@pytest.mark.parametrize("h", BOOK, ids=IDS)
async def test_every_order_kind_on_the_contract_is_listed_and_cancelled(
    h: Held, tws: FakeTws, venue: IbkrVenue
) -> None:
    hold(tws, h)
    name = "AAPL" if h.sec_type == "OPT" else h.symbol
    action = "SELL" if h.quantity > 0 else "BUY"
    tws.add_order(name, action, 1, "LMT", lmt_price=h.on_tick_sell)
    tws.add_order(name, action, 1, "STP", aux_price=h.on_tick_sell)
    tws.add_order(name, action, 1, "STP LMT", lmt_price=h.on_tick_sell, aux_price=h.on_tick_sell)
    tws.add_order(name, action, 1, "TRAIL", aux_price=h.on_tick_sell)

    listed = await venue.open_orders()
    result = await venue.cancel_all()

    assert sorted(o.type for o in listed) == sorted(
        [OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT, OrderType.STOP]
    )
    assert {o.symbol for o in listed} == {shown_as(h)}
    assert result.requested == 4 and len(result.cancelled) == 4 and result.complete
    assert tws.working_orders() == [] and await venue.open_orders() == []


# -------------------------------------------------------------------------------- closes


@pytest.mark.parametrize("h", BOOK, ids=IDS)
async def test_a_market_close_goes_where_tws_accepts_it_in_the_contracts_units(
    h: Held, tws: FakeTws, venue: IbkrVenue
) -> None:
    """SMART with the primary exchange for a stock (TWS refuses a direct-routed one with 10311
    while its order precautions are on), the future's own exchange, IDEALPRO for FX; the
    quantity as IB counts the position (contracts, shares, units of the base currency)."""
    hold(tws, h)
    p = await held(venue, shown_as(h))

    order = await venue.submit_close(close_of(p, f"close-{h.sec_type}"))

    assert order.status is OrderStatus.FILLED and order.filled_quantity == abs(h.quantity)
    (sent,) = tws.received
    assert (sent.exchange, sent.quantity) == (h.exchange, abs(h.quantity))
    if h.sec_type == "STK":
        assert sent.primary_exchange == "NASDAQ"
    assert await venue.positions() == []


@pytest.mark.parametrize("h", BOOK, ids=IDS)
async def test_a_limit_close_is_priced_on_the_contracts_tick(
    h: Held, tws: FakeTws, venue: IbkrVenue
) -> None:
    """5002.23 for a 0.25-tick future is refused by TWS (110): the close goes at 5002 (a sell
    rounds down, a buy up: never less aggressive than asked)."""
    hold(tws, h)
    tws.fill_orders = False  # let it rest, to read the price TWS accepted
    p = await held(venue, shown_as(h))

    order = await venue.submit_close(close_of(p, f"limit-{h.sec_type}", h.off_tick))

    (sent,) = tws.received
    expected = h.on_tick_sell
    if p.closing_side.value == "BUY":
        tick = tws.instruments[sent.con_id].tick_at(h.off_tick)
        expected = h.on_tick_sell + tick if h.on_tick_sell < h.off_tick else h.on_tick_sell
    assert sent.lmt_price == expected
    assert order.status is OrderStatus.OPEN and order.limit_price == expected


async def test_a_limit_close_from_the_mark_with_slippage_lands_on_the_tick(
    tws: FakeTws, venue: IbkrVenue
) -> None:
    tws.add_position("ES", 2, "5000.25", "5012.5", sec_type="FUT", local_symbol="ESZ6")
    es = await held(venue, "ESZ6")
    request = close_of(es, "slipped").model_copy(update={"type": OrderType.LIMIT})

    order = await venue.submit_close(request)

    (sent,) = tws.received
    assert sent.lmt_price is not None and sent.lmt_price % D("0.25") == 0
    assert sent.lmt_price < D("5012.5") and order.status is OrderStatus.FILLED


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (110, "The price does not conform to the minimum price variation for this contract."),
        (200, "No security definition has been found for the request"),
        (201, "Order rejected - reason:The account is restricted"),
        (10311, "This order will be directly routed to NYSE."),
    ],
)
async def test_a_close_refused_for_good_says_so_with_the_venues_words(
    code: int, text: str, tws: FakeTws, venue: IbkrVenue
) -> None:
    tws.add_position("AAPL", 100, "190.5")
    tws.reject_next, tws.reject_code = 1, code
    tws.reject_reason = text.removeprefix("Order rejected - reason:")
    p = await held(venue, "AAPL")

    with pytest.raises(RejectedForGood) as refused:
        await venue.submit_close(close_of(p, "refused"))

    assert refused.value.code == str(code) and text in refused.value.detail
    assert tws.position("AAPL") == 100 and len(tws.received) == 1


async def test_a_contract_ib_no_longer_knows_is_refused_for_good_and_nothing_is_sent(
    tws: FakeTws, venue: IbkrVenue
) -> None:
    inst = tws.add_position("AAPL", 100, "190.5")
    p = await held(venue, "AAPL")
    inst.delisted = True  # the contract lookup answers 200: no security definition

    with pytest.raises(RejectedForGood) as refused:
        await venue.submit_close(close_of(p, "gone"))

    assert refused.value.code == "200" and tws.received == []


async def test_a_contract_type_rollbot_does_not_close_is_refused_for_good_before_sending(
    tws: FakeTws, venue: IbkrVenue
) -> None:
    tws.add_position(
        "ES", 3, "42.5", "40.1", sec_type="FOP", local_symbol="ESZ6 C5000", last_trade="20261218"
    )
    fop = await held(venue, "ESZ6 C5000")
    assert fop.exposure == D("6015")  # read and counted with its multiplier all the same

    with pytest.raises(RejectedForGood, match="is a FOP contract: rollbot closes only STK, FUT"):
        await venue.submit_close(close_of(fop, "fop"))

    assert tws.received == []


async def test_a_pacing_refusal_is_not_final(tws: FakeTws, venue: IbkrVenue) -> None:
    tws.add_position("AAPL", 100, "190.5")
    tws.pacing_errors = 1
    p = await held(venue, "AAPL")

    with pytest.raises(Exception) as raised:
        await venue.submit_close(close_of(p, "paced"))

    assert not isinstance(raised.value, OrderRejected)  # RateLimited: retried, not escalated


# ------------------------------------------------------------------------- reads per close


async def test_closing_many_positions_reads_positions_once_per_pass_not_once_per_close(
    tws: FakeTws, venue: IbkrVenue
) -> None:
    for i in range(40):
        tws.add_position(f"S{i:02d}", 10 + i, "50")
    book = await venue.positions()  # the flatten pass's read
    reads_before = tws.messages[REQ_POSITIONS]

    for p in book:
        await venue.submit_close(close_of(p, f"pass1-{p.symbol}"))

    assert tws.messages[REQ_POSITIONS] == reads_before  # the pass's read served every close
    assert await venue.positions() == []


async def test_a_second_close_after_a_fill_reads_again_and_never_flips(
    tws: FakeTws, venue: IbkrVenue
) -> None:
    tws.add_position("AAPL", 100, "190.5")
    p = await held(venue, "AAPL")
    await venue.submit_close(close_of(p, "first"))  # fills: the read before it is out of date

    with pytest.raises(OrderRejected, match="no open position"):
        await venue.submit_close(close_of(p, "second"))

    assert tws.position("AAPL") == 0 and len(tws.received) == 1


# ------------------------------------------------------------------------------------ kill


async def test_the_global_cancel_goes_out_behind_the_read_and_still_counts_what_was_working(
    tws: FakeTws, venue: IbkrVenue
) -> None:
    """The kill's cancel is not held back while hundreds of orders are decoded: it leaves right
    behind the read, and the read (answered first, as TWS answers in order) still counts every
    order that was working, ours included (whose cancel confirmations arrive meanwhile)."""
    tws.add_position("AAPL", 100, "190.5")
    for n in range(60):
        tws.add_order("AAPL", "SELL", 1, "LMT", lmt_price="250", client_id=1 + n % 2)
    await venue.connect()
    ours = await venue.submit_close(
        close_of(await held(venue, "AAPL"), "resting", D(250)).model_copy(update={"quantity": D(1)})
    )

    result = await venue.cancel_all()

    assert result.requested == 61 and len(result.cancelled) == 61 and result.complete
    assert ours.order_id in result.cancelled
    assert tws.global_cancels == 1 and tws.working_orders() == []
