"""Issue 14.3: under REDUCING the guard never allows, in sum, more than the position rollbot last
read from the venue, counting what it already allowed and has not yet seen filled or cancelled.
The caller's `--position` is never trusted; reservations live in SQLite, shared by processes."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from rollbot.brokers.base import CloseRequest, OrderType, Side
from rollbot.brokers.paper.scenario import Scenario, ScenarioAccount, ScenarioPosition
from rollbot.brokers.paper.venue import PaperVenue
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.gates import Gates
from rollbot.commands.killswitch.trading_state import TradingState
from rollbot.config import Settings
from rollbot.storage.events import Actor

ALICE = Actor(id="U0ALICE", source="slack")
SELL_400 = ("guard", "check", "--venue", "paper", "--symbol", "AAPL", "--side", "SELL")


def book(long_aapl: int = 400) -> Scenario:
    return Scenario(
        account=ScenarioAccount(cash=Decimal(100000)),
        positions=[
            ScenarioPosition(symbol="AAPL", quantity=Decimal(long_aapl), avg_price=Decimal(100))
        ],
        marks={"MSFT": Decimal(300)},
    )


def reducing(settings: Settings, clock: Any = None) -> Rollbot:
    """Live gates, a REDUCING hold on paper, and a paper book long AAPL 400."""
    rb = Rollbot.open(settings, clock=clock)
    Gates(settings.paths.live_environment, settings.paths.shadow_config).arm(ALICE, "live")
    rb.venue("paper").seed(book())  # type: ignore[attr-defined]
    rb.killswitch.trigger("venue:paper", "de-risk", ALICE, state=TradingState.REDUCING)
    return rb


def test_two_sell_400_checks_from_two_processes_never_flip_a_long_400(
    rollbot: Any, settings: Settings
) -> None:
    reducing(settings).db.close()

    first = rollbot(*SELL_400, "-q", "400", "--position", "400")
    second = rollbot(*SELL_400, "-q", "400", "--position", "400")

    assert first.returncode == 0 and "ALLOWED OK_REDUCES" in first.stdout, first.stdout
    assert second.returncode == 1, second.stdout + second.stderr
    assert "REFUSED REDUCING_RESERVED" in second.stdout
    assert "less 400 already allowed" in " ".join(second.stdout.split())


def test_the_callers_position_is_not_trusted_for_a_symbol_the_venue_does_not_hold(
    rollbot: Any, settings: Settings
) -> None:
    reducing(settings).db.close()
    res = rollbot(*SELL_400[:5], "MSFT", "--side", "SELL", "-q", "100", "--position", "100")
    assert res.returncode == 1 and "REFUSED REDUCING_NO_POSITION" in res.stdout, res.stdout


def test_a_release_by_order_id_gives_the_position_back(settings: Settings) -> None:
    rb = reducing(settings)
    ks = rb.killswitch
    assert ks.check_order("paper", "AAPL", "SELL", 300, order_id="A1").allowed
    assert ks.check_order("paper", "AAPL", "SELL", 300, order_id="A2").code == "REDUCING_RESERVED"
    assert ks.guard.release("A1", "cancelled by the trading system") == 1
    d = ks.check_order("paper", "AAPL", "SELL", 300, order_id="A2")
    assert d.allowed and (d.position, d.reserved) == ("400", "300")
    rb.db.close()


def test_a_venue_read_releases_what_was_never_sent_and_keeps_what_rests(
    settings: Settings, make_paper: Any
) -> None:
    clock = ManualClock()
    rb = reducing(settings, clock)
    ks = rb.killswitch
    venue: PaperVenue = make_paper(fill="none")  # the same book: the trading system's orders rest
    assert ks.check_order("paper", "AAPL", "SELL", 150, order_id="NEVER-SENT").allowed
    assert ks.check_order("paper", "AAPL", "SELL", 250, order_id="C-REST").allowed

    rest = asyncio.run(
        venue.submit_close(
            CloseRequest(
                symbol="AAPL",
                side=Side.SELL,
                quantity=Decimal(250),
                type=OrderType.LIMIT,
                limit_price=Decimal(500),
                client_order_id="C-REST",
            )
        )
    )
    assert ks.check_order("paper", "AAPL", "SELL", 1).code == "REDUCING_RESERVED"

    clock.advance(61)  # past the 2 s bound and the 60 s send grace: the venue is read again
    d = ks.check_order("paper", "AAPL", "SELL", 150, order_id="B1")
    assert d.allowed, d.reason  # the never-sent 150 is released; the resting 250 still counts
    assert ks.check_order("paper", "AAPL", "SELL", 1).code == "REDUCING_RESERVED"

    asyncio.run(venue.cancel_order(rest.order_id))
    clock.advance(61)
    d = ks.check_order("paper", "AAPL", "SELL", 250)
    assert d.allowed, d.reason  # cancelled: its 250 is back; B1 (150) not seen yet, so held
    rb.db.close()


def test_a_fill_seen_at_the_venue_shrinks_the_position_the_guard_allows(
    settings: Settings, make_paper: Any
) -> None:
    clock = ManualClock()
    rb = reducing(settings, clock)
    ks = rb.killswitch
    assert ks.check_order("paper", "AAPL", "SELL", 100, order_id="C-FILL").allowed
    venue: PaperVenue = make_paper()
    asyncio.run(
        venue.submit_close(
            CloseRequest(
                symbol="AAPL", side=Side.SELL, quantity=Decimal(100), client_order_id="C-FILL"
            )
        )
    )
    clock.advance(61)
    assert ks.check_order("paper", "AAPL", "SELL", 301).code == "REDUCING_FLIPS"  # 300 left
    d = ks.check_order("paper", "AAPL", "SELL", 300)
    assert d.allowed and d.position == "300"
    rb.db.close()


def test_with_the_gates_off_the_same_rule_holds(settings: Settings) -> None:
    """ACTIVE with the live gates off lets only reductions through: the same reservations."""
    rb = Rollbot.open(settings)
    rb.venue("paper").seed(book())  # type: ignore[attr-defined]
    ks = rb.killswitch
    assert ks.check_order("paper", "AAPL", "BUY", 1).code == "LIVE_GATES_DISABLED"
    assert ks.check_order("paper", "AAPL", "SELL", 400).allowed
    assert ks.check_order("paper", "AAPL", "SELL", 400).code == "LIVE_GATES_DISABLED"
    rb.db.close()


def test_guard_release_at_the_terminal_gives_the_position_back(
    rollbot: Any, settings: Settings
) -> None:
    rb = reducing(settings)
    assert rb.killswitch.check_order("paper", "AAPL", "SELL", 400, order_id="A1").allowed
    rb.db.close()
    released = rollbot("guard", "release", "--order-id", "A1", "--reason", "cancelled")
    assert released.returncode == 0 and "released 1 reservation" in released.stdout
    again = rollbot(*SELL_400, "-q", "400")
    assert again.returncode == 0 and "ALLOWED OK_REDUCES" in again.stdout, again.stdout


async def test_inside_a_running_event_loop_a_stale_read_is_not_waited_for(
    settings: Settings,
) -> None:
    """A trading system's own loop is never blocked on a venue: refused now, read meanwhile."""
    rb = reducing(settings)
    d = rb.killswitch.check_order("paper", "AAPL", "SELL", 100)
    assert (d.allowed, d.code) == (False, "POSITION_UNAVAILABLE")
    for _ in range(50):  # the read scheduled on this loop
        await asyncio.sleep(0.02)
        if rb.killswitch.guard.reservations.read_at("paper") is not None:
            break
    d = rb.killswitch.check_order("paper", "AAPL", "SELL", 100)
    assert (d.allowed, d.code, d.position) == (True, "OK_REDUCES", "400")
    await rb.aclose()
