"""Monitor fixtures: a Rollbot on the shared ManualClock over real paper venues (SQLite books
under tmp_path), gates armed as on a live desk, closed after the test.

    make_app(venues=["paper", "other"], kill_switches={...}, venue_objects={...}, **paper_faults)
    operator      the Actor people act as in these tests
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from rollbot.brokers.base import Venue
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.config import KillSwitchesConfig, PaperVenueConfig, Settings
from rollbot.storage.events import Actor


@pytest.fixture
def operator() -> Actor:
    return Actor(id="U0OPERATOR", source="slack")


@pytest.fixture
async def make_app(
    settings: Settings, clock: ManualClock, tmp_path: Path, operator: Actor
) -> AsyncIterator[Callable[..., Rollbot]]:
    opened: list[Rollbot] = []

    def make(
        venues: list[str] | None = None,
        *,
        kill_switches: dict[str, Any] | None = None,
        venue_objects: Callable[[Settings, ManualClock], dict[str, Venue]] | None = None,
        **paper_faults: Any,
    ) -> Rollbot:
        names = venues or ["paper"]
        configured = settings.model_copy(
            update={
                "venues": [
                    PaperVenueConfig(name=n, book_path=tmp_path / f"{n}.db", **paper_faults)
                    for n in names
                ],
                "kill_switches": KillSwitchesConfig(**(kill_switches or {})),
            }
        )
        built = venue_objects(configured, clock) if venue_objects else None
        rb = Rollbot.open(configured, clock=clock, venues=built)
        rb.gates.arm(operator, "tests start from live mode")
        opened.append(rb)
        return rb

    yield make
    for rb in opened:
        await rb.aclose()
