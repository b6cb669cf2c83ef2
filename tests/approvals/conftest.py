"""Fixtures for the two-person rule tests (helpers live in support.py)."""

import pytest
from pg_server import BOTH
from terminal_users import tmp_path

from approvals.support import app, approvals, clock, settings

__all__ = ["app", "approvals", "clock", "settings", "tmp_path"]


@pytest.fixture(params=BOTH)
def backend(request: pytest.FixtureRequest) -> str:
    """These tests run on SQLite and on PostgreSQL (tests/pg_server.py)."""
    return request.param
