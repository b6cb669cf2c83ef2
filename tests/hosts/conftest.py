"""Two rollbot hosts on one machine: two processes with separate working directories and host
ids ([host] id) sharing one database. /proc on this machine knows both, but each judges the
other only as another host would — by its heartbeat in the database — because their host ids
differ (commands/desk/liveness.py).

Every test here runs on both backends (`backend`, pg_server.BOTH): a SQLite file, and
PostgreSQL — the store several hosts on different machines would actually share.

Fixtures
    shared_db   where a desk's one database lives: shared_db("name") gives the [database]
                section of a new one per desk (the scenarios run side by side): a SQLite file
                under tmp_path, or a new database on the session's PostgreSQL, dropped after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_server import BOTH
from terminal_users import tmp_path  # people at the terminal run as other uids

from hosts.desk import FIGURES
from rollbot.config import DatabaseConfig

__all__ = ["tmp_path"]


@pytest.fixture(params=BOTH)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def shared_db(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], DatabaseConfig]]:
    made: list[str] = []

    def location(name: str) -> DatabaseConfig:
        if backend == "sqlite":
            return DatabaseConfig(path=tmp_path / "shared" / f"{name}.db", busy_timeout_ms=10_000)
        url = request.getfixturevalue("pg_server").new_database()
        made.append(url)
        return DatabaseConfig(url=url, busy_timeout_ms=10_000)

    yield location
    for url in made:
        request.getfixturevalue("pg_server").drop_database(url)
    if made:  # a process that opened [database] path despite the url made one in its cwd
        stray = [str(p) for p in tmp_path.rglob("*.db") if p.parent.name == "var"]
        assert not stray, f"SQLite files made on a PostgreSQL desk: {stray}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("rollbot two-host figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
