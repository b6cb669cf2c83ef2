"""Escalation and checklists through the Slack face: pages, the Acknowledge button, checkboxes."""

from __future__ import annotations

import json
from pathlib import Path

from fakes.rollbot_harness import OPERATOR, OPS, RISK, bot_settings, no_rollback_approval, running
from fakes.slack import FakeSlack

from rollbot.commands.rollback import checklist
from rollbot.config import Contact

DESK = "U0DESK"
CTO = "U0CTO"
CONTACTS = [
    Contact(name="Rita Risk", role="risk_officer", slack_id=RISK, phone="+1-555-0101"),
    Contact(name="Dan Desk", role="trading_desk_manager", slack_id=DESK),
    Contact(name="Cleo CTO", role="cto", slack_id=CTO),
]


async def test_kill_pages_tier_one_and_the_acknowledge_button_stops_it(
    slack: FakeSlack, tmp_path: Path
) -> None:
    async with running(slack, bot_settings(tmp_path, contacts=CONTACTS)) as server:
        rb = server.rb
        d = await slack.deliver_slash_command(
            "/kill", "page people", user_id=OPERATOR, channel_id=OPS
        )
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(
            lambda: rb.outbox.pending() == [] and slack.messages(slack.dm_channel(RISK)), timeout=10
        )
        # tier 1 (risk officer + desk manager) gets DMs; the CTO (tier 2) does not yet
        assert slack.messages(slack.dm_channel(RISK))
        assert slack.messages(slack.dm_channel(DESK))
        assert not slack.messages(slack.dm_channel(CTO))
        head = slack.messages(OPS, include_replies=False)[0]
        pings = [m for m in slack.thread(OPS, head.ts) if "Escalation tier 1" in m.text]
        assert pings and "+1-555-0101" in json.dumps(pings[0].blocks)
        button = next(
            e
            for b in pings[0].blocks
            if b["type"] == "actions"
            for e in b["elements"]
            if e["action_id"] == "escalation_ack"
        )

        await slack.deliver_block_action(
            slack.block_action_payload(
                "escalation_ack",
                button["value"],
                user_id=DESK,
                channel_id=OPS,
                message_ts=pings[0].ts,
            )
        )
        await slack.wait_until(
            lambda: any("acknowledged" in m.text.lower() for m in slack.thread(OPS, head.ts)),
            timeout=10,
        )
        esc = rb.db.one("SELECT status, acked_by FROM escalations")
        assert esc == {"status": "ACKED", "acked_by": DESK}
        await slack.wait_until(lambda: rb.outbox.pending() == [], timeout=10)
        headline = slack.message(OPS, head.ts).blocks[0]["text"]["text"]
        assert f"<@{DESK}>" in headline  # who is on it


async def test_checklist_checkboxes_record_who_ticked(slack: FakeSlack, tmp_path: Path) -> None:
    settings = no_rollback_approval(bot_settings(tmp_path, contacts=CONTACTS))
    async with running(slack, settings) as server:
        rb = server.rb
        d = await slack.deliver_slash_command(
            "/rollback", "checklist", user_id=OPERATOR, channel_id=OPS
        )
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(
            lambda: rb.incidents.latest() is not None and rb.incidents.latest().phase == "DONE",
            timeout=15,
        )
        incident = rb.incidents.latest().id
        checklist.open_checklist(rb, incident)
        server.bot.courier.kick()
        await slack.wait_until(lambda: rb.outbox.pending() == [], timeout=10)
        head = slack.messages(OPS, include_replies=False)[0]
        msg = next(
            m
            for m in slack.thread(OPS, head.ts)
            if "checklist" in m.text.lower() and any(b["type"] == "actions" for b in m.blocks or [])
        )
        group = next(e for b in msg.blocks if b["type"] == "actions" for e in b["elements"])
        first = group["options"][0]
        payload = slack.block_action_payload(
            "x",
            None,
            user_id=RISK,
            channel_id=OPS,
            message_ts=msg.ts,
            message={"blocks": msg.blocks},
        )
        payload["actions"] = [
            {
                "type": "checkboxes",
                "action_id": group["action_id"],
                "block_id": "b",
                "selected_options": [first],
                "action_ts": "1.0",
            }
        ]
        await slack.deliver_block_action(payload)
        await slack.wait_until(
            lambda: any(i.done for i in checklist.items(rb, incident)), timeout=10
        )
        done = [i for i in checklist.items(rb, incident) if i.done]
        assert [(i.item, i.ticked_by) for i in done] == [(first["value"].split("|")[1], RISK)]
