"""Issue 18: the paper venue's work grows with what a call touches, not with the book. A global
cancel over thousands of resting orders lets the bot's event loop run while it cancels (a worker
thread on its own connection) and does not leave an event per order behind; a close reads its
own mark, so closing n positions is linear in n (it reloaded every mark per close: ~n^1.4)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from decimal import Decimal

from rollbot.brokers.base import CloseRequest, OrderStatus, OrderType, Side, VenueEvent
from rollbot.brokers.paper.scenario import (
    Scenario,
    ScenarioAccount,
    ScenarioOrder,
    ScenarioPosition,
)
from rollbot.brokers.paper.venue import PaperVenue

MakePaper = Callable[..., PaperVenue]


def book(positions: int, orders: int) -> Scenario:
    return Scenario(
        account=ScenarioAccount(cash=Decimal(1_000_000)),
        positions=[
            ScenarioPosition(
                symbol=f"S{i:04d}", quantity=Decimal(10), avg_price=Decimal(100), mark=Decimal(100)
            )
            for i in range(positions)
        ],
        orders=[
            ScenarioOrder(
                symbol=f"S{i % positions:04d}",
                side=Side.BUY,
                type=OrderType.LIMIT,
                quantity=Decimal(1),
                limit_price=Decimal(90),
            )
            for i in range(orders)
        ],
    )


async def test_a_global_cancel_over_many_orders_lets_the_loop_run_and_leaves_one_event(
    make_paper: MakePaper,
) -> None:
    venue = make_paper(name="big")
    n = 2500
    venue.seed(book(10, n))
    events: list[VenueEvent] = []
    venue.subscribe(events.append)
    ticks = 0
    done = asyncio.Event()

    async def other_work() -> None:  # an ack, another venue's cancel: anything on the loop
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    started_at = ticks
    result = await venue.cancel_all()
    done.set()
    await other
    assert (result.requested, len(result.cancelled), result.remaining) == (n, n, [])
    assert len(set(result.cancelled)) == n
    assert ticks - started_at >= 2  # the loop ran while the book cancelled
    assert await venue.open_orders() == []
    order_events = [e for e in events if e.order is not None or e.value == n]
    assert len(order_events) == 1 and order_events[0].value == n  # one event, not n


async def test_a_global_cancel_reads_back_orders_placed_after_it_began_as_remaining(
    make_paper: MakePaper,
) -> None:
    venue = make_paper(name="small", latency_ms=1)
    venue.seed(book(2, 3))
    result = await venue.cancel_all()
    assert len(result.cancelled) == 3 and result.complete
    again = await venue.cancel_all()
    assert (again.requested, again.cancelled, again.remaining) == (0, [], [])


def close_work(make_paper: MakePaper, positions: int) -> int:
    """SQLite virtual-machine steps one close takes on a book of `positions` positions."""
    venue = make_paper(name=f"book{positions}")
    venue.seed(book(positions, 0))
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    request = CloseRequest(
        client_order_id=f"close-{positions}",
        symbol="S0000",
        side=Side.SELL,
        quantity=Decimal(10),
        type=OrderType.MARKET,
    )
    conn: sqlite3.Connection = venue.book.db.conn
    conn.set_progress_handler(count, 10)
    try:
        order = asyncio.run(venue.submit_close(request))
    finally:
        conn.set_progress_handler(None, 0)
    assert order.status is OrderStatus.FILLED
    return steps


def test_one_close_costs_the_same_on_a_book_of_20_or_2000_positions(
    make_paper: MakePaper,
) -> None:
    small, large = close_work(make_paper, 20), close_work(make_paper, 2000)
    assert large < small * 1.5, (small, large)  # it read all 2,000 marks: ~100 x
