"""Strategy and account kills hold their scope, are verified by what that scope governs, and
cancel only what they name (issue 14 item 11), through the real CLI on the paper venue.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

from rollbot.commands.desk.context import Rollbot
from rollbot.config import Settings
from rollbot.storage.events import Actor

Run = Callable[..., CompletedProcess[str]]
LIVE = Actor(id="U0OPERATOR", source="cli")
GUARD = ("guard", "check", "--venue", "paper", "--symbol", "AAPL", "--side", "BUY", "--quantity")


def flat(text: str) -> str:
    return " ".join(text.split())


def working_orders(book: Path) -> int:
    with sqlite3.connect(book) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM orders WHERE status IN ('OPEN', 'PARTIALLY_FILLED')"
        ).fetchone()
    return int(row[0])


def test_a_strategy_kill_holds_its_strategy_and_says_so(
    app: Rollbot, settings: Settings, rollbot: Run
) -> None:
    app.venue("paper")
    app.gates.arm(LIVE, "a live desk")  # refusals below are the hold's, not the gates'
    killed = rollbot("kill", "trigger", "--reason", "alpha misbehaves", "--scope", "strategy:alpha")
    text = flat(killed.stdout + killed.stderr)
    assert killed.returncode == 0, text
    assert "INC-0001 kill: SUCCESS" in text
    assert "Guard refuses new orders for strategy alpha on paper (HALTED)" in text
    assert "ALLOWS" not in text
    assert "No venue in this scope to cancel at (hold only)" in text
    assert working_orders(settings.venues[0].book_path) == 24  # type: ignore[union-attr]

    other = rollbot(*GUARD, "1", "--strategy", "beta")
    assert other.returncode == 0, other.stdout  # the hold governs alpha, not the desk


def test_an_account_kill_cancels_only_what_it_can_attribute_and_says_what_it_cannot(
    app: Rollbot, settings: Settings, rollbot: Run
) -> None:
    app.venue("paper")
    app.gates.arm(LIVE, "a live desk")
    book = settings.venues[0].book_path  # type: ignore[union-attr]
    killed = rollbot("kill", "trigger", "--reason", "desk B", "--scope", "account:paper/ACC-B")
    text = flat(killed.stdout + killed.stderr)
    assert killed.returncode == 0, text
    assert "INC-0001 kill: SUCCESS" in text
    assert "Guard refuses new orders for account paper/ACC-B (HALTED)" in text
    assert "ALLOWS" not in text
    # the paper venue does not say which account an order is for: none is touched, and it says so
    assert (
        "paper: account ACC-B: 0 of 0 orders cancelled, none left; 24 order(s) NOT cancelled:"
        " paper does not say which account an order is for" in text
    )
    assert working_orders(book) == 24
