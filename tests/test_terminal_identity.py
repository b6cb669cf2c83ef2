"""Who acts at the terminal is the process's real uid, mapped through [identities]: never USER,
LOGNAME or a `--by` naming someone else (issue 14, items 5 and 12). Real `rollbot` processes,
each person under their own uid, on a real SQLite file and the paper venue."""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from pathlib import Path

import pytest
from terminal_users import login, tmp_path
from typer.testing import CliRunner

from rollbot.bot.cli import app as cli
from rollbot.commands.approvals.two_person import Approvals, Status
from rollbot.commands.desk.context import Rollbot
from rollbot.config import Settings

__all__ = ["tmp_path"]  # the fixture: a directory other uids can reach

OPERATOR, RISK = "U0OPERATOR", "U0RISK"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"identities": {login("alice"): OPERATOR, login("rita"): RISK}}
    )


def test_logname_and_user_do_not_make_anyone_the_risk_officer(
    rollbot: Callable[..., object], app: Rollbot
) -> None:
    asked = rollbot("request", "rollback", "--reason", "drawdown", person="alice")
    assert asked.returncode == 3, asked.stderr  # type: ignore[attr-defined]

    # mallory's uid maps to nobody; she exports the risk officer's Slack ID and OS user
    spoof = rollbot(
        "approve", "APR-0001", env={"LOGNAME": RISK, "USER": login("rita")}, person="mallory"
    )
    assert spoof.returncode == 1, spoof.stdout + spoof.stderr  # type: ignore[attr-defined]
    assert "ROLE_NOT_ALLOWED" in spoof.stderr  # type: ignore[attr-defined]
    assert Approvals(app).get("APR-0001").status is Status.PENDING
    (refusal,) = app.events.list(kinds=["APPROVAL_REFUSED"])
    assert (refusal.actor, refusal.data["os_user"], refusal.data["uid"]) == (
        login("mallory"),
        login("mallory"),
        61004,
    )
    assert app.incidents.list() == []  # nothing ran

    # the real risk officer, whatever her environment says
    done = rollbot("approve", "APR-0001", env={"LOGNAME": "root", "USER": "root"}, person="rita")
    assert "approved" in done.stdout, done.stdout + done.stderr  # type: ignore[attr-defined]
    assert Approvals(app).get("APR-0001").status is Status.EXECUTED
    (vote,) = Approvals(app).get("APR-0001").votes
    assert vote.voter == RISK


# every command that records an actor and takes --by
BY_COMMANDS = [
    ["kill", "trigger", "--reason", "x"],
    ["kill", "clear", "--reason", "x"],
    ["cancel-all"],
    ["flatten", "--confirm"],
    ["rollback", "--reason", "x", "--confirm"],
    ["recover"],
    ["gates", "disable", "--confirm"],
    ["drill"],
    ["request", "flatten", "--reason", "x"],
    ["request", "rollback", "--reason", "x"],
    ["request", "clear-hold", "--reason", "x"],
    ["request", "enable-gates", "--reason", "x"],
    ["request", "resume", "INC-0001", "--reason", "x"],
    ["resume", "INC-0001", "--reason", "x"],
    ["risk", "ack", "risk-1"],
]


def test_by_naming_anyone_else_is_refused_on_every_command(
    rollbot: Callable[..., object], app: Rollbot, config_file: Path
) -> None:
    gates_before = app.gates.read()
    me = pwd.getpwuid(os.getuid()).pw_name  # this test's own user, mapped to nobody
    # in-process (one Python for the fifteen commands): the same typer app as the console script
    runner = CliRunner()
    for args in BY_COMMANDS:
        run = runner.invoke(cli.app, ["--config", str(config_file), *args, "--by", RISK])
        text = " ".join(run.output.split())
        assert run.exit_code == 2, f"{' '.join(args)}: exit {run.exit_code}: {text}"
        assert f"--by '{RISK}' refused: you are {me}" in text, text
    # and in a real process, as alice (mapped to the operator), claiming the risk officer
    claimed = rollbot("kill", "trigger", "--reason", "x", "--by", RISK, person="alice")
    assert claimed.returncode == 2, claimed.stdout + claimed.stderr  # type: ignore[attr-defined]
    assert f"--by '{RISK}' refused: you are {OPERATOR}" in claimed.stderr  # type: ignore[attr-defined]

    # nothing changed, and every attempt is on record under the real person
    assert app.killswitch.holds.active() == []
    assert Approvals(app).list() == []
    assert app.incidents.list() == []
    assert app.gates.read() == gates_before
    assert app.db.query("SELECT * FROM drills") == []
    refused = app.events.list()
    assert [(e.kind, e.actor, e.data["claimed"]) for e in refused] == [
        ("IDENTITY_REFUSED", me, RISK)
    ] * len(BY_COMMANDS) + [("IDENTITY_REFUSED", OPERATOR, RISK)]

    # --by that only repeats who you are is accepted (scripts that pass it keep working)
    own = rollbot("kill", "trigger", "--reason", "runaway", "--by", OPERATOR, person="alice")
    assert own.returncode == 0, own.stdout + own.stderr  # type: ignore[attr-defined]
    (hold,) = app.killswitch.holds.active()
    assert hold.actor == OPERATOR
