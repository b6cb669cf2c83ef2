"""A kill waits on nothing: not on another process's write lock, not on a venue that cannot be
set up, not on a venue library's unexpected exception. Each is seen through the real CLI on the
paper venue and real SQLite files (issue 14 item 7, issue 15 item 4).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
from pg_server import BOTH, read_rows

from rollbot.commands.desk.context import Rollbot
from rollbot.config import CryptoVenueConfig, DatabaseConfig, Settings
from rollbot.storage.events import Actor

Run = Callable[..., CompletedProcess[str]]


def flat(text: str) -> str:
    return " ".join(text.split())


def working_orders(book: Path) -> int:
    """What is true at the venue: the paper book read through its own connection."""
    with sqlite3.connect(book) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM orders WHERE status IN ('OPEN', 'PARTIALLY_FILLED')"
        ).fetchone()
    return int(row[0])


def stored(db: DatabaseConfig, sql: str) -> list[tuple[object, ...]]:
    return read_rows(db, sql)


@pytest.mark.parametrize("backend", BOTH)
@pytest.mark.parametrize("script", [False, True], ids=["python-m-cli", "console-script"])
def test_a_kill_cancels_at_once_while_another_process_holds_the_write_lock_then_stores_its_hold(
    app: Rollbot, settings: Settings, rollbot: Any, script: bool, write_lock: Any
) -> None:
    book = settings.venues[0].book_path  # type: ignore[union-attr]
    app.venue("paper")  # the seeded book: 24 working orders
    assert working_orders(book) == 24
    with write_lock(settings.database):
        kill = subprocess.Popen(
            rollbot.argv(("kill", "trigger", "--reason", "runaway algo"), script),
            cwd=rollbot.cwd,
            env=rollbot.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # the busy timeout is 5 s: the cancels must not wait it out, let alone the lock
        deadline = time.monotonic() + 30
        while working_orders(book) and kill.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert working_orders(book) == 0, "the cancels waited for the database"
        assert kill.poll() is None, "the kill gave up instead of retrying its hold"
        assert stored(settings.database, "SELECT * FROM holds") == []  # still locked out
    out, err = kill.communicate(timeout=60)
    assert kill.returncode == 0, out + err
    text = flat(out)
    assert "INC-0001 kill: SUCCESS" in text
    assert "is locked by another process" in text
    assert "cancels sent before the hold — paper: 24 of 24 orders cancelled, none left" in text
    # the lock may go while the cancels are read back: either way the terminal says which
    assert (
        "The HALTED hold is retried until stored" in text
        or "The HALTED hold was stored meanwhile" in text
    )
    assert "Before the hold was stored (the database was locked for" in text
    assert "paper: 24 of 24 orders cancelled, none left" in text

    holds = stored(settings.database, "SELECT scope, state FROM holds WHERE cleared_at IS NULL")
    assert holds == [("global", "HALTED")]
    kinds = [k for (k,) in stored(settings.database, "SELECT kind FROM events ORDER BY id")]
    assert kinds.index("BREAK_GLASS") < kinds.index("CANCELLED_BEFORE_HOLD")
    assert "HOLD_SET" in kinds and "GATES_WRITTEN" in kinds
    status = json.loads(rollbot("kill", "status", "--json").stdout)
    assert {s["scope"]: s["state"] for s in status}["global"] == "HALTED"


def test_a_venue_that_cannot_be_set_up_is_named_and_the_other_venue_still_gets_its_cancel(
    app: Rollbot, settings: Settings, write_config: Callable[..., Path], rollbot: Run
) -> None:
    book = settings.venues[0].book_path  # type: ignore[union-attr]
    app.venue("paper")
    broken = CryptoVenueConfig(
        name="bybit",
        exchange="bybit",
        api_key_env="ROLLBOT_TEST_UNSET_BYBIT_KEY",
        secret_env="ROLLBOT_TEST_UNSET_BYBIT_SECRET",
        urls={"api": "http://127.0.0.1:9"},  # never reached: it cannot even be built
    )
    config = write_config(
        settings.model_copy(update={"venues": [*settings.venues, broken]}), "two.toml"
    )
    killed = rollbot("kill", "trigger", "--reason", "X", env={"ROLLBOT_CONFIG": str(config)})
    text = flat(killed.stdout + killed.stderr)
    assert killed.returncode == 1, text  # something changed, not everything: never 2
    assert "Traceback" not in text
    assert "paper: 24 of 24 orders cancelled, none left" in text
    assert (
        "bybit: FAILED: bybit: venue could not be set up: venue 'bybit': environment variable"
        " ROLLBOT_TEST_UNSET_BYBIT_KEY (api key) is not set" in text
    )
    assert "Live gates disabled" in text  # step 2 ran: the gates are off
    assert "INC-0001 kill: PARTIAL" in text
    assert working_orders(book) == 0
    assert not app.gates.read().live_allowed


def test_an_unexpected_venue_exception_is_that_venues_failure_and_the_kill_goes_on(
    app: Rollbot, settings: Settings, rollbot: Run
) -> None:
    book = settings.venues[0].book_path  # type: ignore[union-attr]
    app.venue("paper")
    with sqlite3.connect(book) as conn:  # a position with no price row: a KeyError in the venue
        (symbol,) = conn.execute("SELECT symbol FROM positions LIMIT 1").fetchone()
        conn.execute("DELETE FROM marks WHERE symbol = ?", (symbol,))
    app.gates.arm(Actor(id="U0OPERATOR", source="cli"), "live before the kill")
    assert app.gates.read().live_allowed

    killed = rollbot("kill", "trigger", "--reason", "X")
    text = flat(killed.stdout + killed.stderr)
    assert "Traceback" not in text
    assert "paper: 24 of 24 orders cancelled, none left" in text
    assert f"paper: NAV not read: paper: unexpected KeyError: '{symbol}'" in text
    assert "Live gates disabled" in text
    assert killed.returncode == 0, text
    assert working_orders(book) == 0
    assert not app.gates.read().live_allowed


def test_the_console_scripts_kill_stores_its_hold_before_the_rest_of_the_cli_is_imported(
    app: Rollbot, rollbot: Any
) -> None:
    """Break-glass start-up (issue 18 item 4): pydantic, typer, rich, pydantic-settings and
    asyncio load only after the hold is stored (bot/breakglass.py, commands/killswitch/fast_hold.py:
    the hold is written right after that module loads, with nothing imported meanwhile); the timing
    is in bench/kill_startup.py."""
    from rollbot.commands.killswitch.fast_hold import read_kill_config

    assert read_kill_config(str(rollbot.config)) is not None  # this desk takes the fast hold
    argv = rollbot.argv(("kill", "trigger", "--reason", "X"), script=True)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        cwd=rollbot.cwd,
        env=rollbot.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "INC-0001 kill: SUCCESS" in done.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line]
    held = imported.index("rollbot.commands.killswitch.fast_hold")
    for heavy in (
        "pydantic",
        "rollbot.commands.rollback.held_incident",
        "typer",
        "rich.console",
        "pydantic_settings",
        "asyncio",
        "rollbot.bot.cli",
    ):
        assert imported.index(heavy) > held, f"{heavy} is imported before the hold is stored"


@pytest.mark.parametrize("backend", BOTH)
def test_a_hold_the_database_refuses_still_sends_every_cancel_and_says_the_hold_is_not_stored(
    app: Rollbot, settings: Settings, rollbot: Any, refuse_holds: Callable[[Any], None]
) -> None:
    book = settings.venues[0].book_path  # type: ignore[union-attr]
    app.venue("paper")
    assert working_orders(book) == 24
    refuse_holds(app.db)
    run = rollbot("kill", "trigger", "--reason", "runaway algo")
    said = flat(run.stdout + run.stderr)
    assert run.returncode == 1, said  # the cancels changed something: never exit 2
    assert "the disk refused this hold" in said
    assert "HALTED hold on global was NOT stored" in said
    assert "Cancels sent: paper: 24 of 24 orders cancelled, none left" in said
    assert "Traceback" not in said
    assert working_orders(book) == 0
    assert stored(settings.database, "SELECT * FROM holds") == []
