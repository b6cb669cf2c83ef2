"""The Slack half of the armed status (commands/risk/preflight.py): the token, the ops channel and
the people the escalation would page. Only reads: nothing is posted to prove a post would work;
the ops channel is judged by what the courier last saw when it posted there."""

from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.risk.preflight import Check, SlackProbe, failed, passed


def _error(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error", "refused"))
    return f"{type(exc).__name__}: {exc}"


def tier_contacts(app: Rollbot) -> dict[str, str]:
    """Slack user id -> who, for every person an escalation tier would page."""
    settings = app.settings
    roles = {r for tier in settings.escalation.tiers for r in tier.roles}
    people = {uid: f"{role} {uid}" for role in roles for uid in settings.roles.get(role, [])}
    for c in settings.contacts:
        if c.role in roles and c.slack_id:
            people[c.slack_id] = f"{c.name} ({c.role})"
    return people


def ops_channel_check(app: Rollbot) -> Check:
    channel = app.settings.slack.ops_channel
    if not channel:
        return failed(
            "slack_ops_channel",
            "[slack] ops_channel is not set: incidents would have nowhere to go",
            "set [slack] ops_channel in rollbot.toml to the channel's ID",
        )
    aside = app.outbox.set_aside_list(limit=1)  # what the courier could not deliver
    if aside:
        error = aside[0].last_error or "refused"
        action = (
            f"invite the bot: /invite @rollbot in {channel}"
            if "not_in_channel" in error
            else "check [slack] ops_channel and the bot's scopes"
        )
        return failed("slack_ops_channel", f"posting in {channel} fails: {error}", action)
    return passed("slack_ops_channel", f"nothing waits undelivered for {channel}")


def slack_probe(app: Rollbot, client: AsyncWebClient) -> SlackProbe:
    async def probe() -> list[Check]:
        try:
            auth: Any = await client.auth_test()
        except Exception as exc:
            return [
                failed(
                    "slack_token",
                    f"SLACK_BOT_TOKEN refused by Slack: {_error(exc)}",
                    "reinstall the app and set SLACK_BOT_TOKEN to its bot token (xoxb-…)",
                )
            ]
        checks = [passed("slack_token", f"valid for {auth.get('user')} in {auth.get('team')}")]
        checks.append(ops_channel_check(app))
        unreachable = []
        for uid, who in tier_contacts(app).items():
            try:
                user: Any = await client.users_info(user=uid)
                if user["user"].get("deleted"):
                    unreachable.append(f"{who}: deactivated")
            except Exception as exc:
                unreachable.append(f"{who}: {_error(exc)}")
        if unreachable:
            checks.append(
                failed(
                    "slack_contacts",
                    "cannot be paged in Slack: " + "; ".join(unreachable),
                    "fix their Slack user IDs under [roles] / [[contacts]]",
                )
            )
        else:
            checks.append(passed("slack_contacts", "every escalation contact found in Slack"))
        return checks

    return probe
