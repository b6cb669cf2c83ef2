"""/kill while another process holds the database's write lock (SQLite, PostgreSQL): the ack
comes at once, the cancels go out at once, and the hold is stored as soon as the lock is let go
(issue 14 item 7a)."""

from __future__ import annotations

import pytest
from fakes.rollbot_harness import OPERATOR, OPS, bot_settings, running, seeded_paper
from fakes.slack import FakeSlack
from pg_server import BOTH

from rollbot.commands.killswitch.trading_state import TradingState


@pytest.fixture(params=BOTH)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


async def test_kill_while_the_database_is_locked_cancels_at_once_and_holds_once_it_can(
    slack: FakeSlack, tmp_path, write_lock
) -> None:
    settings = bot_settings(tmp_path)
    async with running(slack, settings) as server:
        rb = server.rb
        paper = await seeded_paper(rb)
        with write_lock(settings.database):
            d = await slack.deliver_slash_command(
                "/kill", "runaway algo", user_id=OPERATOR, channel_id=OPS
            )
            ack = await slack.wait_for_ack(d.envelope_id)
            assert ack.latency < 3.0
            assert "locked by another process" in ack.payload["text"]
            # the busy timeout is 5 s: the cancels do not wait it out, nor the lock
            await slack.wait_until(
                lambda: not paper.book.order_rows("WHERE status IN ('OPEN', 'PARTIALLY_FILLED')"),
                timeout=4,
            )
            assert rb.db.query("SELECT * FROM holds") == []  # still locked out
        await slack.wait_until(
            lambda: rb.incidents.latest() is not None and rb.incidents.latest().phase == "DONE",
            timeout=20,
        )
        assert rb.killswitch.state_of(["global"]) is TradingState.HALTED
        incident = rb.incidents.latest()
        early = rb.events.list(incident_id=incident.id, kinds=["CANCELLED_BEFORE_HOLD"])
        assert early and early[0].data["venues"] == {
            "paper": "24 of 24 orders cancelled, none left"
        }


async def test_a_kill_whose_hold_the_database_refuses_cancels_everything_and_says_what_was_done(
    slack: FakeSlack, tmp_path, refuse_holds
) -> None:
    """Not a lock: a write that fails for good (a full disk, a server's refusal). The cancels
    go out all the same, and the person is told the hold is not stored and what was cancelled."""
    async with running(slack, bot_settings(tmp_path)) as server:
        rb = server.rb
        paper = await seeded_paper(rb)
        refuse_holds(rb.db)
        d = await slack.deliver_slash_command(
            "/kill", "runaway algo", user_id=OPERATOR, channel_id=OPS
        )
        ack = await slack.wait_for_ack(d.envelope_id)
        assert ack.latency < 3.0
        assert "HALTED hold could not be stored" in ack.payload["text"]
        assert "the disk refused this hold" in ack.payload["text"]
        told = await slack.wait_until(
            lambda: [m.text for m in slack.ephemeral_to(OPERATOR) if "NOT stored" in m.text],
            timeout=10,
        )
        assert "Cancels sent: paper: 24 of 24 orders cancelled, none left" in told[0]
        assert "Traceback" not in told[0]
        assert not paper.book.order_rows("WHERE status IN ('OPEN', 'PARTIALLY_FILLED')")
        assert rb.db.query("SELECT * FROM holds") == []


async def test_a_nul_in_a_kill_reason_is_held_on_every_backend(slack: FakeSlack, tmp_path) -> None:
    """PostgreSQL text cannot hold a NUL; a /kill carrying one is still held (as U+FFFD)."""
    async with running(slack, bot_settings(tmp_path)) as server:
        rb = server.rb
        d = await slack.deliver_slash_command(
            "/kill", "runaway\x00algo", user_id=OPERATOR, channel_id=OPS
        )
        ack = await slack.wait_for_ack(d.envelope_id)
        assert "HALTED (INC-0001)" in ack.payload["text"], ack.payload["text"]
        [hold] = rb.killswitch.holds.active()
        assert hold.reason == "runaway\ufffdalgo"
        assert rb.killswitch.state_of(["global"]) is TradingState.HALTED
