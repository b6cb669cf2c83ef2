"""An account kill on IBKR, where each order says its account: only that account's orders are
cancelled, one by one; what IB will not let us cancel is named, and another account's kill
leaves them all working (issue 14 item 11). The engine against the loopback TWS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from fakes.tws import FakeTws

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.engine import Engine, StepStatus
from rollbot.config import IbkrVenueConfig, Settings
from rollbot.storage.events import Actor

ACCOUNT = "DU1234567"  # the fake gateway's account


@pytest.fixture
async def tws() -> AsyncIterator[FakeTws]:
    fake = FakeTws(account=ACCOUNT)
    fake.add_position("AAPL", 100, "190.5")
    fake.add_order("AAPL", "SELL", 100, "LMT", lmt_price="200", client_id=17)  # rollbot's id
    fake.add_order("AAPL", "SELL", 100, "STP", aux_price="180", client_id=1)  # the strategy's
    await fake.start()
    yield fake
    await fake.stop()


def working(tws: FakeTws) -> list[tuple[int, str]]:
    return sorted((o.client_id, o.order_type) for o in tws.working_orders())


@pytest.mark.parametrize("account", [ACCOUNT, "DU7654321"])
async def test_an_account_kill_cancels_that_accounts_orders_only(
    account: str,
    tws: FakeTws,
    integration: Callable[..., Settings],
    make_engine_app: Callable[..., Rollbot],
    operator: Actor,
) -> None:
    venue = IbkrVenueConfig(port=tws.port, timeout_s=2, reconnect_backoff_s=[0.05])
    app = make_engine_app(integration(venues=[venue]))

    outcome = await Engine(app, operator).kill("desk B runaway", f"account:ibkr/{account}")

    halt, disconnect = outcome.steps
    ibkr = halt.venues["ibkr"]
    assert f"Guard refuses new orders for account ibkr/{account} (HALTED)" in disconnect.actions
    assert disconnect.status is StepStatus.SUCCESS
    assert tws.global_cancels == 0  # a global cancel would reach every account's orders
    if account == ACCOUNT:
        # ours cancelled; the strategy's is refused one by one by IB, and said so
        assert working(tws) == [(1, "STP")]
        assert ibkr.startswith(f"account {ACCOUNT}: 1 of 2 orders cancelled, still open: ")
        assert "belongs to API client 1" in ibkr
        assert halt.status is StepStatus.FAILED
    else:
        assert working(tws) == [(1, "STP"), (17, "LMT")]
        assert ibkr == (
            "account DU7654321: 0 of 0 orders cancelled, none left;"
            " 2 order(s) of other accounts left working"
        )
        assert halt.status is StepStatus.SUCCESS
