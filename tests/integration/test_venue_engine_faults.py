"""The rollback engine over the real venue adapters, each against its loopback fake in this event
loop: IBKR (ib_async over the TWS wire protocol) and Bybit (ccxt over signed HTTP).

A bad day at the venue mid-FLATTEN: a dropped connection that comes back, one that does not, a
pacing error 100, an exchange error after the first order, a rate-limit answer. Each test
asserts the outcome against the fake's own book, and what the monitors get to count.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest
from fakes.exchange import FakeExchange
from fakes.tws import FakeTws

from rollbot.brokers.base import VenueEventKind
from rollbot.brokers.crypto.venue import CryptoVenue
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.risk.checks import record_venue_events, venue_metrics
from rollbot.commands.rollback.engine import Engine, Outcome, StepStatus
from rollbot.commands.rollback.flatten import client_order_id
from rollbot.config import CryptoVenueConfig, FlattenConfig, IbkrVenueConfig, Settings
from rollbot.storage.events import Actor

D = Decimal
MakeApp = Callable[..., Rollbot]
Configure = Callable[..., Settings]
IB_BOOK = {"AAPL": D(100), "MSFT": D(-50), "TSLA": D(30)}  # long, short, long
# the seed's 90 s give-up is engine time (a ManualClock): a few real seconds at most
SEED_FLATTEN = FlattenConfig(recheck_interval_s=1)


def text(quantities: dict[str, Decimal]) -> dict[str, str]:
    return {s: format(q.normalize(), "f") for s, q in quantities.items()}


def monitor_figure(app: Rollbot, venue: str, trigger: str) -> float | None:
    """What the risk monitor sees: this process's venue events moved to SQLite, then counted
    over the trailing hour (pacing_violations, connection_failures)."""
    record_venue_events(app)
    (metric,) = [m for m in venue_metrics(app, venue, app.clock.now()) if m.trigger == trigger]
    return metric.value


# -- IBKR ------------------------------------------------------------------------------------------
@pytest.fixture
async def tws() -> AsyncIterator[FakeTws]:
    fake = FakeTws()
    for symbol, qty in IB_BOOK.items():
        fake.add_position(symbol, qty, {"AAPL": "190.5", "MSFT": "410", "TSLA": "250"}[symbol])
    fake.add_order("AAPL", "SELL", 100, "STP", aux_price="180")  # the strategy's stop
    await fake.start()
    yield fake
    await fake.stop()


def ibkr_settings(configure: Configure, tws: FakeTws) -> Settings:
    """Config alone: the engine builds the venue, which connects on its first request."""
    venue = IbkrVenueConfig(port=tws.port, timeout_s=2, reconnect_backoff_s=[0.05, 0.1])
    return configure(venues=[venue], flatten=SEED_FLATTEN)


def gateway_book(tws: FakeTws) -> dict[str, Decimal]:
    return {s: tws.position(s) for s in IB_BOOK if tws.position(s) != 0}


def closes_received(tws: FakeTws) -> dict[str, list[tuple[str, Decimal]]]:
    """Every closing order the gateway read off the wire, per symbol: (action, quantity)."""
    symbols = {i.con_id: i.symbol for i in tws.instruments.values()}
    out: dict[str, list[tuple[str, Decimal]]] = {}
    for r in tws.received:
        out.setdefault(symbols[r.con_id], []).append((r.action, r.quantity))
    return out


CLOSES = {"AAPL": [("SELL", D(100))], "MSFT": [("BUY", D(50))], "TSLA": [("SELL", D(30))]}


async def run(app: Rollbot, operator: Actor, kind: str) -> Outcome:
    engine = Engine(app, operator)
    if kind == "rollback":  # step 2 switches the venue's own reconnecting off
        return await engine.rollback("gateway flapping")
    # steps 3-5 on the venue alone (the live gates are another matter): its backoff stays on
    return await engine.flatten("gateway flapping", venue="ibkr")


@pytest.mark.parametrize("kind", ["rollback", "flatten"])
async def test_ibkr_disconnect_mid_flatten_reconnects_and_finishes_without_a_duplicate(
    kind: str, tws: FakeTws, integration: Configure, make_engine_app: MakeApp, operator: Actor
) -> None:
    app = make_engine_app(ibkr_settings(integration, tws))
    if kind == "flatten":  # about positions only: no resting order to account for
        tws.orders.clear()
    tws.disconnect_after_orders = 2  # the gateway drops every socket after the 2nd close

    outcome = await run(app, operator, kind)

    assert outcome.final_status is StepStatus.SUCCESS, [s.actions for s in outcome.steps]
    assert gateway_book(tws) == {}
    assert closes_received(tws) == CLOSES  # the cut-off close was sent once, after reconnecting
    assert tws.connections == 2
    drops = [e for e in app.venue_events if e.kind is VenueEventKind.DISCONNECT]
    assert [e.message for e in drops] == ["connection to TWS/Gateway lost"]
    assert monitor_figure(app, "ibkr", "connection_failures") == 1
    flatten = outcome.steps[-2]
    assert flatten.status is StepStatus.SUCCESS
    assert flatten.venues["ibkr"].startswith("flat: 3 positions closed")
    # the cut was reported: with reconnecting off (rollback step 2) the closer reconnected
    # itself; on a flatten alone the venue was already reconnecting on its own backoff
    said = "not connected to TWS" if kind == "rollback" else "reconnecting to TWS"
    assert any(said in e for e in flatten.errors), flatten.errors
    assert {(o["symbol"], o["status"]) for o in flatten.orders or []} == {
        ("AAPL", "FILLED"),
        ("MSFT", "FILLED"),
        ("TSLA", "FILLED"),
    }


async def test_ibkr_gateway_that_does_not_come_back_leaves_partial_with_the_exact_residual(
    tws: FakeTws, integration: Configure, make_engine_app: MakeApp, operator: Actor
) -> None:
    app = make_engine_app(ibkr_settings(integration, tws))
    drop = tws.drop_connections

    def drop_and_go_away() -> None:  # the gateway process dies: connections refused from now
        drop()
        assert tws._server is not None
        tws._server.close()

    tws.drop_connections = drop_and_go_away  # type: ignore[method-assign]
    tws.disconnect_after_orders = 2

    outcome = await Engine(app, operator).rollback("gateway gone")

    truth = gateway_book(tws)
    assert len(truth) == 1  # two closes filled before the drop, the third never arrived
    [(symbol, qty)] = truth.items()
    assert qty == IB_BOOK[symbol]  # untouched
    assert outcome.final_status is StepStatus.PARTIAL
    assert outcome.residual == {"ibkr": text(truth)}
    assert outcome.unreachable == ["ibkr"]
    assert [s.status for s in outcome.steps] == [
        StepStatus.SUCCESS,
        StepStatus.SUCCESS,
        StepStatus.SUCCESS,
        StepStatus.FAILED,
        StepStatus.FAILED,
    ]
    flatten = outcome.steps[3]
    assert flatten.venues["ibkr"].startswith(
        f"NOT verified: venue unreachable; last known remaining: {symbol} {qty}"
    )
    assert 90 <= flatten.duration_seconds < 95  # gave up at the seed's timeout (engine time)
    assert outcome.steps[4].verification is not None
    assert outcome.steps[4].verification["last_known_residual"] == {"ibkr": text(truth)}
    closed = {s: c for s, c in closes_received(tws).items() if s != symbol}
    assert closed == {s: c for s, c in CLOSES.items() if s != symbol}


async def test_ibkr_pacing_error_mid_flatten_is_counted_and_the_flatten_finishes(
    tws: FakeTws, integration: Configure, make_engine_app: MakeApp, operator: Actor
) -> None:
    app = make_engine_app(ibkr_settings(integration, tws))
    tws.pacing_errors = 1  # the first close is answered "100: max rate exceeded" and dropped

    outcome = await Engine(app, operator).rollback("pacing")

    assert outcome.final_status is StepStatus.SUCCESS
    assert gateway_book(tws) == {}
    pacing = [e for e in app.venue_events if e.kind is VenueEventKind.PACING]
    assert [(e.venue, e.code) for e in pacing] == [("ibkr", "100")]
    assert "Max rate of messages" in pacing[0].message
    # the refused close was sent again under its client order id; the others once
    sent = closes_received(tws)
    assert sorted(len(c) for c in sent.values()) == [1, 1, 2]
    assert {s: c[-1] for s, c in sent.items()} == {s: c[0] for s, c in CLOSES.items()}
    refs = {r.order_ref for r in tws.received}
    assert refs == {client_order_id(outcome.incident.id, "ibkr", s, 1) for s in IB_BOOK}
    assert monitor_figure(app, "ibkr", "pacing_violations") == 1


# -- Bybit -----------------------------------------------------------------------------------------
BYBIT_START = {"BTC/USDT:USDT": D("0.5"), "ETH/USDT:USDT": D(-2), "SOL/USDT:USDT": D(10)}
EXCHANGE_ID = {"BTC/USDT:USDT": "BTCUSDT", "ETH/USDT:USDT": "ETHUSDT", "SOL/USDT:USDT": "SOLUSDT"}


@pytest.fixture
async def bybit() -> AsyncIterator[FakeExchange]:
    positions = {EXCHANGE_ID[s]: str(q) for s, q in BYBIT_START.items()}
    async with FakeExchange("bybit", positions=positions) as fake:
        fake.book.add_order("BTCUSDT", "SELL", "0.5", trigger_price="50000")  # a stop
        yield fake
        assert fake.book.unknown == [], "ccxt asked the fake for routes it does not serve"


def bybit_app(
    fake: FakeExchange, configure: Configure, make_app: MakeApp, clock: ManualClock
) -> tuple[Rollbot, CryptoVenue]:
    """Closes at market (the threshold for limits is out of reach), ccxt's limiter on at 1/100
    of Bybit's spacing, the rate-limit backoff and event times on the engine's clock."""
    cfg = CryptoVenueConfig(**fake.venue_config("bybit", rate_limit_ms=0.2))
    venue = CryptoVenue(
        cfg, api_key=fake.api_key, secret=fake.secret, clock=clock,
        rate_limit_ms=cfg.rate_limit_ms,
    )  # fmt: skip
    venue.exchange.timeout_on_exit = 0  # plain HTTP: no TLS transports to drain on close
    flatten = SEED_FLATTEN.model_copy(update={"market_exposure_threshold": D(10**9)})
    app = make_app(configure(venues=[cfg], flatten=flatten), venues={"bybit": venue})
    return app, venue


def bybit_book(fake: FakeExchange) -> dict[str, Decimal]:
    return {s: fake.book.position(x) for s, x in EXCHANGE_ID.items() if fake.book.position(x)}


async def test_bybit_exchange_error_mid_flatten_leaves_partial_with_the_exact_residual(
    bybit: FakeExchange,
    integration: Configure,
    make_engine_app: MakeApp,
    operator: Actor,
    live_clock: ManualClock,
) -> None:
    app, _ = bybit_app(bybit, integration, make_engine_app, live_clock)
    bybit.book.fail_orders_after(1)  # one close goes through, then "10016 internal error"

    outcome = await Engine(app, operator).rollback("exchange trouble")

    truth = bybit_book(bybit)
    assert len(truth) == 2 and all(BYBIT_START[s] == q for s, q in truth.items())
    assert outcome.final_status is StepStatus.PARTIAL
    assert outcome.residual == {"bybit": text(truth)}
    assert outcome.unreachable == []  # it answered: the residual is verified, not last known
    assert outcome.open_orders == {}  # the stop was cancelled; no failed close rests
    flatten = outcome.steps[3]
    assert flatten.status is StepStatus.FAILED
    left = ", ".join(f"{s} {format(q.normalize(), 'f')}" for s, q in truth.items())
    assert flatten.venues["bybit"].startswith(f"NOT flat: gave up after 90 s; remaining: {left}")
    assert "10016" in " ".join(flatten.errors)
    # every close was reduce-only; the one accepted closed its whole position
    requests = bybit.book.order_requests
    assert requests and all(r["reduceOnly"] is True for r in requests)
    # the two failing symbols were retried about once per 1 s re-check for 90 s, not every
    # 50 ms (that was 3,600 orders into an exchange answering errors)
    assert 2 * 80 < len(requests) <= 1 + 2 * 100
    accepted = [o for o in bybit.book.orders if o.client_id.startswith("rb")]
    assert [(o.status, o.filled) for o in accepted] == [("FILLED", o.qty) for o in accepted]
    assert len(accepted) == 1
    errors = [e for e in app.venue_events if e.kind is VenueEventKind.ERROR]
    assert errors and all(e.code == "10016" for e in errors)


async def test_bybit_rate_limit_answer_is_retried_counted_and_the_flatten_finishes(
    bybit: FakeExchange,
    integration: Configure,
    make_engine_app: MakeApp,
    operator: Actor,
    live_clock: ManualClock,
) -> None:
    app, venue = bybit_app(bybit, integration, make_engine_app, live_clock)
    bybit.book.rate_limit(1, path="/v5/order/create")  # the first close: "10006 too many visits"

    outcome = await Engine(app, operator).rollback("rate limited")

    assert outcome.final_status is StepStatus.SUCCESS
    assert bybit_book(bybit) == {} and bybit.book.open_orders() == []
    assert bybit.book.rate_limited == 1
    pacing = [e for e in app.venue_events if e.kind is VenueEventKind.PACING]
    assert [(e.code, e.value) for e in pacing] == [("10006", 1)]  # retry 1, then accepted
    assert venue.counts["pacing"] == 1
    # the retry is ccxt's same request again: one order per position, reduce-only, at market
    requests = bybit.book.order_requests
    assert sorted(r["symbol"] for r in requests) == sorted(EXCHANGE_ID.values())
    assert all(r["reduceOnly"] is True and r["orderType"] == "Market" for r in requests)
    assert monitor_figure(app, "bybit", "pacing_violations") == 1
