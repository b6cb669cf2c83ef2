"""The rollback engine closing IBKR contracts through the real venue and the loopback fake TWS:
a future flattened with limits on its tick, and a close TWS refuses for good sent once,
reported at once with TWS's words and escalated, instead of re-sent until the timeout."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest
from fakes.tws import FakeTws

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.engine import Engine, StepStatus
from rollbot.commands.rollback.flatten import VenueCloser
from rollbot.config import FlattenConfig, IbkrVenueConfig, Settings
from rollbot.storage.events import Actor

D = Decimal
MakeApp = Callable[..., Rollbot]
Configure = Callable[..., Settings]
# the seed's 90 s give-up is engine time (a ManualClock): a few real seconds at most
SEED_FLATTEN = FlattenConfig(recheck_interval_s=1)


@pytest.fixture
async def tws() -> AsyncIterator[FakeTws]:
    fake = FakeTws()
    await fake.start()
    yield fake
    await fake.stop()


def app_for(tws: FakeTws, integration: Configure, make_engine_app: MakeApp) -> Rollbot:
    venue = IbkrVenueConfig(port=tws.port, timeout_s=2, reconnect_backoff_s=[0.05, 0.1])
    return make_engine_app(integration(venues=[venue], flatten=SEED_FLATTEN))


async def test_two_es_futures_are_flattened_with_limits_on_the_quarter_point_tick(
    tws: FakeTws, integration: Configure, make_engine_app: MakeApp, operator: Actor
) -> None:
    """The issue's case: 2 ES (about 500,000 of exposure) close with an aggressive limit; the
    mark less 20 bps (5002.475) is not a price ES trades at, so it goes at 5002.25. Before, the
    limit went at 5002.48, TWS refused it (110) and it was re-sent until the timeout."""
    tws.add_position("ES", 2, "5000.25", "5012.5", sec_type="FUT", local_symbol="ESZ6")
    app = app_for(tws, integration, make_engine_app)

    outcome = await Engine(app, operator).flatten("ES runaway", venue="ibkr")

    assess, flatten = outcome.steps[0], outcome.steps[1]
    assert assess.flatten_strategy == {"ibkr": "LIMIT_ORDERS_WITH_TIMEOUT"}
    assert assess.positions is not None
    assert D(assess.positions["ibkr"]["ESZ6"]["market_value"]) == D("501250")
    assert flatten.status is StepStatus.SUCCESS, flatten.venues
    assert tws.position("ESZ6") == 0
    (sent,) = tws.received
    assert (sent.exchange, sent.order_type, sent.quantity) == ("CME", "LMT", 2)
    assert sent.lmt_price == D("5002.25")
    assert outcome.final_status is StepStatus.SUCCESS


async def test_a_close_tws_refuses_for_good_is_sent_once_reported_and_escalated(
    tws: FakeTws, integration: Configure, make_engine_app: MakeApp, operator: Actor
) -> None:
    tws.add_position("AAPL", 100, "190.5")
    tws.add_position("MSFT", -50, "410")
    tws.reject_next = 1_000  # every order, for as long as anyone keeps sending
    tws.reject_reason = "The account is restricted to closing transactions at the exchange"
    app = app_for(tws, integration, make_engine_app)

    outcome = await Engine(app, operator).flatten("restricted account", venue="ibkr")

    flatten = outcome.steps[1]
    sent = sorted(tws.instruments[r.con_id].symbol for r in tws.received)
    assert sent == ["AAPL", "MSFT"]  # once per symbol, never again
    assert flatten.duration_seconds < SEED_FLATTEN.timeout_s  # not waited out to the give-up
    said = flatten.venues["ibkr"]
    assert said.startswith("NOT flat: the venue refused the close for good")
    assert "201: Order rejected - reason:The account is restricted" in said
    assert "escalated" in said and "remaining: AAPL 100, MSFT -50" in said
    assert outcome.final_status is not StepStatus.SUCCESS

    incident = outcome.incident.id
    refused = app.events.list(incident_id=incident, kinds=["ORDER_REJECTED"])
    assert sorted(e.data["symbol"] for e in refused) == ["AAPL", "MSFT"]
    assert all(e.data.get("final") for e in refused)
    assert app.events.list(incident_id=incident, kinds=["ESCALATION_STARTED"])
    told = [m.payload["text"] for m in app.outbox.pending() if m.incident_id == incident]
    assert any(t.startswith("⚠️ ibkr refused the close of AAPL") for t in told), told

    # a later run of this incident's closer (a resumed run, a second /flatten) sends nothing
    closer = VenueCloser(app, app.venue("ibkr"), incident, "MARKET_ORDERS", operator)
    again = await closer.run()
    assert len(tws.received) == 2
    assert set(again.refused) == {"AAPL", "MSFT"} and not again.timed_out


async def test_a_close_tws_accepts_and_then_refuses_for_good_is_not_sent_again(
    tws: FakeTws, integration: Configure, make_engine_app: MakeApp, operator: Actor
) -> None:
    tws.add_position("AAPL", 100, "190.5")
    tws.reject_after_ack = 1_000  # Submitted, then "Order rejected" (201), every time
    tws.reject_reason = "Insufficient margin for this closing transaction"
    app = app_for(tws, integration, make_engine_app)

    outcome = await Engine(app, operator).flatten("margin", venue="ibkr")

    flatten = outcome.steps[1]
    assert len(tws.received) == 1, [r.order_ref for r in tws.received]
    assert flatten.duration_seconds < SEED_FLATTEN.timeout_s
    assert "refused the close for good" in flatten.venues["ibkr"]
    assert "Insufficient margin" in flatten.venues["ibkr"]
    (refused,) = app.events.list(incident_id=outcome.incident.id, kinds=["ORDER_REJECTED"])
    assert refused.data.get("final") is True
