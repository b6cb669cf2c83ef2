"""A bad day at the venue, injected in the paper venue's own configuration: a disconnect in the
middle of FLATTEN (it comes back; it does not), 30% rejects, partial fills, fills that land after
their cancel, no fills at all until the 90 s give-up, and two venues where one is slow or down.
Each test asserts the exact end state against the paper book itself."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from engine.support import (
    START,
    as_text,
    book_positions,
    closing_orders,
    fills_by_symbol,
    never_flipped,
    open_order_count,
)
from rollbot.brokers.base import VenueEvent, VenueEventKind
from rollbot.brokers.paper.scenario import Scenario, ScenarioAccount, ScenarioPosition
from rollbot.brokers.paper.venue import PaperVenue
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.engine import Engine, StepReport, StepStatus
from rollbot.commands.rollback.flatten import client_order_id
from rollbot.commands.rollback.report import build_log, build_markdown
from rollbot.config import FlattenConfig, PaperVenueConfig
from rollbot.storage.events import Actor

MakeApp = Callable[..., Rollbot]
ALL_SYMBOLS = ", ".join(f"{s} {q}" for s, q in sorted(as_text(START).items()))
# the calls before FLATTEN's first close: account, cancel-all, its read-back (step 1); positions,
# orders, account (step 3); positions (step 4). The 11th call is the 4th closing order.
MID_FLATTEN = 10


def paper_of(app: Rollbot, name: str = "paper") -> PaperVenue:
    venue = app.venue(name)
    assert isinstance(venue, PaperVenue)
    return venue


def closing_side(symbol: str) -> str:
    return "SELL" if START[symbol] > 0 else "BUY"


class DisconnectWatch:
    """on_step: how many injected disconnects had happened when each step ended."""

    def __init__(self, venue: PaperVenue) -> None:
        self.venue = venue
        self.after: dict[int, int] = {}

    def __call__(self, report: StepReport) -> None:
        self.after[report.step] = self.venue.disconnects_done


# -- a disconnect during FLATTEN ------------------------------------------------------------------
async def test_disconnect_mid_flatten_reconnects_and_ends_flat_without_a_duplicate(
    make_app: MakeApp, operator: Actor
) -> None:
    app = make_app(disconnect_after_calls=MID_FLATTEN)
    paper = paper_of(app)
    watch = DisconnectWatch(paper)

    outcome = await Engine(app, operator, on_step=watch).rollback("venue flapping")

    assert watch.after == {1: 0, 2: 0, 3: 0, 4: 1, 5: 1}  # it landed in step 4
    assert outcome.final_status is StepStatus.SUCCESS
    assert book_positions(paper) == {} and open_order_count(paper) == 0
    # the close cut by the disconnect never reached the venue; it was sent again under the same
    # client order id, so every position still has exactly one closing order
    closes = closing_orders(paper)
    for symbol, orders in closes.items():
        assert [o["client_order_id"] for o in orders] == [
            client_order_id(outcome.incident.id, "paper", symbol, 1)
        ]
        assert (orders[0]["status"], Decimal(orders[0]["filled"])) == (
            "FILLED",
            abs(START[symbol]),
        )
    assert set(closes) == set(START)
    flatten = outcome.steps[3]
    assert flatten.status is StepStatus.SUCCESS
    assert any("connection lost (injected disconnect)" in e for e in flatten.errors)
    assert "injected disconnect" in build_markdown(app, outcome.incident)


async def test_disconnect_mid_flatten_that_stays_down_reports_the_exact_residual(
    make_app: MakeApp, operator: Actor, clock: ManualClock
) -> None:
    app = make_app(disconnect_after_calls=MID_FLATTEN)
    paper = paper_of(app)
    paper.stay_down()  # the gateway is gone: reconnecting fails
    watch = DisconnectWatch(paper)

    began = time.perf_counter()
    outcome = await Engine(app, operator, on_step=watch).rollback("venue gone")
    took = time.perf_counter() - began

    assert watch.after[3] == 0 and watch.after[4] == 1
    truth = book_positions(paper)
    closed = set(START) - set(truth)
    assert 0 < len(closed) < len(START)  # cut part way: some closed, some not
    assert truth == {s: START[s] for s in truth}  # what is left was not touched at all
    # the result says exactly what remains where, and that it could not be verified
    assert outcome.residual == {"paper": as_text(truth)}
    assert outcome.unreachable == ["paper"]
    assert [s.status for s in outcome.steps] == [
        StepStatus.SUCCESS,
        StepStatus.SUCCESS,
        StepStatus.SUCCESS,
        StepStatus.FAILED,
        StepStatus.FAILED,
    ]
    assert outcome.final_status is StepStatus.PARTIAL
    left = ", ".join(f"{s} {q}" for s, q in sorted(as_text(truth).items()))
    flatten = outcome.steps[3]
    assert flatten.venues["paper"].startswith(
        f"NOT verified: venue unreachable; last known remaining: {left}"
    )
    assert 90 <= flatten.duration_seconds < 93  # gave up at the timeout, on the engine's clock
    assert took < 5  # ...which is app.clock: a ManualClock spends no real time waiting
    verification = outcome.steps[4].verification
    assert verification is not None
    assert verification["last_known_residual"] == {"paper": as_text(truth)}
    assert verification["all_positions_flat"] is False
    for symbol in closed:
        [order] = closing_orders(paper)[symbol]
        assert (order["status"], Decimal(order["filled"])) == ("FILLED", abs(START[symbol]))
    assert all(s not in closing_orders(paper) for s in truth)
    markdown = build_markdown(app, outcome.incident)
    assert "❌ All positions flat: remaining {}; unreachable paper" in markdown
    assert f"(last known there: {json.dumps({'paper': as_text(truth)})})" in markdown


# -- rejects, partial fills, late fills ------------------------------------------------------------
async def test_thirty_percent_rejects_end_flat_with_every_reject_recorded(
    make_app: MakeApp, operator: Actor
) -> None:
    app = make_app(reject_rate=0.3)
    paper = paper_of(app)

    outcome = await Engine(app, operator).rollback("rejects")

    assert outcome.final_status is StepStatus.SUCCESS
    assert book_positions(paper) == {}
    closes = closing_orders(paper)
    rejected = {
        o["client_order_id"] for os in closes.values() for o in os if o["status"] == "REJECTED"
    }
    assert rejected  # the 30% did bite
    for symbol, orders in closes.items():
        # every attempt but the last was refused; the last closed the whole position
        assert [o["status"] for o in orders] == ["REJECTED"] * (len(orders) - 1) + ["FILLED"]
        assert Decimal(orders[-1]["filled"]) == abs(START[symbol])
        assert [o["client_order_id"] for o in orders] == [
            client_order_id(outcome.incident.id, "paper", symbol, n)
            for n in range(1, len(orders) + 1)
        ]
    events = app.events.list(incident_id=outcome.incident.id, kinds=["ORDER_REJECTED"])
    assert sorted(e.data["client_order_id"] for e in events) == sorted(rejected)
    assert {e.reason for e in events} == {"simulated reject"}
    # ...and in the report: each refused attempt in the orders and under errors
    log = build_log(app, app.incidents.get(outcome.incident.id))
    orders = log.steps[3].orders or []
    assert sorted(o.client_order_id or "" for o in orders if o.status == "REJECTED") == sorted(
        rejected
    )
    assert all(not o.filled for o in orders if o.status == "REJECTED")
    markdown = build_markdown(app, outcome.incident)
    errors = markdown.split("## Errors and issues encountered")[1].split("## ")[0]
    assert errors.count("ORDER_REJECTED") == len(rejected)


@pytest.mark.parametrize(
    "flatten",
    [
        FlattenConfig(market_exposure_threshold=Decimal(10**9)),  # market: the rest is cancelled
        FlattenConfig(limit_timeout_s=2),  # limits: the rest rests 2 s, then is cancelled
    ],
    ids=["market", "limit"],
)
async def test_partial_fills_end_flat_over_several_attempts_never_flipping(
    make_app: MakeApp, operator: Actor, flatten: FlattenConfig
) -> None:
    app = make_app(fill="partial", flatten=flatten)
    paper = paper_of(app)

    outcome = await Engine(app, operator).rollback("partial fills")

    assert outcome.final_status is StepStatus.SUCCESS
    assert book_positions(paper) == {} and open_order_count(paper) == 0
    assert never_flipped(paper, START)
    assert fills_by_symbol(paper) == {s: -q for s, q in START.items()}
    for symbol, orders in closing_orders(paper).items():
        assert len(orders) >= 5  # half at a time: 90 shares take 8 attempts
        assert {o["side"] for o in orders} == {closing_side(symbol)}
        assert sum(Decimal(o["filled"]) for o in orders) == abs(START[symbol])
        sizes = [Decimal(o["quantity"]) for o in orders]
        assert sizes == sorted(sizes, reverse=True)  # each sized from what was left
        assert orders[-1]["status"] == "FILLED"
        assert {o["status"] for o in orders[:-1]} == {"CANCELLED"}


async def test_fills_after_their_cancel_end_flat_without_a_second_order(
    make_app: MakeApp, operator: Actor
) -> None:
    app = make_app(fill="none", late_fill=True)
    paper = paper_of(app)

    outcome = await Engine(app, operator).rollback("late fills")

    assert outcome.final_status is StepStatus.SUCCESS
    assert book_positions(paper) == {}
    assert never_flipped(paper, START)
    assert fills_by_symbol(paper) == {s: -q for s, q in START.items()}
    cancels = app.events.list(incident_id=outcome.incident.id, kinds=["ORDER_CANCEL_REQUESTED"])
    cancelled = {e.data["client_order_id"] for e in cancels}
    for symbol, orders in closing_orders(paper).items():
        # cancelled after the 10 s limit timeout, filled anyway: one order, never sent again
        [order] = orders
        assert order["client_order_id"] in cancelled
        assert order["status"] == "FILLED"  # the venue's last word on it
        assert Decimal(order["filled"]) == Decimal(order["quantity"]) == abs(START[symbol])
    assert len(cancelled) == len(START)
    assert 10 <= outcome.steps[3].duration_seconds < 20


async def test_no_fills_give_up_at_the_timeout_with_the_exact_residual(
    make_app: MakeApp, operator: Actor
) -> None:
    app = make_app(fill="none")
    paper = paper_of(app)

    began = time.perf_counter()
    outcome = await Engine(app, operator).rollback("market frozen")
    took = time.perf_counter() - began

    flatten = outcome.steps[3]
    assert flatten.status is StepStatus.FAILED
    assert 90 <= flatten.duration_seconds < 93
    assert took < 5  # every wait went through app.clock
    assert flatten.venues["paper"] == (
        f"NOT flat: gave up after 90 s; remaining: {ALL_SYMBOLS}"
        " (closes still working were cancelled)"
    )
    assert book_positions(paper) == START
    assert open_order_count(paper) == 0  # nothing left working to fill behind the report
    assert outcome.residual == {"paper": as_text(START)}
    assert outcome.open_orders == {} and outcome.unreachable == []
    assert outcome.steps[4].status is StepStatus.PARTIAL
    assert outcome.final_status is StepStatus.PARTIAL
    for orders in closing_orders(paper).values():
        assert len(orders) >= 8  # re-priced every 10 s for 90 s
        assert {o["status"] for o in orders} == {"CANCELLED"}
        assert {Decimal(o["filled"]) for o in orders} == {Decimal(0)}


async def test_a_venue_refusing_every_close_is_retried_at_the_interval_not_hammered(
    make_app: MakeApp, operator: Actor
) -> None:
    app = make_app(reject_rate=1.0)
    paper = paper_of(app)

    outcome = await Engine(app, operator).rollback("venue refuses everything")

    assert outcome.residual == {"paper": as_text(START)}
    assert book_positions(paper) == START
    rejects = app.events.list(incident_id=outcome.incident.id, kinds=["ORDER_REJECTED"])
    for symbol, orders in closing_orders(paper).items():
        assert {o["status"] for o in orders} == {"REJECTED"}
        # about one attempt per 1 s re-check over the 90 s, not one every 50 ms
        assert 60 <= len(orders) <= 100, (symbol, len(orders))
    assert len(rejects) == sum(len(o) for o in closing_orders(paper).values())


async def test_a_long_give_up_with_a_short_recheck_interval(
    make_app: MakeApp, operator: Actor
) -> None:
    """More than 1024 re-checks: the back-off must not overflow (2**1024 is not a float)."""
    app = make_app(
        fill="none",
        flatten=FlattenConfig(timeout_s=12, recheck_interval_s=0.01, limit_timeout_s=5),
    )
    paper = paper_of(app)
    paper.seed(
        Scenario(
            account=ScenarioAccount(cash=Decimal(100000)),
            positions=[ScenarioPosition(symbol="AAPL", quantity=Decimal(5), avg_price=100)],
        )
    )

    outcome = await Engine(app, operator).flatten("one stuck position")

    assert outcome.residual == {"paper": {"AAPL": "5"}}
    assert 12 <= outcome.steps[1].duration_seconds < 13


# -- several venues at once -----------------------------------------------------------------------
def two_venues(tmp_path: Path, **beta: object) -> list[PaperVenueConfig]:
    return [
        PaperVenueConfig(name="beta", book_path=tmp_path / "beta.db", **beta),  # type: ignore[arg-type]
        PaperVenueConfig(name="alpha", book_path=tmp_path / "alpha.db"),
    ]


async def test_a_slow_venue_does_not_hold_up_the_other(
    make_app: MakeApp, operator: Actor, tmp_path: Path
) -> None:
    app = make_app(two_venues(tmp_path, latency_ms=80))
    fills: dict[str, list[float]] = {"alpha": [], "beta": []}

    def on_event(event: VenueEvent) -> None:
        if event.kind is VenueEventKind.FILL:
            fills[event.venue].append(time.perf_counter())

    for venue in app.venues().values():
        venue.subscribe(on_event)

    outcome = await Engine(app, operator).rollback("two venues")

    assert outcome.final_status is StepStatus.SUCCESS
    assert book_positions(paper_of(app, "alpha")) == book_positions(paper_of(app, "beta")) == {}
    assert len(fills["alpha"]) == len(fills["beta"]) == len(START)
    # beta is listed first and answers in 80 ms; alpha closed everything before beta's first fill
    assert max(fills["alpha"]) < min(fills["beta"])


async def test_a_venue_that_goes_down_mid_flatten_leaves_the_other_flat(
    make_app: MakeApp, operator: Actor, tmp_path: Path
) -> None:
    app = make_app(two_venues(tmp_path, disconnect_after_calls=MID_FLATTEN))
    alpha, beta = paper_of(app, "alpha"), paper_of(app, "beta")
    beta.stay_down()

    outcome = await Engine(app, operator).rollback("beta gateway died")

    assert book_positions(alpha) == {}
    assert {s: len(o) for s, o in closing_orders(alpha).items()} == dict.fromkeys(START, 1)
    truth = book_positions(beta)
    assert 0 < len(truth) < len(START)
    assert outcome.residual == {"beta": as_text(truth)}  # exactly what remains, and where
    assert outcome.unreachable == ["beta"]
    flatten, verify = outcome.steps[3], outcome.steps[4]
    assert flatten.status is StepStatus.PARTIAL
    assert flatten.venues["alpha"] == "flat: 9 positions closed (LIMIT_ORDERS_WITH_TIMEOUT)"
    assert flatten.venues["beta"].startswith("NOT verified: venue unreachable; last known")
    assert verify.status is StepStatus.PARTIAL
    assert verify.venues["alpha"] == "flat, no open orders"
    assert verify.venues["beta"].startswith("UNVERIFIED:")
    assert outcome.final_status is StepStatus.PARTIAL


async def test_a_venue_down_from_the_start_is_named_and_the_other_finishes(
    make_app: MakeApp, operator: Actor, tmp_path: Path
) -> None:
    app = make_app(two_venues(tmp_path))
    alpha, beta = paper_of(app, "alpha"), paper_of(app, "beta")
    beta.disconnect_in(1)  # lost on its very first call
    beta.stay_down()

    outcome = await Engine(app, operator).rollback("beta never answered")

    assert book_positions(alpha) == {} and open_order_count(alpha) == 0
    assert book_positions(beta) == START and closing_orders(beta) == {}
    halt, _, assess, flatten, _ = outcome.steps
    assert halt.status is StepStatus.PARTIAL
    assert halt.venues["alpha"] == "24 of 24 orders cancelled, none left"
    assert halt.venues["beta"].startswith("FAILED: beta: connection lost (injected disconnect)")
    assert assess.status is StepStatus.PARTIAL and set(assess.positions or {}) == {"alpha"}
    assert flatten.venues["beta"].startswith(
        "NOT verified: venue unreachable; its positions were never read"
    )
    assert outcome.unreachable == ["beta"] and outcome.residual == {}
    assert outcome.final_status is StepStatus.PARTIAL
