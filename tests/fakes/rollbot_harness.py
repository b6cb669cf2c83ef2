"""A real rollbot Server (slack-bolt, courier, paper venue, SQLite) against the loopback Slack:
settings, secrets and a context manager for tests of the Slack face."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fakes.slack import FakeSlack
from rollbot.bot.slack.server import Server
from rollbot.config import (
    DatabaseConfig,
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
        database=DatabaseConfig(path=tmp_path / "rollbot.db"),
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
    slack: FakeSlack, settings: Settings, *, http: bool = False
) -> AsyncIterator[Server]:
    server = Server(
        settings, secrets_for(slack), http=http, port=0 if http else None, start_clock=False
    )
    await server.start()
    try:
        if not http:
            await slack.wait_connected()
        yield server
    finally:
        await server.stop()
