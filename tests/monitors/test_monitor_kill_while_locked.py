"""The monitors' automatic kill under another process's write lock: the cancels go out at
once, the firing and its HALTED hold are stored once the lock goes, and the tick is not held
for the busy timeout (issue 14 item 7a)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from pg_server import BOTH

from rollbot.brokers.paper.venue import PaperVenue
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.risk.monitors import Monitor
from rollbot.commands.rollback.engine import Engine
from rollbot.storage.events import Actor

MakeApp = Callable[..., Rollbot]


@pytest.fixture(params=BOTH)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


async def test_an_automatic_kill_under_a_lock_cancels_at_once_and_holds_once_it_can(
    make_app: MakeApp, operator: Actor, write_lock: Callable[..., Any]
) -> None:
    # one kill of a strategy (a hold only: the 24 paper orders stay) is the trigger's threshold
    app = make_app(kill_switches={"kills_per_day": {"threshold": 1, "action": "auto_rollback"}})
    paper = app.venue("paper")
    assert isinstance(paper, PaperVenue)
    await Engine(app, operator).kill("alpha misbehaves", "strategy:alpha")
    assert len(await paper.open_orders()) == 24
    monitor = Monitor(app)

    with write_lock(app.settings.database):
        started = time.monotonic()
        report = await monitor.tick()
        took = time.monotonic() - started
        assert "kills_per_day@*: database locked; cancelling now" in report.suppressed, report
        assert took < app.settings.database.busy_timeout_ms / 1000  # never waited it out
        for _ in range(200):  # the cancels need no database
            if not await paper.open_orders():
                break
            await asyncio.sleep(0.02)
        assert await paper.open_orders() == []
        assert [h.scope for h in app.killswitch.holds.active()] == ["strategy:alpha"]
    await monitor.settle()

    rollback = app.incidents.latest()
    assert rollback is not None and rollback.kind == "rollback"
    assert rollback.final_status == "SUCCESS"
    sources = {h.source for h in app.killswitch.holds.active(["global"])}
    assert "monitor:kills_per_day" in sources
    (early,) = app.events.list(incident_id=rollback.id, kinds=["CANCELLED_BEFORE_HOLD"])
    assert early.data["venues"] == {"paper": "24 of 24 orders cancelled, none left"}


async def test_an_automatic_kill_whose_hold_the_database_refuses_still_cancels_at_once(
    make_app: MakeApp, operator: Actor, refuse_holds: Callable[[Any], None]
) -> None:
    """Not a lock: the write fails for good (a full disk, a server's refusal). The cancels go
    out all the same; the firing is tried again at the next tick."""
    app = make_app(kill_switches={"kills_per_day": {"threshold": 1, "action": "auto_rollback"}})
    paper = app.venue("paper")
    assert isinstance(paper, PaperVenue)
    await Engine(app, operator).kill("alpha misbehaves", "strategy:alpha")
    assert len(await paper.open_orders()) == 24
    refuse_holds(app.db)
    monitor = Monitor(app)
    report = await monitor.tick()
    assert any(
        "kills_per_day@*: the firing could not be stored" in s and "cancelling now" in s
        for s in report.suppressed
    ), report
    await monitor.settle()
    assert await paper.open_orders() == []
    assert [h.scope for h in app.killswitch.holds.active()] == ["strategy:alpha"]
