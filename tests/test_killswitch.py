"""The kill switch and its guard: holds per scope, stacked by source; the strictest one wins."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pg_server import BOTH

from rollbot.brokers.paper.scenario import Scenario, ScenarioAccount, ScenarioPosition
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.switch import Decision
from rollbot.commands.killswitch.trading_state import TradingState, parse_scope
from rollbot.config import Settings
from rollbot.errors import BadInput, Refused
from rollbot.storage.backends import open_database
from rollbot.storage.events import Actor

ALICE = Actor(id="U0ALICE", source="slack")
MONITOR = Actor.clock("pnl")
HALTED, REDUCING = TradingState.HALTED, TradingState.REDUCING


@pytest.fixture
def live(app: Rollbot) -> Rollbot:
    """Gates armed: only the kill switch stands between an order and the venue. The paper
    venue holds AAPL long 100 and MSFT short 50; GOOG is flat (a mark only)."""
    app.gates.arm(ALICE, "test starts live")
    app.venue("paper").seed(  # type: ignore[attr-defined]
        Scenario(
            account=ScenarioAccount(cash=Decimal(100000)),
            positions=[
                ScenarioPosition(symbol="AAPL", quantity=Decimal(100), avg_price=Decimal(100)),
                ScenarioPosition(symbol="MSFT", quantity=Decimal(-50), avg_price=Decimal(300)),
            ],
            marks={"GOOG": Decimal(150)},
        )
    )
    return app


def check(
    app: Rollbot, side: str, qty: str, position: str = "0", symbol: str = "AAPL", **kw: str
) -> Decision:
    return app.killswitch.check_order("paper", symbol, side, qty, position=position, **kw)


def active_holds(app: Rollbot) -> list[tuple[str, str, str]]:
    return [(h.scope, h.source, h.state) for h in app.killswitch.holds.active()]


def test_with_no_hold_and_live_gates_an_order_passes(live: Rollbot) -> None:
    d = check(live, "BUY", "10")
    assert (d.allowed, d.code, d.state) == (True, "OK", TradingState.ACTIVE)


def test_reducing_allows_only_orders_that_shrink_a_position(live: Rollbot) -> None:
    """Measured against the venue's position (AAPL +100, MSFT -50, GOOG flat), never the
    caller's claim, and counting what was already allowed."""
    live.killswitch.trigger("global", "de-risk", ALICE, state=REDUCING)
    # long 100
    assert check(live, "SELL", "40").code == "OK_REDUCES"
    assert check(live, "SELL", "60").allowed  # exactly flat, with the 40 before, still reduces
    assert check(live, "SELL", "1").code == "REDUCING_RESERVED"
    assert check(live, "BUY", "1").code == "REDUCING_INCREASES"
    # short 50
    assert check(live, "BUY", "51", symbol="MSFT").code == "REDUCING_FLIPS"
    assert check(live, "SELL", "1", symbol="MSFT").code == "REDUCING_INCREASES"
    assert check(live, "BUY", "50", symbol="MSFT").allowed
    # flat: anything would open a position, whatever the caller says it holds
    assert check(live, "SELL", "1", "100", symbol="GOOG").code == "REDUCING_NO_POSITION"
    refused = check(live, "BUY", "1")
    assert not refused.allowed and refused.state is REDUCING
    assert "never flip" in refused.reason
    # cancels always pass
    assert live.killswitch.check_order("paper", "AAPL", "BUY", "1", cancel=True).allowed


def test_halted_refuses_every_order_but_cancels(live: Rollbot) -> None:
    live.killswitch.trigger("venue:paper", "stop", ALICE)
    for side, qty, pos in (("BUY", "1", "0"), ("SELL", "10", "100"), ("BUY", "5", "-5")):
        d = check(live, side, qty, pos)
        assert (d.allowed, d.code, d.state) == (False, "HALTED", HALTED)
    assert live.killswitch.check_order("paper", "AAPL", "SELL", "10", cancel=True).allowed
    # a venue that is not configured is refused, never taken as "not held"
    assert live.killswitch.check_order("other", "AAPL", "BUY", "1").code == "UNKNOWN_VENUE"


def test_holds_stack_by_source_and_each_is_cleared_explicitly(live: Rollbot) -> None:
    ks = live.killswitch
    ks.trigger("global", "PnL -5.2%", MONITOR, source="monitor:pnl")
    ks.trigger("global", "looks wrong", ALICE)
    assert sorted(active_holds(live)) == [
        ("global", "monitor:pnl", "HALTED"),
        ("global", "person", "HALTED"),
    ]
    cleared = ks.clear("global", "I checked", ALICE, source="person")
    assert [h.source for h in cleared] == ["person"]
    assert check(live, "BUY", "1").code == "HALTED"  # the monitor's hold still stands
    ks.clear("global", "PnL recovered", ALICE, source="monitor:pnl")
    assert check(live, "BUY", "1").allowed
    kinds = [e.kind for e in live.events.list(kinds=["HOLD_SET", "HOLD_CLEARED"])]
    assert kinds == ["HOLD_SET", "HOLD_SET", "HOLD_CLEARED", "HOLD_CLEARED"]
    cleared_events = live.events.list(kinds=["HOLD_CLEARED"])
    assert [e.reason for e in cleared_events] == ["I checked", "PnL recovered"]


def test_the_strictest_hold_over_a_scope_wins(live: Rollbot) -> None:
    ks = live.killswitch
    ks.trigger("venue:paper", "only reduce here", ALICE, state=REDUCING)
    ks.trigger("global", "stop everything", ALICE)
    assert ks.state_of(["global", "venue:paper"]) is HALTED
    assert check(live, "SELL", "10").code == "HALTED"  # global HALTED beats REDUCING
    ks.clear("global", "global ok", ALICE)
    assert check(live, "SELL", "10").code == "OK_REDUCES"  # the venue hold remains
    assert check(live, "BUY", "10").code == "REDUCING_INCREASES"

    ks.trigger("strategy:ma_crossover", "bad signals", ALICE)
    assert check(live, "SELL", "10", strategy="ma_crossover").code == "HALTED"
    assert check(live, "SELL", "10", strategy="other").allowed
    ks.trigger("account:paper/DU1", "account issue", ALICE)
    assert check(live, "SELL", "10", account="DU1").code == "HALTED"

    by_scope = {s.scope: s.state for s in ks.status(["paper", "other"])}
    assert by_scope == {
        "global": TradingState.ACTIVE,
        "venue:paper": REDUCING,
        "venue:other": TradingState.ACTIVE,
        "account:paper/DU1": HALTED,
        "strategy:ma_crossover": HALTED,
    }


def test_a_retrigger_is_idempotent_and_recorded(live: Rollbot) -> None:
    ks = live.killswitch
    first, created = ks.trigger("global", "first", ALICE)
    again, created_again = ks.trigger("global", "second click", ALICE)
    assert (created, created_again) == (True, False)
    assert again.id == first.id and again.reason == "first"
    assert active_holds(live) == [("global", "person", "HALTED")]
    repeated = live.events.list(kinds=["HOLD_REPEATED"])
    assert [(e.reason, e.data["hold_id"]) for e in repeated] == [("second click", first.id)]

    # a REDUCING hold re-triggered as HALTED tightens the same hold; never loosens
    reducing, _ = ks.trigger("venue:paper", "reduce", MONITOR, state=REDUCING, source="monitor")
    tightened, created = ks.trigger("venue:paper", "halt now", MONITOR, source="monitor")
    assert not created and tightened.id == reducing.id and tightened.state == "HALTED"
    ks.trigger("venue:paper", "reduce again", MONITOR, state=REDUCING, source="monitor")
    assert ks.holds.find("venue:paper", "monitor").state == "HALTED"  # type: ignore[union-attr]
    assert len(live.events.list(kinds=["HOLD_TIGHTENED"])) == 1
    assert len(ks.holds.active()) == 2


def test_a_hold_survives_reopening_the_database(settings: Settings, live: Rollbot) -> None:
    live.killswitch.trigger("global", "before restart", ALICE)
    live.db.close()
    reopened = Rollbot.open(settings, clock=ManualClock())
    try:
        assert reopened.killswitch.state_of(["global"]) is HALTED
        assert check(reopened, "BUY", "1").code == "HALTED"
    finally:
        reopened.db.close()


def test_a_flatten_moves_only_its_own_holds_without_clearing_them(live: Rollbot) -> None:
    ks = live.killswitch
    flatten, _ = live.incidents.open(
        kind="flatten", reason="close", actor=ALICE, scope="venue:paper"
    )
    ks.trigger("global", "kill", ALICE)  # another kill's hold: never loosened by the flatten
    ks.trigger("venue:paper", "close", ALICE, incident_id=flatten.id)
    changed = ks.set_incident_state(flatten.id, REDUCING, ALICE, "flattening")
    assert [h.scope for h in changed] == ["venue:paper"]
    assert check(live, "SELL", "10", "100").code == "HALTED"  # the global kill still governs
    assert {h.scope: h.state for h in ks.holds.active()} == {
        "global": "HALTED",
        "venue:paper": "REDUCING",
    }
    ks.set_incident_state(flatten.id, HALTED, ALICE, "flat again")
    assert len(ks.holds.active()) == 2
    assert len(live.events.list(kinds=["HOLD_STATE"])) == 2


@pytest.mark.parametrize("backend", BOTH)
@pytest.mark.parametrize("breakage", ["connection closed", "table gone"])
def test_the_guard_fails_closed_when_state_cannot_be_read(
    live: Rollbot, settings: Settings, breakage: str
) -> None:
    assert check(live, "BUY", "1").allowed
    if breakage == "connection closed":
        live.db.close()
    else:
        other = open_database(settings.database)
        other.execute("DROP TABLE holds")
        other.close()
    d = check(live, "BUY", "1")
    assert (d.allowed, d.code, d.state) == (False, "STATE_UNAVAILABLE", HALTED)
    assert "cannot be read" in d.reason


def test_disabled_gates_refuse_new_exposure_but_allow_reductions(live: Rollbot) -> None:
    live.gates.disable(ALICE, "back to shadow")
    d = check(live, "BUY", "1")
    assert (d.allowed, d.code) == (False, "LIVE_GATES_DISABLED")
    assert check(live, "BUY", "1", "100").code == "LIVE_GATES_DISABLED"  # adds to a long
    assert check(live, "SELL", "30", "100").code == "OK_REDUCES"
    assert not check(live, "SELL", "130", "100").allowed  # a flip opens a new short


def test_missing_gates_files_count_as_live_disabled(app: Rollbot) -> None:
    assert not app.settings.paths.live_environment.exists()
    assert check(app, "BUY", "1").code == "LIVE_GATES_DISABLED"
    assert check(app, "SELL", "1", "1").allowed


@pytest.mark.parametrize(
    ("side", "qty", "position"),
    [
        ("BUY", "-5", "0"),
        ("BUY", "0", "0"),
        ("BUY", "abc", "0"),
        ("BUY", "NaN", "0"),
        ("BUY", "Infinity", "0"),
        ("SELL", "1", "-Infinity"),
        ("HOLD", "1", "0"),
    ],
)
def test_a_malformed_order_is_refused(live: Rollbot, side: str, qty: str, position: str) -> None:
    d = check(live, side, qty, position)
    assert (d.allowed, d.code) == (False, "BAD_ORDER")


def test_trigger_and_clear_need_a_reason_and_change_nothing_without_one(live: Rollbot) -> None:
    ks = live.killswitch
    for reason in ("", "   "):
        with pytest.raises(BadInput, match="reason is required"):
            ks.trigger("global", reason, ALICE)
    with pytest.raises(BadInput, match="HALTED or REDUCING"):
        ks.trigger("global", "x", ALICE, state=TradingState.ACTIVE)
    assert ks.holds.active() == []
    ks.trigger("global", "real", ALICE)
    with pytest.raises(BadInput, match="reason is required"):
        ks.clear("global", " ", ALICE)
    with pytest.raises(Refused) as no_hold:
        ks.clear("venue:paper", "nothing there", ALICE)
    assert no_hold.value.code == "NO_HOLD"
    assert active_holds(live) == [("global", "person", "HALTED")]
    assert [e.kind for e in live.events.list()] == ["GATES_WRITTEN", "HOLD_SET"]


def test_scopes_are_parsed_strictly() -> None:
    venues = ["paper", "ibkr"]
    assert parse_scope(None, venues) == "global"
    assert parse_scope("all", venues) == "global"
    assert parse_scope("paper", venues) == "venue:paper"
    assert parse_scope("account:ibkr/DU1", venues) == "account:ibkr/DU1"
    assert parse_scope("strategy:ma", venues) == "strategy:ma"
    for bad, problem in (
        ("nope", "unknown scope 'nope'"),
        ("venue:nope", "unknown venue 'nope'"),
        ("account:nope/1", "unknown venue in account scope"),
        ("desk:fx", "unknown scope"),
        ("strategy:", "unknown scope"),
    ):
        with pytest.raises(BadInput, match=problem):
            parse_scope(bad, venues)
