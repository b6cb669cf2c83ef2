"""Integration fixtures: rollbot against the loopback IBKR gateway and crypto exchanges, through
configuration alone (the CLI in a real process) or through the engine in this process.

Fixtures
    live_clock   a ManualClock that starts at the real time: venue events carry real
                 timestamps, and the risk monitor's trailing hour must contain them.
    integration  settings for these tests: `integration(venues=[...], flatten=...)` -> Settings
                 with every path under tmp_path, a terminal rollback that needs no second
                 person (the two-person rule has its own tests), and a quick flatten re-check.
    cli          `cli(settings)` writes the settings as TOML and returns a runner:
                 `run("positions", "--json", env={...})` -> CompletedProcess, the real CLI in a
                 subprocess whose only configuration is ROLLBOT_CONFIG (and `env`).
    make_engine_app  `make_engine_app(settings, venues=None)` -> Rollbot on live_clock, gates
                 armed as on a live desk; venues are built from the settings unless handed in.
                 Its venues and database are closed after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from rollbot.brokers.base import Venue
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.config import ApprovalsConfig, FlattenConfig, Settings
from rollbot.storage.events import Actor

Run = Callable[..., CompletedProcess[str]]


@pytest.fixture
def live_clock() -> ManualClock:
    return ManualClock(datetime.now(UTC))


@pytest.fixture
def operator() -> Actor:
    return Actor(id="U0OPERATOR", source="cli", name="ops")


@pytest.fixture
def integration(settings: Settings) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        base = {
            "approvals": ApprovalsConfig(rollback_needs_approval=False),
            "flatten": FlattenConfig(recheck_interval_s=0.05),
        }
        return settings.model_copy(update={**base, **overrides})

    return make


@pytest.fixture
def cli(rollbot: Any, write_config: Callable[..., Path]) -> Callable[[Settings], Run]:
    def configure(cfg: Settings) -> Run:
        path = write_config(cfg, "integration.toml")

        def run(*args: str, env: dict[str, str] | None = None) -> CompletedProcess[str]:
            return rollbot(*args, env={"ROLLBOT_CONFIG": str(path), **(env or {})})

        return run

    return configure


@pytest.fixture
async def make_engine_app(
    live_clock: ManualClock, operator: Actor
) -> AsyncIterator[Callable[..., Rollbot]]:
    opened: list[Rollbot] = []

    def make(cfg: Settings, venues: dict[str, Venue] | None = None) -> Rollbot:
        app = Rollbot.open(cfg, clock=live_clock, venues=venues)
        opened.append(app)
        app.gates.arm(operator, "live desk before the incident")
        return app

    yield make
    for app in opened:
        await app.aclose()
