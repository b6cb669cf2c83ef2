"""A burst's delivery records (bot/slack/deliveries.py): the requests that reach the ledger in
one pass of the event loop are written as one statement, and still exactly one record of a
delivery is the first, within a batch, across batches and on both backends."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from rollbot.bot.slack import deliveries
from rollbot.bot.slack.deliveries import Deliveries
from rollbot.config import DatabaseConfig
from rollbot.errors import DatabaseBusy
from rollbot.storage.backends import open_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        config = DatabaseConfig(path=tmp_path / "r.db")
    else:
        config = DatabaseConfig(url=request.getfixturevalue("pg_server").new_database())
    opened = open_database(config)
    yield opened
    opened.close()


class Counting:
    """The database, counting the statements the ledger runs."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.statements: list[int] = []  # keys per statement

    def execute_alone(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        self.statements.append(len(params) // 2)
        return self.db.execute_alone(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


async def test_a_burst_is_recorded_in_one_statement_and_each_delivery_once(db: Any) -> None:
    counting = Counting(db)
    ledger = Deliveries(counting)
    keys = [f"kill:t{i % 10}" for i in range(30)]  # each delivery three times over
    first = await asyncio.gather(*(ledger.first_time(k, "t", kill=False) for k in keys))
    assert counting.statements == [10]
    assert sum(first) == 10
    assert {k for k, f in zip(keys, first, strict=True) if f} == set(keys)
    again = await asyncio.gather(*(ledger.first_time(k, "t", kill=True) for k in keys[:10]))
    assert again == [False] * 10, "a later batch finds them recorded"
    assert counting.statements == [10, 10]
    rows = db.query("SELECT COUNT(*) AS n FROM deliveries")
    assert rows[0]["n"] == 10


async def test_a_locked_database_lets_a_kill_go_on_and_tells_the_rest_nothing_was_done(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deliveries, "RECORD_BY_S", 0.1)

    class Locked(Counting):
        def execute_alone(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
            self.statements.append(len(params) // 2)
            raise DatabaseBusy("database is locked")

    locked = Locked(db)
    ledger = Deliveries(locked)
    kill, click = await asyncio.gather(
        ledger.first_time("kill:a", "t", kill=True),
        ledger.first_time("block_actions:b", "t", kill=False),
        return_exceptions=True,
    )
    assert kill is True, "a /kill never waits on the lock: its incident's dedupe key catches it"
    assert isinstance(click, DatabaseBusy) and "nothing was done" in str(click)
    assert len(locked.statements) >= 3, "the click was tried again before it gave up"
