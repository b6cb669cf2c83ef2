"""Step 5 never says "flat" about what it did not read (issue 15): the rollback engine over real
crypto venues against their loopback fakes, in this event loop.

- OKX with a stop-loss, an OCO and a trailing stop resting as algo orders: step 1 cancels them
  all and step 5 reads the algo lists back (they were neither listed nor cancelled).
- A spot-only Bybit account configured with the default market = "derivatives": the coins are
  named as not checked and the rollback is not SUCCESS (it said SUCCESS, flat).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from fakes.exchange import FakeExchange, fast_venue
from fakes.okx import OkxBook

from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.engine import Engine, StepStatus
from rollbot.config import CryptoVenueConfig, FlattenConfig, Settings
from rollbot.storage.events import Actor

D = Decimal
AT_MARKET = FlattenConfig(recheck_interval_s=1, market_exposure_threshold=D(10**9))


def engine_app(
    fake: FakeExchange,
    exchange: str,
    configure: Callable[..., Settings],
    make_app: Callable[..., Rollbot],
    clock: ManualClock,
    **overrides: str,
) -> Rollbot:
    venue = fast_venue(fake, exchange, 0.2, **overrides)
    venue._clock = clock  # event times and backoff on the engine's clock
    cfg = CryptoVenueConfig(**fake.venue_config(exchange, **overrides))
    return make_app(configure(venues=[cfg], flatten=AT_MARKET), venues={exchange: venue})


async def test_okx_rollback_cancels_every_algo_stop_and_reads_the_algo_lists_back(
    integration: Callable[..., Settings],
    make_engine_app: Callable[..., Rollbot],
    operator: Actor,
    live_clock: ManualClock,
) -> None:
    async with FakeExchange("okx", balances={"USDT": "10000"}) as fake:
        book = fake.book
        assert isinstance(book, OkxBook)
        book.set_position("BTC-USDT-SWAP", "50")
        book.add("BTC-USDT-SWAP", "sell", "10", "limit", px="70000")
        book.add("BTC-USDT-SWAP", "sell", "50", "conditional", trigger_px="55000")
        book.add("BTC-USDT-SWAP", "sell", "50", "oco", trigger_px="54000")
        book.add("BTC-USDT-SWAP", "sell", "50", "move_order_stop", trigger_px="58000")
        app = engine_app(fake, "okx", integration, make_engine_app, live_clock)

        outcome = await Engine(app, operator).rollback("stop left at the venue")

        assert book.live() == [] and book.position("BTC-USDT-SWAP") == 0
        assert book.unknown == []
    halt = outcome.steps[0]
    assert "okx: 4 of 4 orders cancelled, none left" in " ".join(halt.actions)
    verify = outcome.steps[-1]
    assert verify.status is StepStatus.SUCCESS, verify.actions
    line = verify.venues["okx"]
    assert line.startswith("flat, no open orders (read: ")
    for kind in ("conditional", "oco", "trailing", "trigger", "plain"):
        assert kind in line, line


async def test_spot_coins_under_the_default_derivatives_market_are_not_checked_not_flat(
    integration: Callable[..., Settings],
    make_engine_app: Callable[..., Rollbot],
    operator: Actor,
    live_clock: ManualClock,
) -> None:
    async with FakeExchange("bybit", positions={}, wallet={"USDT": "100", "BTC": "0.5"}) as fake:
        app = engine_app(fake, "bybit", integration, make_engine_app, live_clock)

        outcome = await Engine(app, operator).rollback("spot account, derivatives config")

        assert fake.book.order_requests == []  # nothing it did not read was traded
    verify = outcome.steps[-1]
    assert outcome.final_status is not StepStatus.SUCCESS
    assert verify.status is StepStatus.PARTIAL
    assert "NOT CHECKED: spot holdings" in verify.venues["bybit"]
    assert "BTC/USDT 0.5" in verify.venues["bybit"]
    assert verify.verification is not None
    assert verify.verification["all_positions_flat"] is False
    assert list(verify.verification["not_checked"]) == ["bybit"]
