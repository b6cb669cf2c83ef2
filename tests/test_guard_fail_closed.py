"""Issue 14.2: the guard fails closed. A reader of state never creates a database; every entry to
the guard refuses a name it does not know; every scope a hold can name is reachable by the guard
and every scope text is validated strictly, on every path that takes one."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rollbot.bot.slack.parsing import parse_kill
from rollbot.commands.approvals.plans import check_params
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.gates import Gates
from rollbot.commands.killswitch.trading_state import parse_scope
from rollbot.config import Settings
from rollbot.errors import BadInput, StateUnavailable
from rollbot.storage.events import Actor

ALICE = Actor(id="U0ALICE", source="slack")
BUY_10 = ("guard", "check", "--venue", "paper", "--symbol", "AAPL", "--side", "BUY", "-q", "10")


def arm_gates(settings: Settings) -> None:
    """Live gates on: only the kill switch (and the database behind it) stands in the way."""
    Gates(settings.paths.live_environment, settings.paths.shadow_config).arm(ALICE, "test")


def held_database(settings: Settings) -> None:
    rb = Rollbot.open(settings)
    rb.killswitch.trigger("global", "runaway orders", ALICE)
    rb.db.close()


# -- (a) a reader never creates the database ---------------------------------------------------
def test_guard_check_refuses_when_the_database_is_moved_away_and_creates_none(
    rollbot: Any, settings: Settings
) -> None:
    arm_gates(settings)
    held_database(settings)
    db = settings.database.path
    db.rename(db.with_suffix(".moved"))
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)

    res = rollbot(*BUY_10)

    assert res.returncode == 1, res.stdout + res.stderr
    assert "REFUSED STATE_UNAVAILABLE" in res.stdout
    assert "does not exist" in res.stdout
    assert not db.exists()  # no fresh, empty database answering ACTIVE


def test_guard_check_and_kill_status_refuse_an_empty_or_foreign_database(
    rollbot: Any, settings: Settings
) -> None:
    arm_gates(settings)
    db = settings.database.path
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(b"")  # truncated to 0 bytes

    empty = rollbot(*BUY_10)
    status = rollbot("kill", "status", "--json")

    assert empty.returncode == 1 and "REFUSED STATE_UNAVAILABLE" in empty.stdout
    assert "empty (0 bytes)" in empty.stdout
    assert status.returncode == 1 and "empty (0 bytes)" in status.stderr
    assert db.stat().st_size == 0  # still empty: nothing was created in it

    db.unlink()
    other = sqlite3.connect(db)
    other.execute("CREATE TABLE t (x)")
    other.commit()
    other.close()
    foreign = rollbot(*BUY_10)
    assert foreign.returncode == 1 and "has no rollbot schema" in foreign.stdout


def test_a_relative_database_path_run_from_another_directory_is_refused(
    tmp_path: Path, settings: Settings, write_config: Callable[..., Path], rollbot: Any
) -> None:
    """`path = "var/rollbot.db"` means the desk's directory; from elsewhere it names nothing."""
    desk = tmp_path / "desk"
    desk.mkdir()
    relative = settings.model_copy(
        update={"database": settings.database.model_copy(update={"path": Path("var/rollbot.db")})}
    )
    arm_gates(relative)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = write_config(relative, "relative.toml")
    rollbot.cwd = elsewhere

    res = rollbot(*BUY_10, env={"ROLLBOT_CONFIG": str(config)})

    assert res.returncode == 1 and "REFUSED STATE_UNAVAILABLE" in res.stdout
    assert not (elsewhere / "var").exists()


def test_opening_for_reading_never_creates(settings: Settings) -> None:
    with pytest.raises(StateUnavailable, match="does not exist"):
        Rollbot.open(settings, create=False)
    assert not settings.database.path.exists()


def test_a_running_guard_refuses_once_its_database_is_moved_away(settings: Settings) -> None:
    """A long-running process (the guard service) must not answer from an unlinked file."""
    held_database(settings)
    rb = Rollbot.open(settings, create=False)
    rb.killswitch.clear("global", "ok", ALICE)
    arm_gates(settings)
    assert rb.killswitch.check_order("paper", "AAPL", "BUY", 1).allowed
    settings.database.path.rename(settings.database.path.with_suffix(".moved"))
    d = rb.killswitch.check_order("paper", "AAPL", "BUY", 1)
    assert (d.allowed, d.code) == (False, "STATE_UNAVAILABLE")
    rb.db.close()


# -- (b) check_order refuses names it does not know ---------------------------------------------
@pytest.mark.parametrize("venue", ["PAPER", "paper ", " paper", "nope", ""])
def test_check_order_refuses_a_venue_name_it_does_not_know(app: Rollbot, venue: str) -> None:
    arm_gates(app.settings)
    app.killswitch.trigger("venue:paper", "halt paper", ALICE)
    d = app.killswitch.check_order(venue, "AAPL", "BUY", 1)
    assert (d.allowed, d.code) == (False, "UNKNOWN_VENUE")
    assert "configured: paper" in d.reason


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"strategy": "MA"}, "UNKNOWN_NAME"),
        ({"strategy": "ma "}, "BAD_NAME"),
        ({"strategy": ""}, "BAD_NAME"),
        ({"account": "du1"}, "UNKNOWN_NAME"),
        ({"account": "DU1 "}, "BAD_NAME"),
        ({"account": "paper/DU1"}, "BAD_NAME"),
    ],
)
def test_check_order_refuses_account_and_strategy_names_that_miss_a_hold_by_spelling(
    app: Rollbot, kw: dict[str, str], code: str
) -> None:
    arm_gates(app.settings)
    app.killswitch.trigger("strategy:ma", "bad signals", ALICE)
    app.killswitch.trigger("account:paper/DU1", "account issue", ALICE)
    d = app.killswitch.check_order("paper", "AAPL", "BUY", 1, **kw)
    assert (d.allowed, d.code) == (False, code), d.reason


def test_symbol_with_spaces_is_refused(app: Rollbot) -> None:
    arm_gates(app.settings)
    assert app.killswitch.check_order("paper", " AAPL", "BUY", 1).code == "BAD_ORDER"


# -- (c) every scope a hold can name is reachable, every scope text is strict ------------------
def test_an_account_hold_is_reached_by_guard_check_account(
    rollbot: Any, settings: Settings
) -> None:
    arm_gates(settings)
    rb = Rollbot.open(settings)
    rb.killswitch.trigger("account:paper/DU1", "account issue", ALICE)
    rb.db.close()

    held = rollbot(*BUY_10, "--account", "DU1")
    other = rollbot(*BUY_10, "--account", "DU2")

    assert held.returncode == 1 and "REFUSED HALTED" in held.stdout, held.stdout + held.stderr
    assert other.returncode == 0 and "ALLOWED OK" in other.stdout


@pytest.mark.parametrize(
    "scope", ["account:paper", "account:paper/", "account:PAPER/DU1", "account:paper/D U"]
)
def test_kill_trigger_refuses_an_account_scope_without_an_id_or_venue(
    rollbot: Any, settings: Settings, scope: str
) -> None:
    if scope != "account:paper":  # one subprocess proves the CLI; the rest are the same parser
        with pytest.raises(BadInput, match="account"):
            parse_scope(scope, ["paper"])
        return
    res = rollbot("kill", "trigger", "--reason", "x", "--scope", scope)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "account:paper" in res.stderr and "needs an account id" in res.stderr
    rb = Rollbot.open(settings)
    assert rb.killswitch.holds.active() == []
    rb.db.close()


def test_every_path_that_takes_a_scope_refuses_an_account_scope_without_an_id(
    app: Rollbot,
) -> None:
    with pytest.raises(BadInput, match="needs an account id"):
        parse_kill("account:paper runaway orders", app.venue_names)  # Slack /kill
    with pytest.raises(BadInput, match="needs an account id"):  # requests (kill clear, Slack)
        check_params(app, "clear_hold", {"scope": "account:paper"}, None)
    with pytest.raises(BadInput, match="letters, digits"):
        parse_kill("strategy:a;b runaway", app.venue_names)
    assert parse_scope("account:paper/DU1", app.venue_names) == "account:paper/DU1"


def test_kill_clear_refuses_an_account_scope_without_an_id(rollbot: Any) -> None:
    res = rollbot("kill", "clear", "--reason", "fixed", "--scope", "account:paper")
    assert res.returncode == 2 and "needs an account id" in res.stderr
