"""Fixtures for the Slack face's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fakes.slack import FakeSlack


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake
