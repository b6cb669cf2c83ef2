"""Recording an RCA (one condition for resuming live trading) at the terminal needs a rollbot
role, as in Slack: a person with none is refused, told which roles, and the refusal is on record
(issue 14, item 12). Real `rollbot` processes under real uids, real SQLite, the paper venue."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from terminal_users import login, tmp_path

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.engine import Engine
from rollbot.commands.rollback.rca import get_rca
from rollbot.config import Settings
from rollbot.storage.events import Actor

__all__ = ["tmp_path"]  # the fixture: a directory other uids can reach

Run = Callable[..., CompletedProcess[str]]
RCA = """
timeline = "09:30 runaway orders; 09:31 kill"
root_cause = "a sizing bug"
contributing_factors = "no pre-trade cap"
lessons_learned = "cap order size"
recommended_actions = "add the cap"
"""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"identities": {login("alice"): "U0OPERATOR"}})


async def test_a_person_without_a_role_cannot_record_the_rca(
    app: Rollbot, rollbot: Run, tmp_path: Path
) -> None:
    outcome = await Engine(app, Actor(id="U0OPERATOR", source="slack")).kill("runaway", "global")
    incident = outcome.incident.id
    rca = tmp_path / "rca.toml"
    rca.write_text(RCA, "utf-8")

    refused = rollbot("rca", incident, "--file", str(rca), person="mallory")

    text = " ".join(refused.stderr.split())
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "recording an RCA needs a rollbot role (operator, risk_officer" in text, text
    assert f"{login('mallory')} holds none" in text and "[identities]" in text, text
    assert get_rca(app, incident) is None
    (event,) = app.events.list(kinds=["RCA_REFUSED"])
    assert (event.actor, event.incident_id, event.data["os_user"]) == (
        login("mallory"),
        incident,
        login("mallory"),
    )

    recorded = rollbot("rca", incident, "--file", str(rca), person="alice")
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    saved = get_rca(app, incident)
    assert saved is not None and saved.recorded_by == "U0OPERATOR"
