"""A venue library's unexpected exception is that venue's named failure in every step of a
rollback, never a traceback, and never stops the other venue (issue 15 item 4)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from rollbot.brokers.paper.venue import PaperVenue
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.engine import Engine, StepStatus
from rollbot.config import PaperVenueConfig
from rollbot.storage.events import Actor


async def test_a_rollback_reports_a_raising_venue_by_name_and_flattens_the_other(
    make_app: Callable[..., Rollbot], operator: Actor, tmp_path: Path
) -> None:
    app = make_app(
        venues=[
            PaperVenueConfig(name="good", book_path=tmp_path / "good.db"),
            PaperVenueConfig(name="bad", book_path=tmp_path / "bad.db"),
        ]
    )
    bad = app.venue("bad")
    assert isinstance(bad, PaperVenue)
    with sqlite3.connect(bad.book.db.path) as conn:  # a position with no price row: KeyError
        (symbol,) = conn.execute("SELECT symbol FROM positions LIMIT 1").fetchone()
        conn.execute("DELETE FROM marks WHERE symbol = ?", (symbol,))

    outcome = await Engine(app, operator).rollback("one venue's library raises")

    steps = {s.step: s for s in outcome.steps}
    assert steps[1].venues["good"].startswith("24 of 24 orders cancelled")
    assert steps[1].venues["bad"].startswith("24 of 24 orders cancelled")  # cancels need no mark
    assert f"bad: NAV not read: bad: unexpected KeyError: '{symbol}'" in steps[1].actions
    assert steps[2].status is StepStatus.SUCCESS  # the gates are off all the same
    assert steps[3].venues["bad"] == f"FAILED: bad: unexpected KeyError: '{symbol}'"
    assert steps[4].venues["good"].startswith("flat:")
    assert "bad" in outcome.unreachable
    assert outcome.final_status is StepStatus.PARTIAL
    assert await app.venue("good").positions() == []
