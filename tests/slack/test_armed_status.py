"""Armed status through the Slack face (issue 17): a refused token and an unreachable contact
fail their checks; /healthz turns unhealthy (503), the Prometheus gauge drops to 0, the App
Home shows a red banner and the ops channel gets one alert; all of it recovers once fixed."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
from fakes.rollbot_harness import OPS, RISK, bot_settings, running
from fakes.slack import BOT_SCOPES, FakeSlack

from rollbot.bot.slack.probe import slack_probe
from rollbot.commands.risk import preflight


async def _health(port: int) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz") as resp:
            status, body = resp.status, await resp.json()
        async with session.get(f"{base}/metrics") as resp:
            metrics = await resp.text()
    return status, body, metrics


async def _home(slack: FakeSlack, port: int, user: str) -> str:
    before = slack.home_view(user)
    version = json.dumps(before.view) if before else None
    url = f"http://127.0.0.1:{port}/slack/events"
    await slack.http_event(url, {"type": "app_home_opened", "user": user, "tab": "home"})
    await slack.wait_until(
        lambda: slack.home_view(user) and json.dumps(slack.home_view(user).view) != version,
        timeout=5,
    )
    return json.dumps(slack.home_view(user).view)


async def test_refused_token_and_missing_contact_fail_then_recover(
    slack: FakeSlack, tmp_path: Path
) -> None:
    slack.add_user(RISK, "rita")
    settings = bot_settings(tmp_path)
    roles = {**settings.roles, "cto": ["U0GONE"]}  # a contact Slack does not know
    async with running(slack, settings.model_copy(update={"roles": roles}), http=True) as server:
        rb, client = server.rb, server.bot.client
        probe = slack_probe(rb, client)
        rb.gates.disable(preflight.PREFLIGHT, "safe state")

        checks = {c.name: c for c in await preflight.preflight(rb, probe)}
        assert checks["slack_token"].ok
        contacts = checks["slack_contacts"]
        assert not contacts.ok and "cto U0GONE: user_not_found" in contacts.reason

        slack.accepted_tokens.discard(slack.bot_token)  # the token is revoked
        checks = {c.name: c for c in await preflight.preflight(rb, probe)}
        token = checks["slack_token"]
        assert not token.ok and "SLACK_BOT_TOKEN refused by Slack: invalid_auth" in token.reason
        status, body, metrics = await _health(server.bound_port)
        assert status == 503 and body["ok"] is False
        assert "invalid_auth" in body["armed_failing"]["slack_token"]
        assert 'rollbot_armed_check{check="slack_token"} 0.0' in metrics
        assert 'rollbot_armed_check{check="venue:paper"} 1.0' in metrics

        slack.accepted_tokens.add(slack.bot_token)
        slack.add_user("U0GONE", "carol")
        home = await _home(slack, server.bound_port, RISK)
        assert "The kill path is not fully armed" in home and "invalid_auth" in home

        checks = {c.name: c for c in await preflight.preflight(rb, probe)}
        assert checks["slack_token"].ok and checks["slack_contacts"].ok
        status, body, metrics = await _health(server.bound_port)
        failing = set(body["armed_failing"])
        assert "slack_token" not in failing and "slack_contacts" not in failing
        assert 'rollbot_armed_check{check="slack_token"} 1.0' in metrics
        home = await _home(slack, server.bound_port, RISK)
        assert "invalid_auth" not in home

        await slack.wait_until(
            lambda: any("contacts passes again" in (m.text or "") for m in slack.messages(OPS)),
            timeout=10,
        )
        texts = [m.text or "" for m in slack.messages(OPS)]
        assert sum("slack_token FAILED" in t for t in texts) == 1
        assert sum("slack_contacts FAILED" in t for t in texts) == 1
        assert sum("slack_contacts passes again" in t for t in texts) == 1


async def test_bot_not_in_the_ops_channel_fails_until_invited(tmp_path: Path) -> None:
    """Without chat:write.public the bot posts only where it is a member: the courier sets the
    ops channel's messages aside with not_in_channel, and the armed status says to invite it."""
    no_public = ",".join(s for s in BOT_SCOPES.split(",") if s != "chat:write.public")
    async with (
        FakeSlack(scopes=no_public) as slack,
        running(slack, bot_settings(tmp_path), http=True) as server,
    ):
        slack.add_user(RISK, "rita")
        rb, client, port = server.rb, server.bot.client, server.bound_port
        probe = slack_probe(rb, client)
        rb.outbox.put("channel", text="a desk note")
        server.bot.courier.kick()
        await slack.wait_until(lambda: rb.outbox.count_set_aside() > 0, timeout=10)

        checks = {c.name: c for c in await preflight.preflight(rb, probe)}
        channel = checks["slack_ops_channel"]
        assert not channel.ok and f"posting in {OPS} fails: not_in_channel" in channel.reason
        assert channel.action == f"invite the bot: /invite @rollbot in {OPS}"
        status, body, metrics = await _health(port)
        assert status == 503 and body["ok"] is False
        assert "not_in_channel" in body["armed_failing"]["slack_ops_channel"]
        assert 'rollbot_armed_check{check="slack_ops_channel"} 0.0' in metrics
        home = await _home(slack, port, RISK)
        assert "The kill path is not fully armed" in home
        assert "slack_ops_channel" in home and "not_in_channel" in home
        assert not slack.messages(OPS)  # nothing got through, the alert included

        slack.join(OPS)  # someone invites the bot; the courier retries what it set aside
        server.bot.courier.retry_set_aside_s = 0.05
        server.bot.courier.kick()
        await slack.wait_until(
            lambda: rb.outbox.count_set_aside() == 0 and rb.outbox.pending() == [], timeout=10
        )
        checks = {c.name: c for c in await preflight.preflight(rb, probe)}
        assert checks["slack_ops_channel"].ok
        status, body, metrics = await _health(port)
        assert "slack_ops_channel" not in body["armed_failing"]
        assert 'rollbot_armed_check{check="slack_ops_channel"} 1.0' in metrics
        home = await _home(slack, port, RISK)
        assert "not_in_channel" not in home
        server.bot.courier.kick()
        await slack.wait_until(
            lambda: any("ops_channel passes again" in (m.text or "") for m in slack.messages(OPS)),
            timeout=10,
        )
        texts = [m.text or "" for m in slack.messages(OPS)]
        assert "a desk note" in texts  # delivered late, not lost
        assert sum("slack_ops_channel FAILED: posting in" in t for t in texts) == 1
        assert sum("slack_ops_channel passes again" in t for t in texts) == 1
