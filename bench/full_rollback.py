"""Figure 4 — the full rollback, HALT -> DISCONNECT -> ASSESS -> FLATTEN -> VERIFY, on 200
positions (and resting orders) spread over three paper venues at 25 ms per round trip, with no
pacing limit. Target: verified flat within 10 s (the seed allows 180 s); each step's end is also
set against its cumulative seed target (10 / 20 / 30 / 120 / 180 s).

It runs through the engine directly, as the clock's auto-rollback does; a fresh database and
freshly seeded books each run. "Verified flat" is checked twice: the engine's own step 5 and the
book files read afterwards.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench.common import BookWatcher, Figure, Sizes, paper_venues, seed_books, settings_for
from bench.flatten_pacing import ACTOR, StepTimer
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.engine import STEPS, Engine


async def one_run(sizes: Sizes, root: Path) -> dict[str, float]:
    venues = paper_venues(root, 3, latency_ms=sizes.latency_ms)
    seed_books(venues, positions=sizes.rollback_positions, orders=sizes.rollback_orders, seed=4)
    app = Rollbot.open(settings_for(root, venues))
    try:
        timer = StepTimer()
        outcome = await Engine(app, ACTOR, on_start=timer.on_start, on_step=timer.on_step).rollback(
            "bench: full rollback", trigger="bench"
        )
        total = time.perf_counter() - timer.origin
        books = BookWatcher(venues)
        left = (books.positions(), books.open_orders())
        books.close()
        if outcome.final_status.value != "SUCCESS" or left != (0, 0):
            raise RuntimeError(
                f"rollback did not end verified flat: {outcome.final_status},"
                f" {left[0]} positions and {left[1]} orders left"
            )
        result = {"total": total}
        for n in STEPS:
            result[f"elapsed{n}"] = timer.elapsed(n)
            result[f"duration{n}"] = timer.duration(n)
        return result
    finally:
        await app.aclose()


async def run(sizes: Sizes, root: Path) -> list[Figure]:
    runs = [await one_run(sizes, root / f"run{i}") for i in range(sizes.rollback_runs)]
    setup = (
        f"{sizes.rollback_positions} positions and {sizes.rollback_orders} resting orders over 3"
        f" paper venues at {sizes.latency_ms:g} ms round trip, no pacing limit;"
        f" {sizes.rollback_runs} runs"
    )
    figures = [
        Figure(
            key="rollback_total",
            title="Full rollback: halt -> verified flat",
            unit="s",
            samples=[r["total"] for r in runs],
            target=10,
            target_text="<= 10 s (seed 180 s)",
            note=setup,
        )
    ]
    for n, step in STEPS.items():
        durations = [r[f"duration{n}"] for r in runs]
        figures.append(
            Figure(
                key=f"rollback_step{n}",
                title=f"Rollback step {n} {step.name}: end, since the start",
                unit="s",
                samples=[r[f"elapsed{n}"] for r in runs],
                target=step.cumulative_target_seconds,
                target_text=f"seed: by {step.cumulative_target_seconds:g} s"
                f" (step alone {step.target_seconds:g} s)",
                note=f"the step alone: median {statistics.median(durations):.3f} s,"
                f" max {max(durations):.3f} s",
            )
        )
    return figures
