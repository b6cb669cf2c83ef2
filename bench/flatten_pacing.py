"""Figure 3 — flatten against the venue's pacing: 200 positions on one paper venue that accepts
at most 50 messages a second (25 ms per round trip), closed by the engine's /flatten path
(assess, flatten, verify). The time of step 4 is set against the pacing bound, 200 / 50 = 4 s;
the target is 1.2 x that bound.

The venue's pacer is a token bucket of capacity 1 (sends evenly spaced 1/rate apart, as IB
wants), so the bound is also the floor: 199 gaps of 20 ms plus the last round trip.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench.common import BookWatcher, Figure, Sizes, paper_venues, seed_books, settings_for
from rollbot.brokers.paper.venue import PaperVenue
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.engine import Engine, Step, StepReport
from rollbot.storage.events import Actor

ACTOR = Actor(id="bench", source="cli", name="bench")


class StepTimer:
    """perf_counter at each step's start and end (the engine's own times are wall-clock ms)."""

    def __init__(self) -> None:
        self.origin = time.perf_counter()
        self.started: dict[int, float] = {}
        self.ended: dict[int, float] = {}

    def on_start(self, step: Step) -> None:
        self.started[step.number] = time.perf_counter()

    def on_step(self, report: StepReport) -> None:
        self.ended[report.step] = time.perf_counter()

    def duration(self, step: int) -> float:
        return self.ended[step] - self.started[step]

    def elapsed(self, step: int) -> float:
        return self.ended[step] - self.origin


async def one_run(sizes: Sizes, root: Path) -> dict[str, float]:
    venues = paper_venues(root, 1, latency_ms=sizes.latency_ms, max_msgs_per_sec=sizes.flatten_rate)
    seed_books(venues, positions=sizes.flatten_positions, orders=0, seed=3)
    app = Rollbot.open(settings_for(root, venues))
    try:
        timer = StepTimer()
        outcome = await Engine(app, ACTOR, on_start=timer.on_start, on_step=timer.on_step).flatten(
            "bench: flatten against pacing", venue=venues[0].name
        )
        total = time.perf_counter() - timer.origin
        venue = app.venues()[venues[0].name]
        assert isinstance(venue, PaperVenue)
        books = BookWatcher(venues)
        left = books.positions()
        books.close()
        if outcome.final_status.value != "SUCCESS" or left:
            raise RuntimeError(f"flatten did not end flat: {outcome.final_status} ({left} left)")
        if venue.messages_sent != sizes.flatten_positions:
            raise RuntimeError(
                f"flatten sent {venue.messages_sent} messages for"
                f" {sizes.flatten_positions} positions (exactly once broken?)"
            )
        return {"step4": timer.duration(4), "total": total}
    finally:
        await app.aclose()


async def run(sizes: Sizes, root: Path) -> list[Figure]:
    runs = [await one_run(sizes, root / f"run{i}") for i in range(sizes.flatten_runs)]
    bound = sizes.flatten_positions / sizes.flatten_rate
    step4 = [r["step4"] for r in runs]
    setup = (
        f"{sizes.flatten_positions} positions, one paper venue, max_msgs_per_sec ="
        f" {sizes.flatten_rate:g}, {sizes.latency_ms:g} ms round trip; {sizes.flatten_runs} runs;"
        f" one message per position (checked)"
    )
    return [
        Figure(
            key="flatten_paced",
            title="Flatten: step 4 under pacing",
            unit="s",
            samples=step4,
            target=1.2 * bound,
            bound=bound,
            target_text=f"<= 1.2 x pacing bound {bound:g} s",
            note=f"{setup}. Against the bound: median {statistics.median(step4) / bound:.3f} x,"
            f" slowest {max(step4) / bound:.3f} x",
        ),
        Figure(
            key="flatten_paced_total",
            title="Flatten: assess + flatten + verify",
            unit="s",
            samples=[r["total"] for r in runs],
            bound=bound,
            note="the whole /flatten run (steps 3-5) on the same book",
        ),
    ]
