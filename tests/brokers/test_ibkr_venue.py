"""IbkrVenue against the loopback fake TWS: real TCP, the real TWS wire protocol, ib_async as is."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from rollbot.brokers.base import (
    CloseRequest,
    Order,
    OrderRejected,
    OrderStatus,
    OrderType,
    Position,
    RateLimited,
    Side,
    UnsupportedOperation,
    Venue,
    VenueEvent,
    VenueEventKind,
    VenueUnavailable,
)
from rollbot.brokers.ibkr.venue import IbkrVenue
from rollbot.config import IbkrVenueConfig

try:
    from fakes.tws import FakeTws, start_fake_tws
except ModuleNotFoundError:  # tests/ made a package: pytest imports us as tests.brokers...
    from tests.fakes.tws import FakeTws, start_fake_tws

D = Decimal
Connect = Callable[..., Awaitable[IbkrVenue]]


@pytest.fixture
async def tws() -> AsyncIterator[FakeTws]:
    fake = FakeTws()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def connect(tws: FakeTws) -> AsyncIterator[Connect]:
    """Connect a venue to the fake; its events are collected in venue.seen (a test attribute)."""
    venues: list[IbkrVenue] = []

    async def make(**overrides: Any) -> IbkrVenue:
        settings: dict[str, Any] = {
            "port": tws.port,
            "timeout_s": 2,
            "reconnect_backoff_s": [0.05, 0.1],
            **overrides,
        }
        venue = IbkrVenue(IbkrVenueConfig(**settings))
        seen: list[VenueEvent] = []
        venue.subscribe(seen.append)
        venue.seen = seen  # type: ignore[attr-defined]
        venues.append(venue)
        await venue.connect()
        return venue

    yield make
    for venue in venues:
        await venue.close()


def seen(venue: IbkrVenue, kind: VenueEventKind) -> list[VenueEvent]:
    return [e for e in venue.seen if e.kind == kind]  # type: ignore[attr-defined]


async def eventually(check: Callable[[], bool], within_s: float = 2) -> None:
    """Poll instead of sleeping a fixed time: other test runs share these two cores."""
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def close_of(p: Position, client_order_id: str, quantity: Decimal | None = None) -> CloseRequest:
    return CloseRequest(
        symbol=p.symbol,
        side=p.closing_side,
        quantity=abs(p.quantity) if quantity is None else quantity,
        client_order_id=client_order_id,
        instrument=p.instrument,
    )


def resting_close(p: Position, client_order_id: str) -> CloseRequest:
    """A close of 40 of a long held at 190.5, limited at 250: it rests, working, until cancelled."""
    return close_of(p, client_order_id, D(40)).model_copy(
        update={"type": OrderType.LIMIT, "limit_price": D(250)}
    )


async def held(venue: IbkrVenue, symbol: str) -> Position:
    return next(p for p in await venue.positions() if p.symbol == symbol)


async def flatten(venue: IbkrVenue, patience_s: float = 3) -> list[Order]:
    """The rollback's flatten step in miniature: close what is held until nothing is."""
    sent: list[Order] = []
    deadline = time.monotonic() + patience_s
    for attempt in range(100):
        try:
            positions = await venue.positions()
            if not positions:
                return sent
            for p in positions:
                sent.append(await venue.submit_close(close_of(p, f"flat-{p.symbol}-{attempt}")))
        except VenueUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
    raise AssertionError("never flat")


def book_of_three(tws: FakeTws) -> None:
    tws.add_position("AAPL", 100, "190.5")
    tws.add_position("MSFT", -50, "410.25")
    tws.add_position("TSLA", 30, "250")


# ------------------------------------------------------------------------------ 1. flatten


async def test_flattening_long_and_short_positions_sends_closing_orders_and_ends_flat(
    tws: FakeTws, connect: Connect
) -> None:
    book_of_three(tws)
    venue = await connect()
    assert isinstance(venue, Venue)
    before = {p.symbol: p.quantity for p in await venue.positions()}
    assert before == {"AAPL": 100, "MSFT": -50, "TSLA": 30}

    orders = await flatten(venue)

    sent = {(r.action, r.quantity, tws.instruments[r.con_id].symbol, r.order_type, r.exchange)
            for r in tws.received}  # fmt: skip
    assert sent == {
        ("SELL", 100, "AAPL", "MKT", "SMART"),
        ("BUY", 50, "MSFT", "MKT", "SMART"),
        ("SELL", 30, "TSLA", "MKT", "SMART"),
    }
    assert [(o.symbol, o.status, o.filled_quantity, o.reduce_only) for o in orders] == [
        ("AAPL", OrderStatus.FILLED, 100, True),
        ("MSFT", OrderStatus.FILLED, 50, True),
        ("TSLA", OrderStatus.FILLED, 30, True),
    ]
    assert await venue.positions() == []
    assert all(tws.position(s) == 0 for s in before)
    assert len(seen(venue, VenueEventKind.ORDER_SENT)) == 3
    assert [e.value for e in seen(venue, VenueEventKind.FILL)] == [100, 50, 30]


async def test_positions_carry_the_contract_prices_and_pnl_ib_reports(
    tws: FakeTws, connect: Connect
) -> None:
    inst = tws.add_position("AAPL", 100, "190.5", mark="200.25")
    venue = await connect()

    (aapl,) = await venue.positions()

    assert aapl.quantity == 100 and aapl.avg_price == D("190.5")
    assert aapl.market_price == D("200.25") and aapl.unrealized_pnl == D("975")
    assert aapl.instrument == {
        "conId": str(inst.con_id),
        "secType": "STK",
        "exchange": "NASDAQ",  # TWS names a stock's listing exchange; orders go SMART
        "currency": "USD",
        "account": "DU1234567",
    }
    assert seen(venue, VenueEventKind.LATENCY)[-1].message == "positions"


async def test_account_reports_net_liquidation_in_its_currency(
    tws: FakeTws, connect: Connect
) -> None:
    tws.add_position("AAPL", 100, "190.5")
    venue = await connect()

    snapshot = await venue.account()
    assert (snapshot.nav, snapshot.currency) == (tws.net_liquidation(), "USD")

    await flatten(venue)  # pays two commissions: the NAV read back follows the book
    assert (await venue.account()).nav == tws.net_liquidation() == snapshot.nav - 1


# ---------------------------------------------------------------------------- 2. cancel all


async def test_global_cancel_leaves_nothing_open_including_stops(
    tws: FakeTws, connect: Connect
) -> None:
    tws.add_position("AAPL", 100, "190.5")
    stop = tws.add_order("AAPL", "SELL", 100, "STP", aux_price="180", order_ref="strategy-stop")
    tws.add_order("MSFT", "BUY", 10, "LMT", lmt_price="300", client_id=3)
    venue = await connect()
    aapl = await held(venue, "AAPL")
    resting = resting_close(aapl, "rest-1")
    ours = await venue.submit_close(resting)  # a limit above the mark: it rests

    working = {o.order_id: o for o in await venue.open_orders()}
    assert working[str(stop.perm_id)].type == OrderType.STOP
    assert working[str(stop.perm_id)].stop_price == 180
    assert working[str(stop.perm_id)].client_order_id == "strategy-stop"
    assert working[ours.order_id].limit_price == 250
    assert len(working) == 3

    result = await venue.cancel_all()

    assert result.complete and result.remaining == []
    assert result.requested == 3 and set(result.cancelled) == set(working)
    assert await venue.open_orders() == []
    assert tws.working_orders() == [] and tws.global_cancels == 1
    assert tws.position("AAPL") == 100  # cancelling never trades


async def test_global_cancel_names_the_order_the_gateway_refused_to_cancel(
    tws: FakeTws, connect: Connect
) -> None:
    tws.add_position("AAPL", 100, "190.5")
    tws.add_order("AAPL", "SELL", 100, "STP", aux_price="180")
    venue = await connect(timeout_s=5)
    resting = resting_close(await held(venue, "AAPL"), "rest-1")
    ours = await venue.submit_close(resting)
    tws.refuse_cancel.add(int(ours.order_id))

    started = time.monotonic()
    result = await venue.cancel_all()

    assert not result.complete
    assert [o.order_id for o in result.remaining] == [ours.order_id]
    assert result.remaining[0].status == OrderStatus.OPEN
    assert "161" in (result.remaining[0].reason or "")
    assert len(result.cancelled) == 1  # the stop went
    assert time.monotonic() - started < 2.5  # IB said no: no point waiting out the 5 s
    assert [e.code for e in seen(venue, VenueEventKind.ERROR)] == ["161"]


async def test_a_refused_cancel_of_another_clients_order_is_reported_after_the_timeout(
    tws: FakeTws, connect: Connect
) -> None:
    stop = tws.add_order("AAPL", "SELL", 100, "STP", aux_price="180", client_id=1)
    tws.refuse_cancel.add(stop.perm_id)
    venue = await connect(timeout_s=0.3)

    result = await venue.cancel_all()

    assert [(o.order_id, o.type) for o in result.remaining] == [(str(stop.perm_id), "STOP")]
    assert result.cancelled == []


async def test_cancel_order_cancels_our_own_order_and_refuses_other_clients(
    tws: FakeTws, connect: Connect
) -> None:
    tws.add_position("AAPL", 100, "190.5")
    foreign = tws.add_order("AAPL", "SELL", 100, "STP", aux_price="180", client_id=1)
    venue = await connect()
    resting = resting_close(await held(venue, "AAPL"), "rest-1")
    ours = await venue.submit_close(resting)

    await venue.cancel_order(ours.order_id)
    assert (await venue.order_by_client_id("rest-1")).status == OrderStatus.CANCELLED  # type: ignore[union-attr]
    with pytest.raises(UnsupportedOperation, match="API client 1"):
        await venue.cancel_order(str(foreign.perm_id))
    assert foreign.working


# -------------------------------------------------------------------------------- 3. pacing


async def test_pacing_error_reaches_subscribers_as_pacing(tws: FakeTws, connect: Connect) -> None:
    venue = await connect()

    tws.inject_error(100, "Max rate of messages per second has been exceeded:max=50 rec=51")
    await eventually(lambda: bool(seen(venue, VenueEventKind.PACING)))

    (pacing,) = seen(venue, VenueEventKind.PACING)
    assert pacing.code == "100" and "Max rate" in pacing.message


async def test_an_order_refused_for_pacing_raises_rate_limited_and_can_be_sent_again(
    tws: FakeTws, connect: Connect
) -> None:
    tws.add_position("AAPL", 100, "190.5")
    venue = await connect()
    aapl = await held(venue, "AAPL")
    tws.pacing_errors = 1

    with pytest.raises(RateLimited) as refused:
        await venue.submit_close(close_of(aapl, "close-1"))
    assert refused.value.code == "100"
    assert [e.code for e in seen(venue, VenueEventKind.PACING)] == ["100"]
    assert await venue.order_by_client_id("close-1") is None  # IB never took it

    order = await venue.submit_close(close_of(aapl, "close-1"))  # same id: not a duplicate

    assert order.status == OrderStatus.FILLED
    assert len(tws.received) == 2 and tws.position("AAPL") == 0


async def test_orders_leave_no_faster_than_the_configured_rate(
    tws: FakeTws, connect: Connect
) -> None:
    tws.add_position("AAPL", 100, "190.5")
    venue = await connect(max_msgs_per_sec=20)
    aapl = await held(venue, "AAPL")

    for n in range(5):
        await venue.submit_close(close_of(aapl, f"slice-{n}", D(10)))

    # what TWS counts is what reaches it, as a rate: measured on arrival over the five. One gap
    # alone is not the rate: a fake gateway whose reader was held up by a loaded machine reads
    # two paced messages back to back, and a per-gap check failed the pacer for it
    arrived = [r.at for r in tws.received]
    assert len(seen(venue, VenueEventKind.ORDER_SENT)) == 5
    assert arrived[-1] - arrived[0] >= 0.9 * (len(arrived) - 1) / 20
    assert len(tws.received) == 5 and tws.position("AAPL") == 50


# -------------------------------------------------------------------- 4. disconnect mid-flatten


async def test_a_disconnect_mid_flatten_reconnects_and_finishes(
    tws: FakeTws, connect: Connect
) -> None:
    book_of_three(tws)
    venue = await connect()
    tws.disconnect_after_orders = 2

    await flatten(venue)

    assert await venue.positions() == []
    assert all(tws.position(s) == 0 for s in ("AAPL", "MSFT", "TSLA"))
    assert len(tws.received) == 3  # nothing sent twice
    assert tws.connections == 2
    kinds = [e.kind for e in venue.seen]  # type: ignore[attr-defined]
    assert kinds.index(VenueEventKind.DISCONNECT) < kinds.index(VenueEventKind.RECONNECT)


async def test_with_reconnect_off_a_disconnect_leaves_an_exact_residual(
    tws: FakeTws, connect: Connect
) -> None:
    book_of_three(tws)
    venue = await connect()
    venue.set_reconnect(False)  # IBKR seed step 2
    tws.disconnect_after_orders = 2
    start = {p.symbol: p.quantity for p in await venue.positions()}

    closed: list[Order] = []
    with pytest.raises(VenueUnavailable):
        for p in await venue.positions():
            closed.append(await venue.submit_close(close_of(p, f"flat-{p.symbol}")))

    residual = dict(start)
    for order in closed:
        residual[order.symbol] += order.filled_quantity * (1 if order.side == Side.BUY else -1)
    residual = {s: q for s, q in residual.items() if q}
    assert residual == {s: tws.position(s) for s in start if tws.position(s)} == {"TSLA": 30}

    await asyncio.sleep(0.3)  # well past the backoff: it stayed down
    assert tws.connections == 1
    with pytest.raises(VenueUnavailable, match="not connected"):
        await venue.positions()

    await venue.connect(read_only=True)  # seed step 3: look, but do not touch
    assert {p.symbol: p.quantity for p in await venue.positions()} == residual
    with pytest.raises(UnsupportedOperation, match="read-only"):
        await venue.submit_close(close_of(await held(venue, "TSLA"), "flat-TSLA-2"))


async def test_reconnect_keeps_trying_with_backoff_until_the_gateway_is_back(
    tws: FakeTws, connect: Connect
) -> None:
    tws.add_position("AAPL", 100, "190.5")
    venue = await connect(reconnect_backoff_s=[0.02, 0.05])
    port = tws.port

    await tws.stop()  # the gateway goes away for a while
    await eventually(lambda: len(seen(venue, VenueEventKind.ERROR)) >= 2)
    with pytest.raises(VenueUnavailable, match="reconnecting"):
        await venue.positions()
    await tws.start(port=port)
    await eventually(lambda: venue.connected)

    assert [p.symbol for p in await venue.positions()] == ["AAPL"]
    failures = seen(venue, VenueEventKind.ERROR)
    assert all("reconnect attempt" in e.message for e in failures)
    (back,) = seen(venue, VenueEventKind.RECONNECT)
    assert f"after {len(failures) + 1} attempt" in back.message


# ------------------------------------------------------------------------------ 5. never flip


async def test_a_close_larger_than_the_position_is_capped_at_the_position(
    tws: FakeTws, connect: Connect
) -> None:
    tws.add_position("MSFT", -50, "410")
    venue = await connect()

    order = await venue.submit_close(close_of(await held(venue, "MSFT"), "c-1", D(80)))

    assert (order.side, order.quantity, order.status) == (Side.BUY, 50, OrderStatus.FILLED)
    assert tws.received[0].quantity == 50 and tws.position("MSFT") == 0


async def test_a_close_on_the_same_side_or_without_a_position_is_refused(
    tws: FakeTws, connect: Connect
) -> None:
    tws.add_position("AAPL", 100, "190.5")
    venue = await connect()
    aapl = await held(venue, "AAPL")

    with pytest.raises(OrderRejected, match="would add to a long position"):
        await venue.submit_close(close_of(aapl, "c-1").model_copy(update={"side": Side.BUY}))
    with pytest.raises(OrderRejected, match="no open position in NVDA"):
        await venue.submit_close(
            CloseRequest(symbol="NVDA", side=Side.SELL, quantity=D(1), client_order_id="c-2")
        )
    assert tws.received == [] and tws.position("AAPL") == 100


async def test_concurrent_closes_of_one_position_never_flip_it(
    tws: FakeTws, connect: Connect
) -> None:
    tws.add_position("AAPL", 100, "190.5")
    tws.fill_orders = False  # both would be working at once
    venue = await connect()
    aapl = await held(venue, "AAPL")

    results = await asyncio.gather(
        venue.submit_close(close_of(aapl, "a")),
        venue.submit_close(close_of(aapl, "b")),
        return_exceptions=True,
    )

    assert sum(r.quantity for r in tws.received) == 100
    assert [type(r) for r in results].count(OrderRejected) == 1
    assert "already working" in str(next(r for r in results if isinstance(r, OrderRejected)))


# ----------------------------------------------------------------------------- 6. idempotency


async def test_submitting_the_same_client_order_id_twice_sends_one_order(
    tws: FakeTws, connect: Connect
) -> None:
    tws.add_position("AAPL", 100, "190.5")
    tws.fill_orders = False
    venue = await connect()
    aapl = await held(venue, "AAPL")

    first, again, concurrent = await asyncio.gather(
        venue.submit_close(close_of(aapl, "rb-1-AAPL")),
        venue.submit_close(close_of(aapl, "rb-1-AAPL")),
        venue.submit_close(close_of(aapl, "rb-1-AAPL")),
    )
    later = await venue.submit_close(close_of(aapl, "rb-1-AAPL"))

    assert len(tws.received) == 1
    assert first.order_id == again.order_id == concurrent.order_id == later.order_id
    assert (await venue.order_by_client_id("rb-1-AAPL")).order_id == first.order_id  # type: ignore[union-attr]
    assert await venue.order_by_client_id("never-sent") is None


async def test_an_order_whose_answer_was_lost_is_found_again_after_reconnecting(
    tws: FakeTws, connect: Connect
) -> None:
    tws.add_position("AAPL", 100, "190.5")
    venue = await connect()
    aapl = await held(venue, "AAPL")
    tws.disconnect_after_orders, tws.drop_before_reply = 1, True  # it fills; we hear nothing

    with pytest.raises(VenueUnavailable, match="connection lost"):
        await venue.submit_close(close_of(aapl, "rb-1-AAPL"))
    await eventually(lambda: tws.connections == 2 and venue.connected)  # on its own

    order = await venue.submit_close(close_of(aapl, "rb-1-AAPL"))

    assert (order.status, order.filled_quantity) == (OrderStatus.FILLED, 100)
    assert len(tws.received) == 1 and tws.position("AAPL") == 0


# -------------------------------------------------------------------------- rejects, limits


async def test_a_rejected_close_raises_and_is_reported_rejected(
    tws: FakeTws, connect: Connect
) -> None:
    tws.add_position("AAPL", 100, "190.5")
    venue = await connect()
    aapl = await held(venue, "AAPL")
    tws.reject_next = 1

    with pytest.raises(OrderRejected, match="max order size") as rejected:
        await venue.submit_close(close_of(aapl, "c-1"))
    assert rejected.value.code == "201"
    (event,) = seen(venue, VenueEventKind.REJECT)
    assert event.code == "201" and event.order is not None
    assert event.order.status == OrderStatus.REJECTED
    read_back = await venue.order_by_client_id("c-1")
    assert read_back is not None and read_back.status == OrderStatus.REJECTED

    with pytest.raises(OrderRejected):  # the same id again: the same answer, nothing sent
        await venue.submit_close(close_of(aapl, "c-1"))
    assert len(tws.received) == 1 and tws.position("AAPL") == 100


async def test_a_limit_close_without_a_price_crosses_the_mark_by_the_configured_slippage(
    tws: FakeTws, connect: Connect
) -> None:
    tws.add_position("AAPL", 100, "190.5")
    venue = await connect(limit_slippage_bps=50)
    aapl = await held(venue, "AAPL")

    order = await venue.submit_close(
        close_of(aapl, "c-1").model_copy(update={"type": OrderType.LIMIT})
    )

    assert tws.received[0].order_type == "LMT"
    assert tws.received[0].lmt_price == D("189.54")  # 190.5 less 50 bp, rounded to cross
    assert order.status == OrderStatus.FILLED and order.limit_price == D("189.54")


# ------------------------------------------------------------------ events and connectivity


async def test_tws_notices_map_to_event_kinds(tws: FakeTws, connect: Connect) -> None:
    venue = await connect()

    for code in (2104, 1100, 1102, 2110, 321):
        tws.inject_error(code, f"notice {code}")
    await eventually(lambda: any(e.code == "321" for e in venue.seen))  # type: ignore[attr-defined]

    kinds = [(e.kind, e.code) for e in venue.seen]  # type: ignore[attr-defined]
    assert kinds == [
        (VenueEventKind.DISCONNECT, "1100"),
        (VenueEventKind.RECONNECT, "1102"),
        (VenueEventKind.ERROR, "2110"),
        (VenueEventKind.ERROR, "321"),
    ]


async def test_orders_wait_while_tws_has_lost_ib(tws: FakeTws, connect: Connect) -> None:
    tws.add_position("AAPL", 100, "190.5")
    venue = await connect()
    aapl = await held(venue, "AAPL")

    tws.inject_error(1100, "Connectivity between IB and Trader Workstation has been lost.")
    await eventually(lambda: bool(seen(venue, VenueEventKind.DISCONNECT)))
    with pytest.raises(VenueUnavailable, match="1100"):
        await venue.submit_close(close_of(aapl, "c-1"))
    assert tws.received == []


async def test_unreachable_gateway_and_calls_before_connect_raise_venue_unavailable(
    tws: FakeTws,
) -> None:
    port = tws.port
    await tws.stop()
    venue = IbkrVenue(IbkrVenueConfig(port=port, timeout_s=1))

    with pytest.raises(VenueUnavailable, match=f"127.0.0.1:{port}"):
        await venue.connect()
    with pytest.raises(VenueUnavailable, match="not connected"):
        await venue.positions()
    with pytest.raises(VenueUnavailable):
        await venue.cancel_all()


# ------------------------------------------------------------------------ client id in use


async def test_with_its_client_id_taken_another_process_connects_as_a_spare_and_cancels_all(
    tws: FakeTws, connect: Connect
) -> None:
    """The bot holds client id 17 when the operator runs a kill from the terminal: TWS refuses
    17 (error 326). The terminal connects as 18 at once, instead of waiting out the handshake,
    and its global cancel takes out the bot's order and the strategy's stop."""
    tws.add_position("AAPL", 100, "190.5")
    bot = await connect()
    resting = resting_close(await held(bot, "AAPL"), "bot-rest")
    await bot.submit_close(resting)
    tws.add_order("AAPL", "SELL", 100, "STP", aux_price="180", client_id=1)
    assert len(tws.working_orders()) == 2

    async with asyncio.timeout(10):  # the handshake timeout is 60 s
        terminal = await connect(timeout_s=60)
    assert (bot.client_id, terminal.client_id) == (17, 18)
    assert seen(terminal, VenueEventKind.ERROR) == []  # a refused id is not a venue error

    result = await terminal.cancel_all()

    assert result.complete and result.requested == 2
    assert tws.working_orders() == []
    # two client ids would not see each other's working closes: only 17 closes
    with pytest.raises(UnsupportedOperation, match="client id 17 only"):
        await terminal.submit_close(close_of(await held(terminal, "AAPL"), "terminal-1"))
    assert not any(o.order_ref == "terminal-1" for o in tws.orders.values())
    assert (await bot.submit_close(close_of(await held(bot, "AAPL"), "bot-1"))).filled_quantity


async def test_when_every_client_id_is_taken_the_message_names_them_at_once(
    tws: FakeTws, connect: Connect
) -> None:
    for _ in range(3):
        await connect()  # 17, then the spares 18 and 19
    async with asyncio.timeout(10):
        with pytest.raises(VenueUnavailable, match=r"refused client id\(s\) 17, 18, 19: in use"):
            await connect(timeout_s=60)


async def test_a_connect_cancelled_mid_handshake_leaves_no_session_behind() -> None:
    """The kill switch stops a reconnect while TWS has not answered the handshake: the socket
    is closed then, not left to finish (or to cut the next connection) in the background."""
    accepted: list[asyncio.StreamWriter] = []
    closed = asyncio.Event()

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        while await reader.read(4096):  # never answers; reads until the client hangs up
            pass
        closed.set()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    venue = IbkrVenue(IbkrVenueConfig(port=port, timeout_s=60))
    try:
        connecting = asyncio.create_task(venue.connect())
        await eventually(lambda: bool(accepted))
        connecting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await connecting
        async with asyncio.timeout(5):  # the handshake timeout is 60 s
            await closed.wait()
        assert not venue.connected
    finally:
        server.close()
        await server.wait_closed()


# ------------------------------------------------------------------ launching for CLI tests


def test_start_fake_tws_serves_from_a_thread_for_blocking_callers() -> None:
    with start_fake_tws([("AAPL", 100, "190.5"), ("MSFT", -50, "410")]) as gateway:

        async def flatten_once() -> dict[str, Decimal]:
            venue = IbkrVenue(IbkrVenueConfig(host=gateway.host, port=gateway.port, timeout_s=2))
            await venue.connect()
            try:
                await flatten(venue)
                return {p.symbol: p.quantity for p in await venue.positions()}
            finally:
                await venue.close()

        assert asyncio.run(flatten_once()) == {}
        assert gateway.call(lambda t: (t.position("AAPL"), t.position("MSFT"))) == (0, 0)


async def test_the_fake_runs_as_a_script_for_subprocess_callers() -> None:
    script = Path(__file__).parents[1] / "fakes" / "tws.py"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), "--position", "AAPL:100:190.5", "--order",
        "AAPL:SELL:100:STP:180", stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        port = int(line.strip().removeprefix("FAKE_TWS_PORT="))
        venue = IbkrVenue(IbkrVenueConfig(port=port, timeout_s=2))
        await venue.connect()
        try:
            assert [(p.symbol, p.quantity) for p in await venue.positions()] == [("AAPL", 100)]
            assert [o.type for o in await venue.open_orders()] == [OrderType.STOP]
        finally:
            await venue.close()
    finally:
        proc.terminate()
        await proc.wait()
