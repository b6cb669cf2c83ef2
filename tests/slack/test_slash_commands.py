"""End to end: real slack-bolt over a real websocket (Socket Mode) and real HTTP to the
loopback Slack, the real paper venue and the database on SQLite and on PostgreSQL. No mocks."""

from __future__ import annotations

import pytest
from fakes.rollbot_harness import (
    OPERATOR,
    OPS,
    OUTSIDER,
    RISK,
    approval_buttons,
    bot_settings,
    click,
    running,
    seeded_paper,
)
from fakes.slack import FakeSlack
from pg_server import BOTH

from rollbot.commands.killswitch.trading_state import TradingState


@pytest.fixture(params=BOTH)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def top_level(slack: FakeSlack) -> list:
    return [m for m in slack.messages(OPS, include_replies=False)]


async def test_kill_from_operator_halts_cancels_and_posts_headline_and_thread(
    slack: FakeSlack, tmp_path
) -> None:
    async with running(slack, bot_settings(tmp_path)) as server:
        rb = server.rb
        paper = await seeded_paper(rb)

        d = await slack.deliver_slash_command(
            "/kill", "fat finger on TSLA", user_id=OPERATOR, channel_id=OPS
        )
        ack = await slack.wait_for_ack(d.envelope_id)
        assert ack.latency < 3.0
        assert "HALTED" in ack.payload["text"]

        await slack.wait_until(
            lambda: (
                len(slack.thread(OPS, top_level(slack)[0].ts)) >= 3 if top_level(slack) else False
            ),
            timeout=10,
        )
        assert rb.killswitch.state_of(["global"]) is TradingState.HALTED
        assert await paper.open_orders() == []
        headline = top_level(slack)
        assert len(headline) == 1
        incident = rb.incidents.latest()
        assert incident is not None and incident.slack_ts == headline[0].ts
        thread_text = " ".join(m.text for m in slack.thread(OPS, headline[0].ts))
        assert "Step 1 Immediate Halt: SUCCESS" in thread_text
        assert "Step 2 Disconnect: SUCCESS" in thread_text
        # the headline is edited in place as the incident moves
        await slack.wait_until(lambda: any(c.ok for c in slack.calls("chat.update")), timeout=5)
        assert "DONE" in slack.message(OPS, headline[0].ts).blocks[0]["text"]["text"]


async def test_kill_from_user_without_role_is_refused_and_changes_nothing(
    slack: FakeSlack, tmp_path
) -> None:
    async with running(slack, bot_settings(tmp_path)) as server:
        rb = server.rb
        d = await slack.deliver_slash_command("/kill", "let me", user_id=OUTSIDER, channel_id=OPS)
        ack = await slack.wait_for_ack(d.envelope_id)
        assert "needs the operator role" in ack.payload["text"]
        assert rb.killswitch.state_of(["global"]) is TradingState.ACTIVE
        assert rb.incidents.latest() is None
        assert len(await rb.venue("paper").open_orders()) == 24
        refused = rb.events.list(kinds=["SLACK_REFUSED"])
        assert [(e.actor, e.data["code"]) for e in refused] == [(OUTSIDER, "ROLE_REQUIRED")]
        assert top_level(slack) == []


async def test_same_slash_command_delivered_twice_opens_one_incident(
    slack: FakeSlack, tmp_path
) -> None:
    async with running(slack, bot_settings(tmp_path)) as server:
        d = await slack.deliver_slash_command("/kill", "twice", user_id=OPERATOR, channel_id=OPS)
        await slack.wait_for_ack(d.envelope_id)
        await slack.redeliver(d.envelope_id)
        await slack.wait_for_ack(d.envelope_id, count=2)
        await slack.wait_until(lambda: server.bot.tasks == set(), timeout=10)
        assert len(server.rb.incidents.list()) == 1
        assert len(server.rb.killswitch.holds.active()) == 1


async def test_positions_renders_the_paper_book(slack: FakeSlack, tmp_path) -> None:
    async with running(slack, bot_settings(tmp_path)) as _:
        d = await slack.deliver_slash_command("/positions", "", user_id=RISK, channel_id=OPS)
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(lambda: slack.ephemeral_to(RISK), timeout=5)
        shown = slack.ephemeral_to(RISK)[-1]
        text = " ".join(b["text"]["text"] for b in shown.blocks if b.get("text"))
        for symbol in ("AAPL", "MSFT", "TSLA", "JPM"):
            assert symbol in text
        assert "24 open orders" in text
        assert "exposure" in text


async def test_rollback_ends_flat_with_every_step_posted(slack: FakeSlack, tmp_path) -> None:
    async with running(slack, bot_settings(tmp_path)) as server:
        d = await slack.deliver_slash_command(
            "/rollback", "strategy misbehaving", user_id=OPERATOR, channel_id=OPS
        )
        await slack.wait_for_ack(d.envelope_id)
        # a person's rollback waits for a second person: the risk officer approves it
        await slack.wait_until(lambda: approval_buttons(slack, OPS), timeout=10)
        assert server.rb.incidents.latest() is None
        await click(slack, OPS, "approval_approve", RISK)

        rb = server.rb

        def headline_ts() -> str | None:
            incident = rb.incidents.latest()
            return incident.slack_ts if incident else None

        def finished() -> bool:
            ts = headline_ts()
            return bool(ts) and any("rollback: SUCCESS" in m.text for m in slack.thread(OPS, ts))

        await slack.wait_until(finished, timeout=15)
        assert await rb.venue("paper").positions() == []
        assert await rb.venue("paper").open_orders() == []
        thread = [m.text for m in slack.thread(OPS, headline_ts())]
        for n, name in (
            (1, "Immediate Halt"),
            (2, "Disconnect"),
            (3, "Assess Positions"),
            (4, "Flatten Positions"),
            (5, "Verify Recovery"),
        ):
            assert f"Step {n} {name}: SUCCESS" in thread
        assert rb.gates.read().shadow_active


async def test_rate_limited_post_is_retried_and_arrives_once(slack: FakeSlack, tmp_path) -> None:
    async with running(slack, bot_settings(tmp_path)) as server:
        slack.rate_limit_next(1, retry_after=0, method="chat.postMessage")
        d = await slack.deliver_slash_command(
            "/kill", "rate limited", user_id=OPERATOR, channel_id=OPS
        )
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(
            lambda: server.rb.outbox.pending() == [] and top_level(slack), timeout=10
        )
        # (the start-up probe posted, and deleted, one message before the kill)
        posts = slack.calls("chat.postMessage")[1:]
        assert posts[0].rate_limited
        assert len(top_level(slack)) == 1


async def test_web_api_down_during_kill_still_halts_and_posts_catch_up(
    slack: FakeSlack, tmp_path
) -> None:
    async with running(slack, bot_settings(tmp_path)) as server:
        rb = server.rb
        await slack.go_down()
        d = await slack.deliver_slash_command(
            "/kill", "slack is down", user_id=OPERATOR, channel_id=OPS
        )
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(
            lambda: rb.incidents.latest() is not None and rb.incidents.latest().phase == "DONE",
            timeout=10,
        )
        assert rb.killswitch.state_of(["global"]) is TradingState.HALTED
        assert await rb.venue("paper").open_orders() == []
        assert len(rb.outbox.pending()) >= 3  # headline and both steps, waiting
        await slack.come_back()
        await slack.wait_until(lambda: rb.outbox.pending() == [], timeout=20)
        heads = top_level(slack)
        assert len(heads) == 1
        steps = [m.text for m in slack.thread(OPS, heads[0].ts) if m.text.startswith("Step ")]
        assert steps == ["Step 1 Immediate Halt: SUCCESS", "Step 2 Disconnect: SUCCESS"]
