"""Figure 6 — footprint of the real process: `rollbot serve --http --port 0` started as a
subprocess against the loopback Slack, timed from exec to its ready line; its resident memory
(VmRSS from /proc) once idle, and again after it ran a full rollback (200 positions and resting
orders over three paper venues at 25 ms) asked for with a signed /rollback.

The config turns off `approvals.rollback_needs_approval` so the /rollback starts at once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from fakes.slack import FakeSlack

from bench.common import OPS, RISK, BookWatcher, Figure, Sizes, paper_venues, rss_mib, seed_books
from bench.serve_process import query_one, serve_process


async def one_run(sizes: Sizes, root: Path, slack: FakeSlack) -> dict[str, float]:
    venues = paper_venues(root, 3, latency_ms=sizes.latency_ms)
    root.mkdir(parents=True, exist_ok=True)
    seed_books(venues, positions=sizes.rollback_positions, orders=sizes.rollback_orders, seed=6)
    async with serve_process(root, slack, venues) as bot:
        await asyncio.sleep(sizes.idle_s)
        idle = rss_mib(bot.proc.pid)
        asked = time.perf_counter()
        resp = await slack.http_slash_command(
            bot.url, "/rollback", "bench: footprint rollback", user_id=RISK, channel_id=OPS
        )
        if resp.status != 200:
            raise RuntimeError(f"/rollback got HTTP {resp.status}: {resp.response_text}")
        while True:
            row = query_one(
                root / "rollbot.db",
                "SELECT phase, final_status FROM incidents WHERE kind = 'rollback'",
            )
            if row and row[0] == "DONE":
                break
            if time.perf_counter() - asked > 60:
                raise TimeoutError(f"rollback in `rollbot serve` not done after 60 s ({row})")
            await asyncio.sleep(0.01)
        rolled = time.perf_counter() - asked
        books = BookWatcher(venues)
        left = (books.positions(), books.open_orders())
        books.close()
        if row[1] != "SUCCESS" or left != (0, 0):
            raise RuntimeError(f"rollback in `rollbot serve` ended {row}, left {left}")
        await asyncio.sleep(sizes.idle_s)
        after = rss_mib(bot.proc.pid)
    return {"ready": bot.ready_s, "idle": idle, "after": after, "rollback": rolled}


async def run(sizes: Sizes, root: Path) -> list[Figure]:
    runs = []
    async with FakeSlack() as slack:
        for i in range(sizes.start_runs):
            runs.append(await one_run(sizes, root / f"run{i}", slack))
    where = f"{sizes.start_runs} fresh `rollbot serve --http --port 0` processes"
    return [
        Figure(
            key="start_to_ready",
            title="Footprint: `rollbot serve` exec to ready line",
            unit="s",
            samples=[r["ready"] for r in runs],
            note=f"{where}; includes the interpreter start, imports and auth.test",
        ),
        Figure(
            key="rss_idle",
            title="Footprint: RSS idle",
            unit="MiB",
            samples=[r["idle"] for r in runs],
            note=f"VmRSS {sizes.idle_s:g} s after the ready line",
        ),
        Figure(
            key="rss_after_rollback",
            title="Footprint: RSS after a full rollback",
            unit="MiB",
            samples=[r["after"] for r in runs],
            note=f"after a /rollback of {sizes.rollback_positions} positions over 3 venues,"
            f" {sizes.idle_s:g} s after it ended",
        ),
        Figure(
            key="serve_rollback",
            title="Full rollback via signed /rollback in `rollbot serve`",
            unit="s",
            samples=[r["rollback"] for r in runs],
            target=10,
            target_text="<= 10 s (seed 180 s)",
            note="from the request to the incident DONE in the bot's database, verified flat",
        ),
    ]
