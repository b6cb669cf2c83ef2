"""The two-person rule through the Slack face: buttons only present
commands/approvals/two_person.py."""

from __future__ import annotations

import json
from pathlib import Path

from fakes.rollbot_harness import (
    OPERATOR,
    OPS,
    OUTSIDER,
    RISK,
    approval_buttons,
    bot_settings,
    click,
    running,
)
from fakes.slack import FakeSlack

from rollbot.brokers.base import VenueEvent, VenueEventKind
from rollbot.commands.risk.monitors import Monitor
from rollbot.commands.rollback.report import build_log


def _copies_text(slack: FakeSlack) -> str:
    return json.dumps([m.blocks for m in slack.messages(OPS)])


async def test_flatten_request_shows_every_order_and_the_requester_cannot_approve_it(
    slack: FakeSlack, tmp_path: Path
) -> None:
    async with running(slack, bot_settings(tmp_path)) as server:
        rb = server.rb
        d = await slack.deliver_slash_command("/flatten", "paper", user_id=OPERATOR, channel_id=OPS)
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(
            lambda: approval_buttons(slack, OPS) and rb.outbox.pending() == [], timeout=10
        )
        shown = _copies_text(slack)
        for line in ("SELL 400 AAPL LIMIT", "BUY 150 MSFT LIMIT", "BUY 300 TSLA LIMIT"):
            assert line in shown
        # a DM copy went to the risk officer (an eligible approver), none to the requester
        assert slack.messages(slack.dm_channel(RISK))
        assert not slack.messages(slack.dm_channel(OPERATOR))

        await click(slack, OPS, "approval_approve", OPERATOR)  # self-approval
        await click(slack, OPS, "approval_approve", OUTSIDER)  # no role
        await slack.wait_until(
            lambda: len(rb.events.list(kinds=["APPROVAL_REFUSED"])) == 2, timeout=10
        )
        codes = sorted(e.data.get("code") for e in rb.events.list(kinds=["APPROVAL_REFUSED"]))
        assert codes == ["ROLE_NOT_ALLOWED", "SELF_APPROVAL"]
        await slack.wait_until(
            lambda: any("Not counted" in e.text for e in slack.ephemeral_to(OPERATOR)), timeout=5
        )
        assert len(await rb.venue("paper").positions()) == 9  # nothing ran

        await click(slack, OPS, "approval_approve", RISK)
        await slack.wait_until(
            lambda: rb.db.one("SELECT status FROM approvals")["status"] == "EXECUTED", timeout=15
        )
        assert await rb.venue("paper").positions() == []
        await slack.wait_until(lambda: rb.outbox.pending() == [], timeout=10)
        # every posted copy (channel and DM) now says APPROVED, with who
        for channel in (OPS, slack.dm_channel(RISK)):
            copy = slack.messages(channel, include_replies=False)[0]
            text = json.dumps(copy.blocks)
            assert "APPROVED" in text and RISK in text
            assert "approval_approve" not in text  # the buttons are gone


async def test_deny_is_final_and_every_copy_says_so(slack: FakeSlack, tmp_path: Path) -> None:
    async with running(slack, bot_settings(tmp_path)) as server:
        rb = server.rb
        d = await slack.deliver_slash_command(
            "/rollback", "not sure", user_id=OPERATOR, channel_id=OPS
        )
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(lambda: approval_buttons(slack, OPS), timeout=10)
        await click(slack, OPS, "approval_deny", RISK)
        await slack.wait_until(
            lambda: rb.db.one("SELECT status FROM approvals")["status"] == "DENIED", timeout=10
        )
        await slack.deliver_block_action(
            slack.block_action_payload("approval_approve", "APR-0001", user_id=RISK, channel_id=OPS)
        )
        await slack.wait_until(
            lambda: any(
                e.data.get("code") == "ALREADY_DECIDED"
                for e in rb.events.list(kinds=["APPROVAL_REFUSED"])
            ),
            timeout=10,
        )
        assert rb.incidents.latest() is None
        await slack.wait_until(lambda: rb.outbox.pending() == [], timeout=10)
        assert "DENIED" in json.dumps(slack.messages(OPS, include_replies=False)[0].blocks)


async def test_roll_back_now_from_a_risk_alert_goes_through_approval_with_its_trigger(
    slack: FakeSlack, tmp_path: Path
) -> None:
    async with running(slack, bot_settings(tmp_path)) as server:
        rb = server.rb
        for _ in range(12):  # a pacing burst (IB error 100): an alert-only trigger
            rb.venue_events.append(
                VenueEvent(venue="paper", kind=VenueEventKind.PACING, code="100", at=rb.clock.now())
            )
        report = await Monitor(rb).tick()
        assert [f.trigger for f in report.fired] == ["pacing_violations"]
        server.bot.courier.kick()

        def alert_button() -> dict | None:
            for m in slack.messages(OPS):
                for b in m.blocks or []:
                    for e in b.get("elements") or []:
                        if e.get("action_id") == "risk_rollback":
                            return {"ts": m.ts, **e}
            return None

        await slack.wait_until(alert_button, timeout=10)
        button = alert_button()
        await slack.deliver_block_action(
            slack.block_action_payload(
                "risk_rollback",
                button["value"],
                user_id=OPERATOR,
                channel_id=OPS,
                message_ts=button["ts"],
            )
        )
        await slack.wait_until(lambda: approval_buttons(slack, OPS), timeout=10)
        assert rb.incidents.latest() is None  # a person's rollback waits for a second person
        await click(slack, OPS, "approval_approve", RISK)
        await slack.wait_until(
            lambda: rb.incidents.latest() is not None and rb.incidents.latest().phase == "DONE",
            timeout=15,
        )
        log = build_log(rb, rb.incidents.latest())
        assert log.trigger == "pacing_violations"
        assert log.trigger_value == 12 and log.trigger_threshold == 10
        assert log.final_status == "SUCCESS"


async def test_resume_is_refused_naming_each_missing_condition(
    slack: FakeSlack, tmp_path: Path
) -> None:
    async with running(slack, bot_settings(tmp_path)) as server:
        rb = server.rb
        d = await slack.deliver_slash_command("/kill", "stop", user_id=OPERATOR, channel_id=OPS)
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(lambda: rb.incidents.latest().phase == "DONE", timeout=10)
        d = await slack.deliver_slash_command(
            "/resume", "INC-0001 fixed it", user_id=RISK, channel_id=OPS
        )
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(lambda: slack.ephemeral_to(RISK), timeout=10)
        text = slack.ephemeral_to(RISK)[-1].text
        assert "refused" in text
        for condition in ("24", "root-cause", "drill"):
            assert condition in text.lower()
        assert rb.db.one("SELECT COUNT(*) AS n FROM approvals")["n"] == 0
        assert not rb.gates.read().live_allowed


async def test_a_sign_off_from_each_required_role_and_the_card_says_who_is_missing(
    slack: FakeSlack, tmp_path: Path
) -> None:
    from rollbot.config import ApprovalRule

    risk2, cto = "U0RISK2", "U0CTO"
    base = bot_settings(tmp_path)
    approvals = base.approvals.model_copy(
        update={"flatten": ApprovalRule(roles=["risk_officer"], all_of=["risk_officer", "cto"])}
    )
    roles = {**base.roles, "risk_officer": [RISK, risk2], "cto": [cto]}
    settings = base.model_copy(update={"approvals": approvals, "roles": roles})
    async with running(slack, settings) as server:
        rb = server.rb
        d = await slack.deliver_slash_command("/flatten", "paper", user_id=OPERATOR, channel_id=OPS)
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(
            lambda: approval_buttons(slack, OPS) and rb.outbox.pending() == [], timeout=10
        )
        assert "Still needed: risk officer, cto." in _copies_text(slack)

        for voter, left in ((RISK, "cto"), (risk2, "cto")):
            await click(slack, OPS, "approval_approve", voter)
            await slack.wait_until(
                lambda v=voter: any(
                    e.data.get("voter") == v for e in rb.events.list(kinds=["APPROVAL_VOTE"])
                ),
                timeout=10,
            )
            await slack.wait_until(lambda: rb.outbox.pending() == [], timeout=10)
            shown = _copies_text(slack)
            assert f"Still needed: {left}." in shown and RISK in shown
            assert rb.db.one("SELECT status FROM approvals")["status"] == "PENDING"
        assert len(await rb.venue("paper").positions()) == 9  # two risk officers are not a CTO

        await click(slack, OPS, "approval_approve", cto)
        await slack.wait_until(
            lambda: rb.db.one("SELECT status FROM approvals")["status"] == "EXECUTED", timeout=15
        )
        assert await rb.venue("paper").positions() == []
