"""The embedded paper venue: a persistent book shared across processes, and configured faults."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from rollbot.brokers.base import (
    CloseRequest,
    OrderRejected,
    OrderStatus,
    OrderType,
    Side,
    VenueEvent,
    VenueEventKind,
    VenueUnavailable,
)
from rollbot.brokers.paper.scenario import load_scenario, parse_scenario
from rollbot.brokers.paper.venue import PaperVenue
from rollbot.errors import ConfigError

MakePaper = Callable[..., PaperVenue]
D = Decimal

BOOK = """
name = "test book"

[account]
cash = 100000
currency = "USD"

[[positions]]
symbol = "AAPL"
quantity = 400
avg_price = 189.20
mark = 187.10

[[positions]]
symbol = "BTC"
quantity = 0.7
avg_price = 60000
mark = 61000

[[positions]]
symbol = "TSLA"
quantity = -300
avg_price = 242.10
mark = 247.80

[[orders]]
symbol = "AAPL"
side = "SELL"
type = "LIMIT"
quantity = 200
limit_price = 194.58

[[orders]]
symbol = "TSLA"
side = "BUY"
type = "STOP"
quantity = 300
stop_price = 255.23

[[price_path]]
AAPL = 186.00
BTC = 60500
TSLA = 250.00
"""


@pytest.fixture
def book() -> str:
    return BOOK


def seeded(make_paper: MakePaper, **faults: object) -> PaperVenue:
    venue = make_paper(**faults)
    venue.seed(parse_scenario(BOOK, "test"))
    return venue


def close(symbol: str, side: str, qty: str, cid: str, **kw: object) -> CloseRequest:
    return CloseRequest(symbol=symbol, side=Side(side), quantity=D(qty), client_order_id=cid, **kw)


async def positions(venue: PaperVenue) -> dict[str, Decimal]:
    return {p.symbol: p.quantity for p in await venue.positions()}


async def test_the_book_persists_across_processes(
    make_paper: MakePaper,
    rollbot: Callable[..., CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    scenario = tmp_path / "book.toml"
    scenario.write_text(BOOK, "utf-8")
    seeded_elsewhere = rollbot("paper", "seed", "--scenario", str(scenario))
    assert seeded_elsewhere.returncode == 0, seeded_elsewhere.stderr
    assert "seeded 3 positions and 2 orders" in seeded_elsewhere.stdout

    here = make_paper()  # the same book file the subprocess wrote
    assert await positions(here) == {"AAPL": D(400), "BTC": D("0.7"), "TSLA": D(-300)}
    orders = await here.open_orders()
    assert [(o.symbol, o.type) for o in orders] == [
        ("AAPL", OrderType.LIMIT),
        ("TSLA", OrderType.STOP),
    ]
    nav = (await here.account()).nav
    assert nav == D(100000) + 400 * D("187.10") + D("0.7") * 61000 - 300 * D("247.80")

    await here.submit_close(close("AAPL", "SELL", "100", "c-1"))
    other = make_paper(name="paper", book_path=here.cfg.book_path)  # a second connection
    assert (await positions(other))["AAPL"] == D(300)
    assert (await other.order_by_client_id("c-1")).status is OrderStatus.FILLED  # type: ignore[union-attr]


async def test_partial_fills_leave_an_exact_remainder(make_paper: MakePaper) -> None:
    venue = seeded(make_paper, fill="partial")
    first = await venue.submit_close(close("BTC", "SELL", "0.7", "btc-1"))
    # half of 0.7 at the position's precision, rounded down; the market rest does not rest
    assert (first.filled_quantity, first.status) == (D("0.3"), OrderStatus.CANCELLED)
    assert (await positions(venue))["BTC"] == D("0.4")
    second = await venue.submit_close(close("BTC", "SELL", "0.4", "btc-2"))
    assert second.filled_quantity == D("0.2")
    assert (await positions(venue))["BTC"] == D("0.2")

    limit = await venue.submit_close(
        close("AAPL", "SELL", "400", "aapl-1", type=OrderType.LIMIT, limit_price=D("180"))
    )
    assert (limit.filled_quantity, limit.remaining) == (D(200), D(200))
    assert limit.status is OrderStatus.PARTIALLY_FILLED
    resting = [o for o in await venue.open_orders() if o.client_order_id == "aapl-1"]
    assert [o.remaining for o in resting] == [D(200)]
    assert (await positions(venue))["AAPL"] == D(200)


async def test_fill_none_leaves_orders_resting(make_paper: MakePaper) -> None:
    venue = seeded(make_paper, fill="none")
    order = await venue.submit_close(close("TSLA", "BUY", "300", "t-1"))
    assert (order.status, order.filled_quantity) == (OrderStatus.OPEN, D(0))
    assert (await positions(venue))["TSLA"] == D(-300)
    assert "t-1" in {o.client_order_id for o in await venue.open_orders()}
    assert venue.fills() == []


async def test_rejections_are_deterministic_per_client_order_id(
    make_paper: MakePaper,
) -> None:
    ids = [f"close-{i}" for i in range(30)]

    async def outcome(name: str) -> list[bool]:
        venue = seeded(make_paper, name=name, reject_rate=0.5, fill="none")
        events: list[VenueEvent] = []
        venue.subscribe(events.append)
        out = []
        for cid in ids:
            order = await venue.submit_close(close("AAPL", "SELL", "1", cid))
            out.append(order.status is OrderStatus.REJECTED)
        rejects = [e for e in events if e.kind is VenueEventKind.REJECT]
        sent = [e for e in events if e.kind is VenueEventKind.ORDER_SENT]
        assert (len(rejects), len(sent)) == (sum(out), len(ids))
        return out

    first, second = await outcome("a"), await outcome("b")
    assert first == second  # same seed and ids: the same orders are rejected
    assert 5 <= sum(first) <= 25

    everything = seeded(make_paper, name="c", reject_rate=1.0)
    rejected = await everything.submit_close(close("AAPL", "SELL", "400", "x"))
    assert (rejected.status, rejected.reason) == (OrderStatus.REJECTED, "simulated reject")
    assert (await positions(everything))["AAPL"] == D(400)


async def test_an_injected_disconnect_happens_once_and_reconnects_only_when_allowed(
    make_paper: MakePaper,
) -> None:
    venue = seeded(make_paper, disconnect_after_calls=3)
    events: list[VenueEvent] = []
    venue.subscribe(events.append)
    for _ in range(3):
        await venue.positions()
    with pytest.raises(VenueUnavailable, match="injected disconnect"):
        await venue.positions()
    assert [e.kind for e in events] == [VenueEventKind.DISCONNECT]

    venue.set_reconnect(False)  # IBKR seed step 2: prevent reconnection
    with pytest.raises(VenueUnavailable, match="reconnecting is switched off"):
        await venue.open_orders()
    await venue.connect(read_only=True)  # step 3: an explicit read-only connection still works
    assert (await positions(venue))["AAPL"] == D(400)
    with pytest.raises(OrderRejected) as read_only:
        await venue.submit_close(close("AAPL", "SELL", "1", "ro"))
    assert read_only.value.code == "READ_ONLY"
    await venue.close()

    venue.set_reconnect(True)
    await venue.positions()
    assert [(e.kind, e.message) for e in events] == [
        (VenueEventKind.DISCONNECT, "injected disconnect"),
        (VenueEventKind.RECONNECT, "connected"),  # the explicit read-only connect
        (VenueEventKind.RECONNECT, "reconnected"),
    ]
    for _ in range(10):  # once only
        await venue.positions()
    assert len(events) == 3


async def test_a_late_fill_lands_after_its_cancel(make_paper: MakePaper) -> None:
    venue = seeded(make_paper, fill="none", late_fill=True)
    events: list[VenueEvent] = []
    venue.subscribe(events.append)
    order = await venue.submit_close(close("AAPL", "SELL", "400", "late-1"))
    await venue.cancel_order(order.order_id)
    cancelled = next(e for e in events if e.order and e.order.status is OrderStatus.CANCELLED)
    assert cancelled.kind is VenueEventKind.ORDER
    assert (await positions(venue)).get("AAPL") is None  # the next call: the fill arrived
    fills = [e for e in events if e.kind is VenueEventKind.FILL]
    assert [(e.message, e.value) for e in fills] == [("late fill", 400.0)]
    assert events.index(fills[0]) > events.index(cancelled)
    after = await venue.order_by_client_id("late-1")
    assert (after.status, after.filled_quantity) == (OrderStatus.FILLED, D(400))  # type: ignore[union-attr]


async def test_a_partial_late_fill_leaves_no_ghost_open_order(make_paper: MakePaper) -> None:
    venue = seeded(make_paper, fill="none", late_fill=True)
    a = await venue.submit_close(close("AAPL", "SELL", "300", "a"))
    b = await venue.submit_close(close("AAPL", "SELL", "400", "b"))
    result = await venue.cancel_all()
    assert {a.order_id, b.order_id} <= set(result.cancelled)
    assert await positions(venue) == {"BTC": D("0.7"), "TSLA": D(-300)}  # flat, never short
    late_b = await venue.order_by_client_id("b")
    assert (late_b.filled_quantity, late_b.status) == (D(100), OrderStatus.CANCELLED)  # type: ignore[union-attr]
    assert await venue.open_orders() == []


async def test_pacing_bounds_the_message_rate(make_paper: MakePaper) -> None:
    venue = seeded(make_paper, max_msgs_per_sec=40)
    await venue.positions()  # reads are not order messages
    started = time.perf_counter()
    for i in range(60):
        await venue.cancel_order(f"P{i:06d}")
    elapsed = time.perf_counter() - started
    assert venue.messages_sent == 60
    assert elapsed >= (60 - 40) / 40 * 0.95  # a burst of 40, then 40 a second


async def test_a_reduce_only_close_never_flips_a_position(make_paper: MakePaper) -> None:
    venue = seeded(make_paper)
    too_big = await venue.submit_close(close("AAPL", "SELL", "500", "big"))
    assert (too_big.quantity, too_big.filled_quantity) == (D(400), D(400))
    assert too_big.reduce_only
    short = await venue.submit_close(close("TSLA", "BUY", "1000", "short"))
    assert short.filled_quantity == D(300)
    assert await positions(venue) == {"BTC": D("0.7")}

    for request, code in (
        (close("BTC", "BUY", "1", "wrong-side"), "WOULD_NOT_REDUCE"),
        (close("AAPL", "SELL", "1", "flat"), "WOULD_NOT_REDUCE"),
        (close("NOPE", "SELL", "1", "unknown"), "UNKNOWN_SYMBOL"),
        (close("BTC", "SELL", "0.1", "stop", type=OrderType.STOP), "BAD_TYPE"),
    ):
        with pytest.raises(OrderRejected) as caught:
            await venue.submit_close(request)
        assert caught.value.code == code
    assert await positions(venue) == {"BTC": D("0.7")}


async def test_the_same_client_order_id_never_makes_a_second_order(
    make_paper: MakePaper,
) -> None:
    venue = seeded(make_paper)
    first = await venue.submit_close(close("AAPL", "SELL", "100", "once"))
    again = await venue.submit_close(close("AAPL", "SELL", "100", "once"))
    other_process = make_paper(book_path=venue.cfg.book_path)
    third = await other_process.submit_close(close("AAPL", "SELL", "100", "once"))
    assert first.order_id == again.order_id == third.order_id
    assert len(venue.fills()) == 1
    assert (await positions(venue))["AAPL"] == D(300)


async def test_cancel_all_cancels_limits_and_stops_and_reads_back(make_paper: MakePaper) -> None:
    venue = seeded(make_paper)
    result = await venue.cancel_all()
    assert (result.requested, len(result.cancelled), result.remaining) == (2, 2, [])
    assert await venue.open_orders() == []


async def test_the_price_path_moves_the_marks(make_paper: MakePaper) -> None:
    venue = seeded(make_paper)
    assert venue.advance_prices() == {"AAPL": D("186.00"), "BTC": D(60500), "TSLA": D("250.00")}
    assert venue.advance_prices() is None  # the end of the path
    aapl = next(p for p in await venue.positions() if p.symbol == "AAPL")
    assert aapl.unrealized_pnl == 400 * (D("186.00") - D("189.20"))


def test_the_default_scenario_has_longs_shorts_limits_and_stops() -> None:
    book = load_scenario(None)
    quantities = [p.quantity for p in book.positions]
    assert any(q > 0 for q in quantities) and any(q < 0 for q in quantities)
    assert {o.type for o in book.orders} == {OrderType.LIMIT, OrderType.STOP}
    assert len(book.price_path) > 1


def test_a_bad_scenario_names_the_line_and_the_field(tmp_path: Path) -> None:
    text = BOOK.replace("avg_price = 60000", "avg_price = -60000").replace(
        "limit_price = 194.58", "limt_price = 194.58"
    )
    path = tmp_path / "bad.toml"
    path.write_text(text, "utf-8")
    lines = text.splitlines()
    price_line = lines.index("avg_price = -60000") + 1
    typo_line = lines.index("limt_price = 194.58") + 1
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert str(path) in message
    # the 2nd [[positions]] and the 1st [[orders]], written positions[1] or positions.1
    assert re.search(
        rf"line {price_line}, positions(\[1\]|\.1)\.avg_price.*greater than 0", message
    )
    assert re.search(rf"line {typo_line}, orders(\[0\]|\.0)\.limt_price", message)

    broken = tmp_path / "broken.toml"
    broken.write_text(BOOK.replace("quantity = 400", "quantity = 4OO"), "utf-8")
    with pytest.raises(ConfigError, match=rf"scenario {broken} does not parse: .*line \d+"):
        load_scenario(broken)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_scenario(tmp_path / "missing.toml")
