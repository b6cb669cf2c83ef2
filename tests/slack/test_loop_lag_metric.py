"""Issue 18: /metrics exposes the event loop's lag, so whatever holds the loop (a sweep over
the whole history, a burst of CPU in the kill path) shows on a dashboard before Slack's 3 s."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import aiohttp
from fakes.rollbot_harness import bot_settings, running
from fakes.slack import FakeSlack


async def scrape(port: int | None) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        assert resp.status == 200
        return await resp.text()


def recent(text: str, quantile: str) -> float:
    match = re.search(
        rf'^rollbot_event_loop_lag_recent_seconds{{quantile="{quantile}"}} (\S+)$', text, re.M
    )
    assert match, text
    return float(match.group(1))


async def test_a_stalled_event_loop_shows_in_the_lag_metric(
    slack: FakeSlack, tmp_path: Path
) -> None:
    async with running(slack, bot_settings(tmp_path), http=True) as server:
        await asyncio.sleep(0.1)  # the probe has taken a few samples
        assert "rollbot_event_loop_lag_seconds_bucket" in await scrape(server.bound_port)
        time.sleep(0.08)  # something holds the loop, as a sweep over the history did
        await asyncio.sleep(0.05)
        text = await scrape(server.bound_port)
        assert recent(text, "1") >= 0.05  # the max over the recent samples saw the stall
        assert recent(text, "0.5") < 0.05  # one stall, not the typical wake-up
        count = re.search(r"^rollbot_event_loop_lag_seconds_count (\S+)$", text, re.M)
        assert count and float(count.group(1)) >= 5
