"""Shared parts of the two-person rule tests: a real SQLite file, the real paper venue, a
ManualClock, and the people who click."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pg_server import database_config
from terminal_users import login

from rollbot.brokers.paper.venue import PaperVenue
from rollbot.clock import ManualClock
from rollbot.commands.approvals.two_person import Approvals
from rollbot.commands.desk.context import Rollbot
from rollbot.config import (
    ApprovalRule,
    ApprovalsConfig,
    FlattenConfig,
    PaperVenueConfig,
    PathsConfig,
    Settings,
)
from rollbot.storage.events import Actor

OPERATOR = "U0OPERATOR"
OPERATOR2 = "U0OPERATOR2"
RISK = "U0RISK"
OUTSIDER = "U0NOBODY"
CROWD = [f"U0CROWD{i:02d}" for i in range(50)]  # fifty operators for the concurrency tests
# people at the terminal (their OS users, see terminal_users.py) and the Slack IDs they are
IDENTITIES = {
    login("alice"): OPERATOR,
    login("bob"): OPERATOR2,
    login("rita"): RISK,
    login("mallory"): OUTSIDER,
}


def make_settings(tmp_path: Path, **approvals: Any) -> Settings:
    return Settings(
        database=database_config(tmp_path),
        paths=PathsConfig(
            reports_dir=tmp_path / "reports",
            live_environment=tmp_path / "config" / "live_environment.toml",
            shadow_config=tmp_path / "config" / "shadow_config.toml",
        ),
        venues=[PaperVenueConfig(book_path=tmp_path / "paper.db")],
        roles={"operator": [OPERATOR, OPERATOR2, *CROWD], "risk_officer": [RISK]},
        identities=dict(IDENTITIES),
        flatten=FlattenConfig(recheck_interval_s=0.05),
        approvals=ApprovalsConfig(**approvals),
    )


def slack(user_id: str) -> Actor:
    return Actor(id=user_id, source="slack")


def terminal(person: str, by: str | None = None) -> Actor:
    """What Actor.terminal builds for `person`'s OS user (an actor claiming another id `by`
    is what the CLI now refuses; the approval rules must not trust it either)."""
    os_user = login(person)
    return Actor(id=by or IDENTITIES.get(os_user, os_user), source="cli", name=os_user, host="h")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def app(settings: Settings, clock: ManualClock) -> AsyncIterator[Rollbot]:
    rb = Rollbot.open(settings, clock=clock)
    try:
        yield rb
    finally:
        await rb.aclose()


@pytest.fixture
def approvals(app: Rollbot) -> Approvals:
    return Approvals(app)


def paper(app: Rollbot) -> PaperVenue:
    venue = app.venue("paper")
    assert isinstance(venue, PaperVenue)
    return venue


def closing_orders(app: Rollbot) -> list[Any]:
    """Orders rollbot sent to close positions (client ids rb…); the scenario's resting orders
    have none."""
    return paper(app).orders_by_client_prefix("rb")


def events(app: Rollbot, kind: str) -> list[Any]:
    return app.events.list(kinds=[kind])


def rule(quorum: int, *roles: str) -> ApprovalRule:
    return ApprovalRule(quorum=quorum, roles=list(roles))  # type: ignore[arg-type]


def write_config(
    tmp_path: Path,
    *,
    identities: dict[str, str] | None = None,
    scenario: Path | None = None,
    extra: str = "",
) -> Path:
    """make_settings as the rollbot.toml a terminal user has (for `rollbot` subprocesses)."""
    base = make_settings(tmp_path)
    roles = "\n".join(
        f"{role} = [{', '.join(repr(u) for u in ids)}]".replace("'", '"')
        for role, ids in base.roles.items()
    )
    idents = "\n".join(f'{u} = "{uid}"' for u, uid in (identities or IDENTITIES).items())
    book = f'scenario = "{scenario}"' if scenario else ""
    db = base.database
    database = f'url = "{db.url}"' if db.url else f'path = "{db.path}"'
    cfg = tmp_path / "rollbot.toml"
    cfg.write_text(
        f"""
[database]
{database}

[paths]
reports_dir = "{tmp_path / "reports"}"
live_environment = "{tmp_path / "config" / "live_environment.toml"}"
shadow_config = "{tmp_path / "config" / "shadow_config.toml"}"

[[venues]]
kind = "paper"
book_path = "{tmp_path / "paper.db"}"
{book}

[flatten]
recheck_interval_s = 0.05

[roles]
{roles}

[identities]
{idents}
{extra}
""",
        encoding="utf-8",
    )
    return cfg
