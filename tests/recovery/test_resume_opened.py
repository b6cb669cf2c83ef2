"""A crash between storing the hold and starting the run: the next start finishes the work."""

from __future__ import annotations

from pathlib import Path

import pytest
from pg_server import BOTH, database_config

from rollbot.clock import ManualClock
from rollbot.commands.approvals.recover import resume_unfinished
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.engine import Engine
from rollbot.config import PaperVenueConfig, PathsConfig, Settings
from rollbot.storage.events import Actor


@pytest.fixture(params=BOTH)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def settings(tmp: Path) -> Settings:
    return Settings(
        database=database_config(tmp),
        paths=PathsConfig(
            reports_dir=tmp / "reports",
            live_environment=tmp / "live.toml",
            shadow_config=tmp / "shadow.toml",
        ),
        venues=[PaperVenueConfig(book_path=tmp / "paper.db")],
    )


async def test_an_incident_left_opened_is_finished_once_it_is_a_minute_old(tmp_path: Path) -> None:
    clock = ManualClock()
    app = Rollbot.open(settings(tmp_path), clock=clock)
    who = Actor(id="U1", source="slack")
    incident, _ = Engine(app, who).open_held_incident(kind="kill", reason="crashed right after")
    assert len(await app.venue("paper").open_orders()) == 24  # the process "died" here

    assert await resume_unfinished(app, who) == []  # too young: maybe still starting elsewhere
    clock.advance(61)
    [outcome] = await resume_unfinished(app, who)
    assert outcome.incident.id == incident.id and outcome.final_status.value == "SUCCESS"
    assert await app.venue("paper").open_orders() == []
    assert [s.step for s in outcome.steps] == [1, 2]
    assert await resume_unfinished(app, who) == []  # done: nothing runs twice
    await app.aclose()
