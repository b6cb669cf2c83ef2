"""A real rollbot Server (slack-bolt, courier, paper venue, SQLite) against the loopback Slack:
settings, secrets and a context manager for tests of the Slack face."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pg_server import database_config

from fakes.slack import FakeSlack
from rollbot.bot.slack.server import Server
from rollbot.brokers.paper.venue import PaperVenue
from rollbot.clock import Clock
from rollbot.config import (
    FlattenConfig,
    PaperVenueConfig,
    PathsConfig,
    Secrets,
    Settings,
    SlackConfig,
)

OPS = "C0OPS"
OPERATOR = "U0OPERATOR"
RISK = "U0RISK"
OUTSIDER = "U0NOBODY"


def bot_settings(tmp_path: Path, **overrides: object) -> Settings:
    base = Settings(
        database=database_config(tmp_path),
        paths=PathsConfig(
            reports_dir=tmp_path / "reports",
            live_environment=tmp_path / "config" / "live_environment.toml",
            shadow_config=tmp_path / "config" / "shadow_config.toml",
        ),
        venues=[PaperVenueConfig(book_path=tmp_path / "paper.db")],
        roles={"operator": [OPERATOR], "risk_officer": [RISK]},
        slack=SlackConfig(ops_channel=OPS),
        flatten=FlattenConfig(recheck_interval_s=0.05),
    )
    return base.model_copy(update=overrides)


def secrets_for(slack: FakeSlack) -> Secrets:
    return Secrets(
        slack_bot_token=slack.bot_token,
        slack_app_token=slack.app_token,
        slack_signing_secret=slack.signing_secret,
        slack_api_url=slack.api_url,
    )


@asynccontextmanager
async def running(
    slack: FakeSlack, settings: Settings, *, http: bool = False, clock: Clock | None = None
) -> AsyncIterator[Server]:
    server = Server(
        settings,
        secrets_for(slack),
        http=http,
        port=0 if http else None,
        start_clock=False,
        clock=clock,
    )
    await server.start()
    try:
        if not http:
            await slack.wait_connected()
        yield server
    finally:
        await server.stop()


async def seeded_paper(rb: Any) -> PaperVenue:
    """The bot's paper venue, holding the 24 working orders every seeded book starts with."""
    paper = rb.venue("paper")
    assert isinstance(paper, PaperVenue)
    assert len(await paper.open_orders()) == 24
    return paper


async def settled(slack: FakeSlack, rb: Any, incidents: int, timeout: float = 15) -> None:
    """Until the bot has `incidents` incidents, every one run to DONE, and nothing is left
    in its outbox."""
    await slack.wait_until(
        lambda: (
            len(rb.incidents.list()) == incidents
            and all(i.phase == "DONE" for i in rb.incidents.list())
            and rb.outbox.pending() == []
        ),
        timeout=timeout,
    )


def no_rollback_approval(settings: Settings) -> Settings:
    """For tests about something else: a person may start /rollback alone."""
    approvals = settings.approvals.model_copy(update={"rollback_needs_approval": False})
    return settings.model_copy(update={"approvals": approvals})


def approval_buttons(slack: FakeSlack, channel: str) -> list[tuple[str, dict[str, Any]]]:
    """(message ts, button) for every Approve/Deny button posted in a channel, oldest first."""
    found = []
    for m in slack.messages(channel, include_replies=True):
        for block in m.blocks or []:
            for element in block.get("elements") or []:
                if element.get("action_id") in ("approval_approve", "approval_deny"):
                    found.append((m.ts, element))
    return found


async def click(slack: FakeSlack, channel: str, action_id: str, user_id: str) -> None:
    """Click the newest button with this action id in the channel, as `user_id`."""
    ts, button = [b for b in approval_buttons(slack, channel) if b[1]["action_id"] == action_id][-1]
    await slack.deliver_block_action(
        slack.block_action_payload(
            action_id, button["value"], user_id=user_id, channel_id=channel, message_ts=ts
        )
    )


def events_url(server: Server) -> str:
    """Where `serve --http` takes Slack's signed requests."""
    return f"http://127.0.0.1:{server.bound_port}/slack/events"
