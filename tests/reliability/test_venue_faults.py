"""Venue faults on the paper venue: disconnects (that come back, or stay down), reject storms,
partial fills, fills after their cancel, and a venue that stops answering mid-rollback. Whatever
the fault, the rollback ends flat or reports exactly the residual the paper book holds (the last
one known, and says so, when the venue cannot be read), never sends a duplicate, and escalates.

In-process on a ManualClock: the engine's waits (re-checks, limit timeouts, the give-up) cost no
real time; only the venue that never answers costs its (short) call timeouts."""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from escalation.helpers import contacts

from reliability.figures import record
from reliability.support import (
    LARGE_BOOK,
    LARGE_START,
    OPERATORS,
    SMALL_BOOK,
    SMALL_START,
    audit_book,
    log_gaps,
    settings_for,
    write_book,
)
from rollbot.bot.scheduler import Clockwork
from rollbot.brokers.paper.venue import PaperVenue
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.paging.escalation import get_escalation
from rollbot.commands.rollback.engine import Engine, Outcome, Step, StepStatus
from rollbot.config import FlattenConfig
from rollbot.storage.events import Actor

OPERATOR = Actor(id=OPERATORS[0], source="cli", name="alice", host="desk")
NEVER_MS = 60_000  # a call that takes a minute: far above the engine's venue timeout below
VENUE_TIMEOUT_S = 0.05


@dataclass
class Fault:
    name: str
    book: str  # "small" (market orders) or "large" (limit orders)
    paper: dict[str, Any]
    flatten: dict[str, Any]
    down_at_step: int | None = None  # the venue stops answering when this step starts
    outage: bool = False  # stay_down(): the injected disconnect does not come back


FAULTS = [
    *[
        Fault(f"disconnect after {n} calls, comes back", "small", {"disconnect_after_calls": n}, {})
        for n in (3, 7, 10, 12, 15)
    ],
    *[
        Fault(
            f"disconnect after {n} calls, stays down",
            "small",
            {"disconnect_after_calls": n},
            {"timeout_s": 20, "recheck_interval_s": 1},
            outage=True,
        )
        for n in (3, 7, 10, 11, 12, 15)
    ],
    *[
        Fault(
            f"reject storm 90% (seed {seed})",
            "small",
            {"reject_rate": 0.9, "seed": seed},
            {"timeout_s": 15, "recheck_interval_s": 1},
        )
        for seed in range(1, 7)
    ],
    *[
        Fault(f"partial fills {ratio}", "small", {"fill": "partial", "partial_ratio": ratio}, {})
        for ratio in ("0.5", "0.3", "0.9")
    ],
    Fault("partial fills, limit orders", "large", {"fill": "partial"}, {}),
    Fault(
        "no fills, fills land after their cancel",
        "large",
        {"fill": "none", "late_fill": True},
        {"timeout_s": 60, "limit_timeout_s": 5},
    ),
    Fault(
        "partial fills that also land after their cancel",
        "large",
        {"fill": "partial", "late_fill": True, "partial_ratio": "0.4"},
        {"limit_timeout_s": 5},
    ),
    Fault(
        "rejects, partial fills and a disconnect together",
        "small",
        {"reject_rate": 0.5, "fill": "partial", "disconnect_after_calls": 14},
        {"timeout_s": 30, "recheck_interval_s": 1},
    ),
    Fault(
        "no fills at all: give up at the timeout",
        "large",
        {"fill": "none"},
        {"timeout_s": 30, "limit_timeout_s": 5},
    ),
    *[
        Fault(
            f"never answers from step {n}",
            "small",
            {},
            {"timeout_s": 4, "recheck_interval_s": 1},
            down_at_step=n,
        )
        for n in (4, 5)
    ],
]


@dataclass
class Result:
    fault: Fault
    outcome: Outcome
    positions: dict[str, Decimal]
    problems: list[str]


def never_read(outcome: Outcome) -> bool:
    flatten = next((r for r in outcome.steps if r.step == 4), None)
    return flatten is not None and "never read" in flatten.venues.get("paper", "")


def text(quantities: dict[str, Decimal]) -> dict[str, str]:
    return {s: format(q.normalize(), "f") for s, q in quantities.items()}


async def one_rollback(fault: Fault, root: Path, template: Path, book: Path) -> Result:
    shutil.copytree(template, root)
    settings = settings_for(
        root,
        book,
        rollback_needs_approval=False,
        flatten=FlattenConfig(**{"recheck_interval_s": 0.05, **fault.flatten}),
        **fault.paper,
    )
    settings.contacts = contacts()  # the seed's escalation chain, so there is someone to page
    rb = Rollbot.open(settings, clock=ManualClock())
    venue = rb.venue("paper")
    assert isinstance(venue, PaperVenue)
    if fault.outage:
        venue.stay_down()

    def on_start(step: Step) -> None:
        if step.number == fault.down_at_step:  # every call from now on takes a minute
            venue.cfg = venue.cfg.model_copy(update={"latency_ms": NEVER_MS})

    problems: list[str] = []
    try:
        engine = Engine(rb, OPERATOR, on_start=on_start, venue_timeout_s=VENUE_TIMEOUT_S)
        try:
            outcome = await asyncio.wait_for(engine.rollback(f"fault: {fault.name}"), 20)
        except TimeoutError:
            venue.cfg = venue.cfg.model_copy(update={"latency_ms": 0})
            raise AssertionError(
                f"{fault.name}: the rollback was still waiting on the venue after 20 s"
            ) from None
        venue.cfg = venue.cfg.model_copy(update={"latency_ms": 0})
        start = LARGE_START if fault.book == "large" else SMALL_START
        audit = audit_book(venue.book.db, rb.db, start)
        if audit.duplicate_orders:
            problems.append(f"duplicates: {audit.duplicates + audit.overfilled + audit.flipped}")
        left = venue.book.order_rows("WHERE status IN ('OPEN', 'PARTIALLY_FILLED')")
        if outcome.final_status is StepStatus.SUCCESS:
            if audit.positions or left:
                problems.append(f"SUCCESS but the book holds {audit.positions}, {len(left)} orders")
        elif never_read(outcome):
            # down before anything could be read: the residual is unknown, and must be said so
            if "paper" not in outcome.unreachable:
                problems.append("never read, yet not named unreachable")
        else:
            reported = outcome.residual.get("paper", {})
            if reported != text(audit.positions):
                problems.append(
                    f"{outcome.final_status.value}: reported residual {reported},"
                    f" the book holds {text(audit.positions)}"
                )
            if not audit.positions and not left and not outcome.unreachable:
                problems.append(f"{outcome.final_status.value} although flat and verified")
        if fault.down_at_step and "paper" not in outcome.unreachable:
            problems.append("the venue that stopped answering is not named unreachable")
        pending = rb.db.query("SELECT * FROM order_intents WHERE status = 'PENDING'")
        if pending and not outcome.unreachable:
            problems.append(f"{len(pending)} order(s) still PENDING in the ledger at the end")
        await Clockwork(rb).sweep()  # what the clock does: escalate open incidents
        esc = get_escalation(rb, outcome.incident.id)
        pinged = rb.events.list(incident_id=outcome.incident.id, kinds=["ESCALATION_PINGED"])
        if esc is None or not pinged:
            problems.append("not escalated")
        problems += [f"event log: {g}" for g in log_gaps(rb.db, rb.gates)]
        return Result(fault, outcome, audit.positions, problems)
    finally:
        await rb.aclose()
        venue.book.db.close()


async def test_venue_faults_end_flat_or_report_the_exact_residual_and_escalate(
    scratch: Path,
) -> None:
    templates = {}
    for name, book_text in (("small", SMALL_BOOK), ("large", LARGE_BOOK)):
        book = write_book(scratch, book_text, f"{name}.toml")
        template = scratch / f"template-{name}"
        rb = Rollbot.open(settings_for(template, book), clock=ManualClock())
        rb.gates.arm(OPERATOR, "a live desk")
        rb.venues()
        await rb.aclose()
        for v in (rb._venues or {}).values():
            v.book.db.close()  # type: ignore[attr-defined]
        templates[name] = (template, book)

    started = time.perf_counter()
    results = []
    for i, fault in enumerate(FAULTS):
        template, book = templates[fault.book]
        try:
            results.append(await one_rollback(fault, scratch / f"run-{i}", template, book))
        except AssertionError as exc:
            results.append(Result(fault, None, {}, [str(exc)]))  # type: ignore[arg-type]
    seconds = time.perf_counter() - started

    flat = [r for r in results if r.outcome and r.outcome.final_status is StepStatus.SUCCESS]
    unknown = [r for r in results if r.outcome and never_read(r.outcome) and not r.problems]
    residual = [r for r in results if r.outcome and r not in flat + unknown and not r.problems]
    bad = [r for r in results if r.problems]
    record(
        "venue faults",
        f"{len(results)} rollbacks in {seconds:.1f} s: {len(flat)} ended flat,"
        f" {len(residual)} reported the exact residual, {len(unknown)} never readable"
        f" (residual unknown, said so), {len(bad)} wrong;"
        f" {len(results) - len([r for r in results if 'not escalated' in r.problems])}"
        " escalated",
    )
    for r in results:
        if r.outcome is None:
            what = "did not finish"
        elif r.outcome.final_status is StepStatus.SUCCESS:
            what = "flat"
        else:
            reported = r.outcome.residual.get("paper") or "none"
            if never_read(r.outcome):
                reported = "unknown: never read, named unreachable"
            elif r.outcome.unreachable:
                reported = f"{reported} (last known; unreachable)"
            what = f"{r.outcome.final_status.value}, residual {reported}"
        record(
            "venue faults", f"  {r.fault.name}: {what}" + (f" — {r.problems}" if r.problems else "")
        )
    assert not bad, "\n".join(f"{r.fault.name}: {r.problems}" for r in bad)
