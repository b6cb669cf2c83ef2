"""Engine fixtures: a Rollbot on a ManualClock over real paper venues (SQLite books under
tmp_path), seeded with the default drill book, gates armed as on a live desk.

    make_app(**paper_faults)             one paper venue named "paper" with these faults
    make_app(venues=[PaperVenueConfig(...), ...], flatten=FlattenConfig(...), hooks=...)
    operator                             the Actor every engine test acts as
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rollbot.brokers.paper.venue import PaperVenue
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.config import FlattenConfig, HooksConfig, PaperVenueConfig, Settings
from rollbot.storage.events import Actor


@pytest.fixture
def operator() -> Actor:
    return Actor(id="U0OPERATOR", source="cli", name="ops")


@pytest.fixture
def make_app(
    settings: Settings, clock: ManualClock, tmp_path: Path, operator: Actor
) -> Iterator[Callable[..., Rollbot]]:
    opened: list[Rollbot] = []

    def make(
        venues: list[PaperVenueConfig] | None = None,
        *,
        flatten: FlattenConfig | None = None,
        hooks: HooksConfig | None = None,
        **faults: Any,
    ) -> Rollbot:
        configs = venues or [PaperVenueConfig(book_path=tmp_path / "paper.db", **faults)]
        ours = settings.model_copy(
            update={
                "venues": configs,
                # the seed's flatten settings: 90 s give-up, 1 s re-check, 10 s limit timeout
                "flatten": flatten or FlattenConfig(),
                "hooks": hooks or HooksConfig(),
            }
        )
        app = Rollbot.open(ours, clock=clock)
        opened.append(app)
        app.gates.arm(operator, "live desk before the incident")
        app.venues()  # built (and seeded with the default book) before the test acts
        return app

    yield make
    for app in opened:
        for venue in (app._venues or {}).values():
            if isinstance(venue, PaperVenue):
                venue.book.db.close()
        app.db.close()
