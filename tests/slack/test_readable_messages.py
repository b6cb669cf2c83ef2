"""Honest, readable messages (issue 16 item 5): the headline says what trading is, times are
Slack date tokens, requests show their expiry, a losing click names who won, the first page is
round 1, contact lines have no dangling dashes, and Approve asks for confirmation."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fakes.rollbot_harness import (
    OPERATOR,
    OPS,
    RISK,
    approval_buttons,
    bot_settings,
    click,
    running,
)
from fakes.slack import FakeSlack

from rollbot.config import Contact

RISK2 = "U0RISKTWO"
DATE_TOKEN = re.compile(r"<!date\^\d+\^\{date_short_pretty\} \{time_secs\}\|[^>]+>")


def texts(blocks: list[dict] | None) -> str:  # type: ignore[type-arg]
    return "\n".join(
        str((b.get("text") or {}).get("text", "")) for b in blocks or [] if isinstance(b, dict)
    )


async def test_the_kill_headline_says_halted_with_local_times_and_the_first_page_is_round_one(
    slack: FakeSlack, tmp_path: Path
) -> None:
    contacts = [Contact(name="Rita Risk", role="risk_officer", slack_id=RISK, email="")]
    async with running(slack, bot_settings(tmp_path, contacts=contacts)) as server:
        rb = server.rb
        d = await slack.deliver_slash_command("/kill", "runaway", user_id=OPERATOR, channel_id=OPS)
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(
            lambda: rb.incidents.latest() and rb.incidents.latest().phase == "DONE", timeout=15
        )
        server.bot.courier.kick()
        await slack.wait_until(lambda: rb.outbox.pending() == [], timeout=10)

        head = slack.messages(OPS, include_replies=False)[0]
        title = texts(head.blocks).splitlines()[0]
        assert title.startswith("🔴") and "✅" not in title  # the kill succeeded; trading HALTED
        assert "HALTED" in texts(head.blocks) and "HALTED" in head.text
        assert DATE_TOKEN.search(texts(head.blocks))

        page = next(m for m in slack.thread(OPS, head.ts) if "Escalation tier 1" in m.text)
        shown = texts(page.blocks)
        assert "Round 1 of 3" in shown and "round 2" not in shown.lower()
        assert "• Rita Risk — risk officer" in shown
        assert not re.search(r"—\s*(—|$)", shown, re.M), shown  # no dangling dashes

        # acknowledged: the thread says when as a date token, never as raw ISO UTC
        await slack.deliver_block_action(
            slack.block_action_payload(
                "escalation_ack",
                rb.incidents.latest().id,
                user_id=RISK,
                channel_id=OPS,
                message_ts=page.ts,
            )
        )
        ack = await slack.wait_until(
            lambda: next((m for m in slack.thread(OPS, head.ts) if "Acknowledged" in m.text), None),
            timeout=10,
        )
        assert DATE_TOKEN.search(texts(ack.blocks))
        assert not re.search(r"\d{4}-\d{2}-\d{2}T\d{2}:", texts(ack.blocks))


async def test_a_request_shows_its_expiry_approve_confirms_and_a_late_click_names_the_winner(
    slack: FakeSlack, tmp_path: Path
) -> None:
    settings = bot_settings(tmp_path, roles={"operator": [OPERATOR], "risk_officer": [RISK, RISK2]})
    async with running(slack, settings) as server:
        rb = server.rb
        d = await slack.deliver_slash_command("/flatten", "paper", user_id=OPERATOR, channel_id=OPS)
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(lambda: approval_buttons(slack, OPS), timeout=10)
        posted = await slack.wait_until(
            lambda: next((r for r in slack.responses() if "Request `APR" in r.text), None)
        )
        assert "expires" in posted.text and DATE_TOKEN.search(posted.text)
        card = slack.messages(OPS, include_replies=False)[0]
        assert re.search(r"Expires <!date\^", texts(card.blocks))
        approve = next(
            b for _, b in approval_buttons(slack, OPS) if b["action_id"].endswith("approve")
        )
        assert approve["confirm"]["confirm"]["text"] == "Approve"
        assert "order" in approve["confirm"]["text"]["text"]

        await click(slack, OPS, "approval_approve", RISK)
        await slack.wait_until(
            lambda: rb.db.one("SELECT status FROM approvals")["status"] != "PENDING", timeout=10
        )
        await slack.deliver_block_action(
            slack.block_action_payload(
                "approval_approve", "APR-0001", user_id=RISK2, channel_id=OPS, message_ts=card.ts
            )
        )
        late = await slack.wait_until(
            lambda: next((e for e in slack.ephemeral_to(RISK2) if "Not counted" in e.text), None),
            timeout=10,
        )
        assert f"<@{RISK}> approved `APR-0001` first" in late.text
        assert f"<@{RISK2}>" not in late.text
        assert json.dumps(card.blocks)  # the card itself was walked above
