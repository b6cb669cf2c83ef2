"""The clock runs the monitor every kill_switches.interval_s (real time, APScheduler)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from rollbot.bot.scheduler import Clockwork
from rollbot.commands.desk.context import Rollbot
from rollbot.storage.nav import NavSamples


async def test_the_clockwork_samples_every_venue_on_the_monitor_interval(
    make_app: Callable[..., Rollbot],
) -> None:
    app = make_app(kill_switches={"interval_s": 0.05})
    clockwork = Clockwork(app)
    await clockwork.start()
    try:
        deadline = time.monotonic() + 10
        while len(NavSamples(app.db).list(venue="paper")) < 3:
            assert time.monotonic() < deadline, "the monitor did not tick 3 times in 10 s"
            await asyncio.sleep(0.05)
    finally:
        clockwork.shutdown()
