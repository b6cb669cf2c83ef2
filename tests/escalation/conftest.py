"""Fixtures: a real SQLite file under tmp_path and a clock the test moves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_server import BOTH

from escalation.helpers import make_settings
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(tmp_path: Path, clock: ManualClock) -> Iterator[Rollbot]:
    rb = Rollbot.open(make_settings(tmp_path, repeat=1), clock=clock)
    yield rb
    rb.db.close()


@pytest.fixture(params=BOTH)
def backend(request: pytest.FixtureRequest) -> str:
    """These tests run on SQLite and on PostgreSQL (tests/pg_server.py)."""
    return request.param
