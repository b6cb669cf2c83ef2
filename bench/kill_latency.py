"""Figure 2 — kill latency: from a signed /kill leaving "Slack" to every resting order cancelled
in the venues' books and the pre-trade guard refusing new orders, with 1,000 open orders across
three paper venues that each take 25 ms per round trip.

Each run starts a fresh bot against freshly seeded books with live trading armed (so the guard
allows orders before the kill), then watches the book files through their own SQLite
connections — what is true at the venue, not what the bot believes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from fakes.slack import FakeSlack

from bench.common import (
    OPERATOR,
    OPS,
    BookWatcher,
    Figure,
    Sizes,
    paper_venues,
    seed_books,
    settings_for,
)
from bench.loopback import running_bot, settle
from rollbot.bot.slack.server import Server
from rollbot.brokers.base import Side
from rollbot.commands.rollback.engine import STEPS
from rollbot.storage.events import Actor

POLL_S = 0.002


def _guard_refuses(server: Server, venues: list[str]) -> bool:
    assert server.rb is not None
    return all(
        server.rb.killswitch.check_order(v, "S0000", Side.BUY, 1).code == "HALTED" for v in venues
    )


async def one_run(sizes: Sizes, root: Path, slack: FakeSlack) -> dict[str, float]:
    venues = paper_venues(root, 3, latency_ms=sizes.latency_ms)
    seed_books(venues, positions=90, orders=sizes.kill_orders, seed=2)
    names = [v.name for v in venues]
    async with running_bot(slack, settings_for(root, venues)) as bot:
        rb = bot.server.rb
        assert rb is not None
        rb.gates.arm(Actor(id="bench", source="system"), "bench: live before the kill")
        assert not _guard_refuses(bot.server, names), "guard refuses before the kill"
        books = BookWatcher(venues)
        before = books.open_orders()
        assert before == sizes.kill_orders, f"seeded {before} open orders"

        started = time.perf_counter()
        request = asyncio.create_task(
            slack.http_slash_command(
                bot.url, "/kill", "bench: runaway algo", user_id=OPERATOR, channel_id=OPS
            )
        )
        guard_at = cancelled_at = None
        while guard_at is None or cancelled_at is None:
            now = time.perf_counter()
            if now - started > 30:
                raise TimeoutError("kill benchmark: orders still open after 30 s")
            if guard_at is None and _guard_refuses(bot.server, names):
                guard_at = now
            if cancelled_at is None and books.open_orders() == 0:
                cancelled_at = time.perf_counter()
            await asyncio.sleep(POLL_S)
        books.close()
        ack = await request
        if ack.status != 200 or "HALTED" not in ack.response_text:
            raise RuntimeError(f"/kill was not acked as HALTED: {ack.status} {ack.response_text}")
        await settle(bot.server)
        incident = rb.incidents.latest()
        assert incident is not None and incident.final_status == "SUCCESS", incident
        ended = {
            e.data["step"]: e.data["elapsed_seconds"]
            for e in rb.events.list(incident_id=incident.id, kinds=["STEP_ENDED"])
        }
    return {
        "kill": max(guard_at, cancelled_at) - started,
        "guard": guard_at - started,
        "ack": ack.latency,
        "halt_step": ended[1],
        "disconnect_step": ended[2],
    }


async def run(sizes: Sizes, root: Path) -> list[Figure]:
    runs = []
    async with FakeSlack() as slack:
        for i in range(sizes.kill_runs):
            runs.append(await one_run(sizes, root / f"run{i}", slack))
    setup = (
        f"{sizes.kill_orders} resting orders over 3 paper venues at {sizes.latency_ms:g} ms per"
        f" round trip; fresh bot and books each run ({sizes.kill_runs} runs)"
    )
    return [
        Figure(
            key="kill_latency",
            title="Kill: /kill to all orders cancelled + guard refusing",
            unit="s",
            samples=[r["kill"] for r in runs],
            target=1.0,
            target_text="<= 1 s (seed 10 s)",
            note=setup,
        ),
        Figure(
            key="kill_guard",
            title="Kill: /kill to guard refusing (hold stored)",
            unit="s",
            samples=[r["guard"] for r in runs],
            note="the hold is written before the ack",
        ),
        Figure(
            key="kill_step1",
            title="Kill: step 1 Immediate Halt ended (cancels read back)",
            unit="s",
            samples=[r["halt_step"] for r in runs],
            target=STEPS[1].cumulative_target_seconds,
            target_text="seed step 1: 10 s",
            note="the engine's own clock, from step 1's start",
        ),
        Figure(
            key="kill_step2",
            title="Kill: step 2 Disconnect ended",
            unit="s",
            samples=[r["disconnect_step"] for r in runs],
            target=STEPS[2].cumulative_target_seconds,
            target_text="seed cumulative 20 s",
        ),
    ]
