"""Never silently dropped (issue 16 item 2): the bot proves at start it can post in the ops
channel, a message Slack refuses makes /healthz unhealthy and raises a metric, and it is
delivered once the cause is fixed; the manifest asks for exactly the scopes the code uses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from fakes.rollbot_harness import OPERATOR, OPS, bot_settings, no_rollback_approval, running
from fakes.slack import BOT_SCOPES, METHOD_SCOPES, FakeSlack

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "rollbot"
NO_PUBLIC = ",".join(s for s in BOT_SCOPES.split(",") if s != "chat:write.public")


async def _get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, (
            await resp.json() if resp.content_type == "application/json" else await resp.text()
        )


async def test_a_bot_not_in_the_ops_channel_is_unhealthy_says_why_and_catches_up_when_invited(
    tmp_path: Path,
) -> None:
    async with (
        FakeSlack(scopes=NO_PUBLIC) as slack,
        running(slack, bot_settings(tmp_path), http=True) as server,
    ):
        # the start-up probe found it out and says what to do
        assert server.channel_problem and "not_in_channel" in server.channel_problem
        assert "invite @rollbot" in server.describe()
        base = f"http://127.0.0.1:{server.bound_port}"
        resp = await slack.http_slash_command(
            f"{base}/slack/events", "/kill", "fat finger", user_id=OPERATOR, channel_id=OPS
        )
        assert resp.status == 200
        rb = server.rb
        await slack.wait_until(lambda: rb.outbox.count_set_aside() > 0, timeout=10)
        status, body = await _get(f"{base}/healthz")
        assert status == 503 and body["ok"] is False
        assert any("invite @rollbot" in p for p in body["problems"])
        _, metrics = await _get(f"{base}/metrics")
        assert re.search(
            r'rollbot_slack_undeliverable_total\{error="not_in_channel"\} [1-9]', metrics
        )
        assert not slack.messages(OPS)
        refused = rb.events.list(kinds=["SLACK_UNDELIVERABLE"])
        assert refused and refused[0].data["error"] == "not_in_channel"

        slack.join(OPS)  # someone invites the bot
        server.bot.courier.retry_set_aside_s = 0.05
        server.bot.courier.kick()
        await slack.wait_until(
            lambda: rb.outbox.count_set_aside() == 0 and rb.outbox.pending() == [], timeout=10
        )
        head = slack.messages(OPS, include_replies=False)
        assert head and "fat finger" in head[0].text
        assert slack.thread(OPS, head[0].ts), "the incident's steps followed the headline"
        status, body = await _get(f"{base}/healthz")
        assert status == 200 and body["ok"] is True


async def test_a_quiet_bot_becomes_healthy_once_invited_without_any_traffic(
    tmp_path: Path,
) -> None:
    async with (
        FakeSlack(scopes=NO_PUBLIC) as slack,
        running(slack, bot_settings(tmp_path), http=True) as server,
    ):
        base = f"http://127.0.0.1:{server.bound_port}"
        status, body = await _get(f"{base}/healthz")
        assert status == 503 and "not_in_channel" in body["problems"][0]
        slack.join(OPS)
        server.bot.courier.retry_set_aside_s = 0.05
        server.bot.courier.kick()
        await slack.wait_until(lambda: server.bot.courier.channel_problem is None, timeout=10)
        status, body = await _get(f"{base}/healthz")
        assert status == 200 and body["ok"] is True
        assert not slack.messages(OPS)  # the probes deleted themselves


def methods_called() -> set[str]:
    """Every Web API method the code calls, from the slack_sdk calls in the source."""
    found = set()
    for path in SRC.rglob("*.py"):
        for name in re.findall(r"client\.([a-z]+_[A-Za-z0-9_]+)\(", path.read_text()):
            if name == "files_upload_v2":  # slack_sdk's two-step upload
                found |= {"files.getUploadURLExternal", "files.completeUploadExternal"}
            else:
                found.add(name.replace("_", ".", 1))
    return found


def test_the_manifest_asks_for_exactly_the_scopes_the_code_uses() -> None:
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    asked = set(manifest["oauth_config"]["scopes"]["bot"])
    called = methods_called()
    assert {"chat.postMessage", "chat.update", "views.publish"} <= called  # the scan sees
    needed = {METHOD_SCOPES[m] for m in called if m in METHOD_SCOPES}
    # slash commands, and posting in the ops channel before anyone invites the bot
    needed |= {"commands", "chat:write.public"}
    assert asked == needed


async def test_a_report_slack_refuses_tells_the_asker_what_to_do(tmp_path: Path) -> None:
    settings = no_rollback_approval(bot_settings(tmp_path))
    async with FakeSlack(scopes=NO_PUBLIC) as slack:
        slack.join(OPS)
        async with running(slack, settings) as server:
            rb = server.rb
            d = await slack.deliver_slash_command(
                "/rollback", "drill", user_id=OPERATOR, channel_id=OPS
            )
            await slack.wait_for_ack(d.envelope_id)
            await slack.wait_until(
                lambda: (
                    rb.incidents.latest()
                    and rb.incidents.latest().phase == "DONE"
                    and rb.outbox.pending() == []
                ),
                timeout=15,
            )
            slack.member_of.discard(OPS)  # someone removed the bot from the channel
            d = await slack.deliver_slash_command(
                "/rollback-report", "", user_id=OPERATOR, channel_id=OPS
            )
            await slack.wait_for_ack(d.envelope_id)
            said = await slack.wait_until(
                lambda: next((e for e in slack.ephemeral_to(OPERATOR) if "report" in e.text), None),
                timeout=10,
            )
            assert "not_in_channel" in said.text and "invite @rollbot" in said.text
            assert "Something went wrong" not in said.text
