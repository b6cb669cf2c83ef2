"""`/kill reducing [scope] reason…` through the real Slack face (issue 16 item 7): a REDUCING
hold from a person, only exits pass the guard, the stricter hold wins whichever came first, and
bad input is a clear message with nothing stored."""

from __future__ import annotations

from decimal import Decimal

from fakes.rollbot_harness import OPERATOR, OPS, bot_settings, running, settled
from fakes.slack import FakeSlack

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.trading_state import TradingState


async def slash(slack: FakeSlack, text: str) -> str:
    d = await slack.deliver_slash_command("/kill", text, user_id=OPERATOR, channel_id=OPS)
    ack = await slack.wait_for_ack(d.envelope_id)
    return str(ack.payload.get("text") or "")


async def verdict(rb: Rollbot, side: str, qty: int) -> tuple[bool, str, TradingState]:
    """The guard's answer for AAPL on paper (the book is long 400), read from the venue."""
    d = await rb.killswitch.guard.check_async("paper", "AAPL", side, Decimal(qty))
    return d.allowed, d.code, d.state


async def test_kill_reducing_holds_reducing_and_only_exits_pass(slack: FakeSlack, tmp_path) -> None:
    async with running(slack, bot_settings(tmp_path)) as server:
        rb = server.rb
        said = await slash(slack, "reducing paper exits only until the feed is fixed")
        assert "venue:paper REDUCING" in said and "only orders that shrink" in said, said
        await settled(slack, rb, 1)
        [hold] = rb.killswitch.holds.active()
        assert (hold.scope, hold.state) == ("venue:paper", "REDUCING")
        assert hold.reason == "exits only until the feed is fixed"
        incident = rb.incidents.latest()
        assert incident is not None and incident.final_status == "SUCCESS"
        assert await rb.venue("paper").open_orders() == []  # the kill still cancels

        assert await verdict(rb, "SELL", 100) == (True, "OK_REDUCES", TradingState.REDUCING)
        assert await verdict(rb, "BUY", 1) == (False, "REDUCING_INCREASES", TradingState.REDUCING)
        assert await verdict(rb, "SELL", 500) == (False, "REDUCING_FLIPS", TradingState.REDUCING)

        # a full /kill of the same scope later: HALTED wins, the REDUCING hold is untouched
        assert "HALTED" in await slash(slack, "paper now stop everything")
        await settled(slack, rb, 2)
        assert sorted(h.state for h in rb.killswitch.holds.active()) == ["HALTED", "REDUCING"]
        assert rb.killswitch.state_of(["global", "venue:paper"]) is TradingState.HALTED
        assert (await verdict(rb, "SELL", 100))[:2] == (False, "HALTED")


async def test_a_reducing_kill_after_a_halted_one_loosens_nothing(
    slack: FakeSlack, tmp_path
) -> None:
    async with running(slack, bot_settings(tmp_path)) as server:
        rb = server.rb
        await slash(slack, "runaway orders")
        await settled(slack, rb, 1)
        said = await slash(slack, "reducing global exits only")
        assert "REDUCING" in said
        await settled(slack, rb, 2)
        assert sorted(h.state for h in rb.killswitch.holds.active()) == ["HALTED", "REDUCING"]
        assert rb.killswitch.state_of(["global"]) is TradingState.HALTED
        assert (await verdict(rb, "SELL", 100))[:2] == (False, "HALTED")


async def test_bad_reducing_kills_say_what_was_wrong_and_store_nothing(
    slack: FakeSlack, tmp_path
) -> None:
    async with running(slack, bot_settings(tmp_path)) as server:
        rb = server.rb
        for text, expected in [
            ("reducing", "/kill reducing needs a reason"),
            ("reducing   ", "/kill reducing needs a reason"),
            ("reducing venue:nope exits", "unknown venue 'nope' in scope"),
            ("reducing account:paper exits", "needs an account id"),
            ("reducing paper", "/kill needs a reason"),
        ]:
            said = await slash(slack, text)
            assert expected in said, (text, said)
        assert rb.killswitch.holds.active() == []
        assert rb.incidents.list() == []
        assert rb.db.query("SELECT 1 FROM holds") == []
        assert slack.messages(OPS) == []
