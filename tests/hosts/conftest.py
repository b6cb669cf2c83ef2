"""Two rollbot hosts on one machine: two processes with separate working directories and host
ids ([host] id) sharing one database. /proc on this machine knows both, but each judges the
other only as another host would — by its heartbeat in the database — because their host ids
differ (commands/liveness.py).

Fixtures
    shared_db   where a desk's one database lives: shared_db("name") gives a new one per desk
                (the scenarios run side by side). A SQLite file today; a PostgreSQL backend
                parametrizes this fixture (and only this one) to run the same tests on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from terminal_users import tmp_path  # people at the terminal run as other uids

from hosts.desk import FIGURES

__all__ = ["tmp_path"]


@pytest.fixture
def shared_db(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    def location(name: str) -> Path:
        return tmp_path / "shared" / f"{name}.db"

    yield location


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("rollbot two-host figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
