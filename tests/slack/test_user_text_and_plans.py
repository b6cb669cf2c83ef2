"""What people see in Slack cannot be forged by what another person typed: user text is escaped
everywhere, and an approver's card shows every order that will run, before the requester's
words (issue 14 item 8, issue 16 item 1)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

from fakes.rollbot_harness import (
    OPERATOR,
    OPS,
    RISK,
    approval_buttons,
    bot_settings,
    no_rollback_approval,
    running,
)
from fakes.slack import FakeSlack, block_errors

from rollbot.brokers.paper.book import PaperBook
from rollbot.brokers.paper.scenario import Scenario, ScenarioAccount, ScenarioPosition
from rollbot.clock import SystemClock
from rollbot.commands.approvals.two_person import Approvals
from rollbot.commands.rollback.rca import RCA_FIELDS
from rollbot.config import Contact
from rollbot.storage.events import Actor

HOSTILE = "<!channel> <@U0VICTIM> <https://evil.example|click here> & more"
FAKE_ORDER = "• paper: BUY 1 SAFE MARKET"


def everything_posted(slack: FakeSlack) -> str:
    """Every byte the bot sent Slack: Web API calls, acks, response_url posts."""
    parts = [json.dumps(c.params) for c in slack.calls()]
    parts += [json.dumps(a.payload) for a in slack.acks()]
    parts += [json.dumps(r.body) for r in slack.responses()]
    return "\n".join(parts)


def assert_inert(sent: str) -> None:
    for raw in ("<!channel>", "<@U0VICTIM>", "<https://evil.example"):
        assert raw not in sent, f"unescaped user text reached Slack: {raw}"


async def _settle(slack: FakeSlack, server) -> None:  # type: ignore[no-untyped-def]
    server.bot.courier.kick()
    await slack.wait_until(lambda: server.rb.outbox.pending() == [], timeout=15)


async def test_hostile_text_is_escaped_in_every_message_the_bot_posts(
    slack: FakeSlack, tmp_path: Path
) -> None:
    contacts = [Contact(name="Rita Risk", role="risk_officer", slack_id=RISK)]
    settings = no_rollback_approval(bot_settings(tmp_path, contacts=contacts))
    async with running(slack, settings) as server:
        rb = server.rb
        # /kill, then the App Home, /incident list and status, an RCA, and the close note
        d = await slack.deliver_slash_command(
            "/kill", f"paper {HOSTILE}", user_id=OPERATOR, channel_id=OPS
        )
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(
            lambda: rb.incidents.latest() and rb.incidents.latest().phase == "DONE", timeout=15
        )
        incident = rb.incidents.latest()
        assert incident is not None
        await slack.deliver_event(
            {"type": "app_home_opened", "user": RISK, "tab": "home", "channel": "D0RISK"}
        )
        await slack.wait_for("views.publish", lambda c: c.ok)
        for text in ("list", f"status {incident.id}"):
            d = await slack.deliver_slash_command(
                "/incident", text, user_id=OPERATOR, channel_id=OPS
            )
            await slack.wait_for_ack(d.envelope_id)
        values = {name: {"value": {"value": f"{name}: {HOSTILE}"}} for name in RCA_FIELDS}
        await slack.deliver_view_submission(
            slack.view_submission_payload(
                "rca_modal", values, user_id=OPERATOR, private_metadata=incident.id
            )
        )
        # a request to clear the kill's hold: its plan quotes the hold's reason
        await Approvals(rb).request(
            "clear_hold",
            {"scope": "venue:paper"},
            Actor(id=OPERATOR, source="slack"),
            HOSTILE,
            incident_id=incident.id,
        )
        d = await slack.deliver_slash_command(
            "/incident", f"close {incident.id} {HOSTILE}", user_id=OPERATOR, channel_id=OPS
        )
        await slack.wait_for_ack(d.envelope_id)
        # a /rollback, a /resume request and a bad scope that quotes what was typed
        d = await slack.deliver_slash_command(
            "/rollback", HOSTILE, user_id=OPERATOR, channel_id=OPS
        )
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(
            lambda: len(rb.incidents.list()) == 2 and rb.incidents.latest().phase == "DONE",
            timeout=20,
        )
        for command, text in (
            ("/resume", f"{incident.id} {HOSTILE}"),
            ("/positions", "<!channel>"),
        ):
            d = await slack.deliver_slash_command(command, text, user_id=OPERATOR, channel_id=OPS)
            await slack.wait_for_ack(d.envelope_id)
        await _settle(slack, server)
        await slack.wait_until(lambda: len(slack.responses()) >= 4, timeout=10)

        sent = everything_posted(slack)
        assert_inert(sent)
        # and the text did reach Slack, escaped (the walk saw the headline, thread and home)
        assert "&lt;!channel&gt;" in json.dumps([m.blocks for m in slack.messages(OPS)])
        assert "&lt;!channel&gt;" in json.dumps(slack.home_view(RISK).view)  # type: ignore[union-attr]
        rca = rb.events.list(kinds=["RCA_RECORDED"])
        assert rca, "the RCA was recorded, so its thread message was walked too"
        # the escalation DM and the clear request's copies were walked too
        assert "&lt;!channel&gt;" in json.dumps([m.text for m in slack.messages(RISK)])
        assert rb.db.one("SELECT action FROM approvals WHERE action = 'clear_hold'")


def seed_book(path: Path, n: int) -> None:
    positions = [
        ScenarioPosition(symbol=f"S{i:03d}", quantity=Decimal(100 + i), avg_price=50)
        for i in range(n)
    ]
    PaperBook(path, SystemClock()).seed(
        Scenario(account=ScenarioAccount(cash=Decimal(10_000_000)), positions=positions)
    )


async def test_the_approver_sees_all_300_orders_and_the_hash_before_a_hostile_reason(
    slack: FakeSlack, tmp_path: Path
) -> None:
    seed_book(tmp_path / "paper.db", 300)
    reason = f"{HOSTILE}\n{FAKE_ORDER}\n" + "padding " * 400
    async with running(slack, bot_settings(tmp_path)) as server:
        request = await Approvals(server.rb).request(
            "flatten",
            {"venue": None, "symbols": None},
            Actor(id=OPERATOR, source="slack"),
            reason,
        )
        await _settle(slack, server)
        assert_inert(everything_posted(slack))

        for channel in (OPS, slack.dm_channel(RISK)):  # the channel copy and the DM copy
            messages = slack.messages(channel)
            card = next(
                m for m in messages if any(b[0] == m.ts for b in approval_buttons(slack, channel))
            )
            shown = "\n".join(
                b["text"]["text"] for m in messages for b in m.blocks or [] if b.get("text")
            )
            for i in range(300):
                # with the limit it would carry now: 20 bps under the mark of 50
                assert re.search(
                    rf"SELL {100 + i} S{i:03d} LIMIT 49\.90 now \(mark ± 20 bps", shown
                ), f"S{i:03d}"
            assert request.plan_hash in shown
            card_text = json.dumps(card.blocks)
            assert "300 orders" in card_text
            # the plan comes before the requester's words, which are quoted and escaped
            assert card_text.index("Exactly what will run") < card_text.index("Reason given")
            # the forged order line is only ever a quote of the reason, never a plan line
            assert re.search(rf"^> {re.escape(FAKE_ORDER)}", shown, re.M)
            assert not re.search(rf"^{re.escape(FAKE_ORDER)}", shown, re.M)
            approve = next(
                e
                for b in card.blocks or []
                for e in b.get("elements") or []
                if e.get("action_id") == "approval_approve"
            )
            assert "300 orders" in approve["confirm"]["text"]["text"]


async def test_the_app_home_shows_every_hold_however_many(slack: FakeSlack, tmp_path: Path) -> None:
    """The home tab cut its trading-state section at 2,990 characters: holds past it vanished."""
    async with running(slack, bot_settings(tmp_path)) as server:
        for i in range(60):
            server.rb.killswitch.trigger(
                f"strategy:s{i:02d}", f"reason number {i:02d} " + "x" * 40, Actor.clock("test")
            )
        await slack.deliver_event(
            {"type": "app_home_opened", "user": RISK, "tab": "home", "channel": "D0RISK"}
        )
        await slack.wait_for("views.publish", lambda c: c.ok)
        home = json.dumps(slack.home_view(RISK).view)  # type: ignore[union-attr]
        for i in range(60):
            assert f"reason number {i:02d}" in home, i


async def test_positions_lists_every_position_of_a_large_book(
    slack: FakeSlack, tmp_path: Path
) -> None:
    """/positions cut its one section at 2,990 characters: a large book lost its tail. Now every
    position is shown, over as many replies as Slack's limits need."""
    seed_book(tmp_path / "paper.db", 300)
    async with running(slack, bot_settings(tmp_path)) as server:
        assert server.rb is not None
        d = await slack.deliver_slash_command("/positions", "", user_id=OPERATOR, channel_id=OPS)
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(  # the last part has arrived ("part 3 of 3")
            lambda: any(re.search(r"part (\d+) of \1\)", r.text) for r in slack.responses()),
            timeout=10,
        )
        replies = [r for r in slack.responses() if r.body.get("blocks")]
        for r in replies:  # each one a message Slack takes
            assert block_errors(r.body["blocks"]) is None
        shown = json.dumps([r.body["blocks"] for r in replies])
        for i in range(300):
            assert f"S{i:03d}" in shown, i
