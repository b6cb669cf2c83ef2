"""Reports, App Home, incidents, gates, channels and errors through the Slack face."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fakes.rollbot_harness import (
    OPERATOR,
    OPS,
    OUTSIDER,
    RISK,
    bot_settings,
    no_rollback_approval,
    running,
)
from fakes.slack import FakeSlack

from rollbot.config import SlackConfig


def _heads(slack: FakeSlack) -> list:
    return slack.messages(OPS, include_replies=False)


async def _rollback(slack: FakeSlack, server) -> str:
    d = await slack.deliver_slash_command(
        "/rollback", "drill from slack", user_id=OPERATOR, channel_id=OPS
    )
    await slack.wait_for_ack(d.envelope_id)

    def done() -> bool:
        inc = server.rb.incidents.latest()
        return inc is not None and inc.phase == "DONE" and server.rb.outbox.pending() == []

    await slack.wait_until(done, timeout=15)
    return server.rb.incidents.latest().id


async def test_rollback_report_is_block_kit_with_markdown_json_and_png_attached(
    slack: FakeSlack, tmp_path: Path
) -> None:
    """Issue 16 item 6: Slack shows GitHub Markdown as raw characters, so the report in the
    thread is Block Kit (header, fields, the steps as an aligned code block) and the Markdown,
    JSON and PNG are files, uploaded the way files_upload_v2 does."""
    async with running(slack, no_rollback_approval(bot_settings(tmp_path))) as server:
        incident = await _rollback(slack, server)
        d = await slack.deliver_slash_command(
            "/rollback-report", incident, user_id=RISK, channel_id=OPS
        )
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(
            lambda: len([u for u in slack.uploads() if u.completed]) == 3, timeout=10
        )
        names = sorted(u.filename for u in slack.uploads())
        assert names == [f"{incident}.json", f"{incident}.md", f"{incident}.png"]
        by_name = {u.filename: u for u in slack.uploads()}
        head_ts = _heads(slack)[0].ts
        assert all(u.thread_ts == head_ts and u.channels == [OPS] for u in by_name.values())
        assert slack.calls("files.getUploadURLExternal") and slack.calls(
            "files.completeUploadExternal"
        )
        log = json.loads(by_name[f"{incident}.json"].content)
        assert log["final_status"] == "SUCCESS" and len(log["steps"]) == 5
        assert by_name[f"{incident}.png"].content[:8] == b"\x89PNG\r\n\x1a\n"
        assert by_name[f"{incident}.md"].content.startswith(
            f"# Rollback report {incident}".encode()
        )

        thread = slack.thread(OPS, head_ts)
        card = next(m for m in thread if m.blocks and m.blocks[0]["type"] == "header")
        assert card.blocks[0]["text"]["text"] == f"Rollback report {incident}"
        fields = next(b for b in card.blocks if b.get("fields"))["fields"]
        assert any("Final status" in f["text"] and "SUCCESS" in f["text"] for f in fields)
        pnl = next(f["text"] for f in fields if f["text"].startswith("*PnL*")).splitlines()
        assert [line.split(": ")[0] for line in pnl[1:]] == [
            "PnL before the halt",
            "PnL during the rollback",
            "Final PnL",
        ]
        assert all(
            re.fullmatch(r"-?\d{1,3}(,\d{3})*\.\d\d USD", line.split(": ")[1]) for line in pnl[1:]
        )
        table = next(b["text"]["text"] for b in card.blocks if "```" in str(b.get("text")))
        rows = table.split("```")[1].strip("\n").splitlines()
        assert len(rows) == 6 and rows[0].startswith("#")  # a header row and five steps
        starts = {r.index("SUCCESS") for r in rows[1:]}
        assert len(starts) == 1  # the status column is aligned
        shown = json.dumps([m.blocks for m in thread]) + "".join(m.text for m in thread)
        for markdown in ("|---", "**", "- [ ]", "\n# ", "\n## "):
            assert markdown not in shown, markdown


async def test_unknown_incident_in_report_is_a_clear_ephemeral_message(
    slack: FakeSlack, tmp_path: Path
) -> None:
    async with running(slack, bot_settings(tmp_path)) as _:
        d = await slack.deliver_slash_command(
            "/rollback-report", "INC-0999", user_id=RISK, channel_id=OPS
        )
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(lambda: slack.ephemeral_to(RISK), timeout=5)
        assert "unknown incident 'INC-0999'" in slack.ephemeral_to(RISK)[-1].text


async def test_the_book_and_the_reports_are_for_the_desk_only(
    slack: FakeSlack, tmp_path: Path
) -> None:
    """Someone in the workspace with no rollbot role cannot read the book, post it in a channel
    or post a report in an incident's thread: refused by name, audited, nothing posted."""
    async with running(slack, no_rollback_approval(bot_settings(tmp_path))) as server:
        incident = await _rollback(slack, server)
        thread_before = len(slack.thread(OPS, _heads(slack)[0].ts))
        asked = (
            ("/positions", "public", "/positions"),
            ("/positions", "", "/positions"),
            ("/rollback-report", incident, "/rollback-report"),
            ("/incident", "list", "/incident list"),
            ("/incident", f"status {incident}", "/incident status"),
            ("/gates", "", "/gates status"),
        )
        for command, text, what in asked:
            before = len(slack.ephemeral_to(OUTSIDER))
            d = await slack.deliver_slash_command(command, text, user_id=OUTSIDER, channel_id=OPS)
            await slack.wait_for_ack(d.envelope_id)
            await slack.wait_until(lambda b=before: len(slack.ephemeral_to(OUTSIDER)) > b, 5)
            said = slack.ephemeral_to(OUTSIDER)[-1].text
            assert f"{what} needs the operator or risk_officer" in said, said
            assert "you have no rollbot role" in said
        refused = server.rb.events.list(kinds=["SLACK_REFUSED"])
        assert [(e.actor, e.data["code"]) for e in refused] == [(OUTSIDER, "ROLE_REQUIRED")] * len(
            asked
        )
        assert len(slack.thread(OPS, _heads(slack)[0].ts)) == thread_before
        assert slack.uploads() == []
        assert not any("AAPL" in (m.text or "") for m in slack.messages(OPS))

        for user in (OUTSIDER, RISK):
            await slack.deliver_event(
                {"type": "app_home_opened", "user": user, "tab": "home", "channel": "D0X"}
            )
            await slack.wait_until(lambda u=user: slack.home_view(u), timeout=5)
        closed = json.dumps(slack.home_view(OUTSIDER).view)
        assert "you have none of them" in closed
        assert incident not in closed and "HALTED" not in closed and "gates" not in closed
        assert incident in json.dumps(slack.home_view(RISK).view)


async def test_a_desk_may_show_the_book_to_its_risk_officers_only(
    slack: FakeSlack, tmp_path: Path
) -> None:
    settings = bot_settings(tmp_path)
    settings.slack = settings.slack.model_copy(update={"view_roles": ["risk_officer"]})
    async with running(slack, settings) as _:
        d = await slack.deliver_slash_command("/positions", "", user_id=OPERATOR, channel_id=OPS)
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(lambda: slack.ephemeral_to(OPERATOR), timeout=5)
        said = slack.ephemeral_to(OPERATOR)[-1].text
        assert "/positions needs the risk_officer role; you have operator" in said, said
        d = await slack.deliver_slash_command("/positions", "", user_id=RISK, channel_id=OPS)
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(lambda: slack.ephemeral_to(RISK), timeout=5)
        assert "AAPL" in json.dumps(slack.ephemeral_to(RISK)[-1].blocks)


async def test_bad_input_and_internal_errors_never_show_a_traceback(
    slack: FakeSlack, tmp_path: Path
) -> None:
    async with running(slack, bot_settings(tmp_path)) as server:
        d = await slack.deliver_slash_command("/kill", "", user_id=OPERATOR, channel_id=OPS)
        ack = await slack.wait_for_ack(d.envelope_id)
        assert "needs a reason" in ack.payload["text"]
        d = await slack.deliver_slash_command(
            "/positions", "nowhere", user_id=OPERATOR, channel_id=OPS
        )
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(lambda: slack.ephemeral_to(OPERATOR), timeout=5)
        assert "unknown venue 'nowhere'" in slack.ephemeral_to(OPERATOR)[-1].text

        # an unexpected failure deep inside a venue (a bug, not a domain error)
        paper = server.rb.venue("paper")

        async def broken() -> list:
            raise KeyError("internal detail that must not reach Slack")

        paper.positions = broken  # type: ignore[method-assign]
        d = await slack.deliver_slash_command("/positions", "", user_id=RISK, channel_id=OPS)
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(lambda: slack.ephemeral_to(RISK), timeout=5)
        text = slack.ephemeral_to(RISK)[-1].text
        assert "Something went wrong (ref" in text
        assert "Traceback" not in text and "internal detail" not in text
        for e in slack.ephemerals():
            assert "Traceback" not in (e.text or "")


async def test_app_home_shows_state_incidents_approvals_and_gates(
    slack: FakeSlack, tmp_path: Path
) -> None:
    async with running(slack, bot_settings(tmp_path)) as _:
        d = await slack.deliver_slash_command(
            "/kill", "home test", user_id=OPERATOR, channel_id=OPS
        )
        await slack.wait_for_ack(d.envelope_id)
        await slack.deliver_event(
            {"type": "app_home_opened", "user": RISK, "tab": "home", "channel": "D0RISK"}
        )
        await slack.wait_until(lambda: slack.home_view(RISK), timeout=5)
        home = json.dumps(slack.home_view(RISK).view)
        assert "HALTED" in home and "global" in home
        assert "INC-0001" in home
        assert "Pending approvals" in home
        assert "Live trading: DISABLED" in home


async def test_incident_list_close_and_gates(slack: FakeSlack, tmp_path: Path) -> None:
    async with running(slack, bot_settings(tmp_path)) as server:
        d = await slack.deliver_slash_command("/gates", "disable", user_id=OPERATOR, channel_id=OPS)
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(lambda: slack.ephemeral_to(OPERATOR), timeout=5)
        assert "Live trading: DISABLED" in slack.ephemeral_to(OPERATOR)[-1].text
        assert server.rb.events.list(kinds=["GATES_WRITTEN"])[0].actor == OPERATOR

        d = await slack.deliver_slash_command("/kill", "close me", user_id=OPERATOR, channel_id=OPS)
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(lambda: server.rb.incidents.latest().phase == "DONE", timeout=10)
        d = await slack.deliver_slash_command(
            "/incident", "close INC-0001 false alarm", user_id=RISK, channel_id=OPS
        )
        await slack.wait_for_ack(d.envelope_id)
        await slack.wait_until(lambda: not server.rb.incidents.latest().is_open, timeout=5)
        closed = server.rb.events.list(kinds=["INCIDENT_CLOSED"])
        assert [(e.actor, e.reason) for e in closed] == [(RISK, "false alarm")]


async def test_commands_from_other_channels_are_refused_and_audited(
    slack: FakeSlack, tmp_path: Path
) -> None:
    settings = bot_settings(tmp_path, slack=SlackConfig(ops_channel=OPS, allowed_channels=[OPS]))
    async with running(slack, settings) as server:
        d = await slack.deliver_slash_command(
            "/kill", "wrong room", user_id=OPERATOR, channel_id="C0RANDOM"
        )
        ack = await slack.wait_for_ack(d.envelope_id)
        assert "not allowed in this channel" in ack.payload["text"]
        assert server.rb.incidents.latest() is None
        refused = server.rb.events.list(kinds=["SLACK_REFUSED"])
        assert refused[0].data["code"] == "CHANNEL_NOT_ALLOWED"
