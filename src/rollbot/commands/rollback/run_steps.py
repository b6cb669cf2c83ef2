"""The step loop of a run: each step of the run in order (one that ended before is taken as it
was), fenced by the claim before it starts, bracketed by STEP_STARTED and STEP_ENDED, its
report in the thread; then the outcome, and the incident DONE.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from rollbot.clock import parse_iso
from rollbot.commands.rollback.run_claims import taken_over
from rollbot.commands.rollback.run_context import RunContext
from rollbot.commands.rollback.run_model import (
    STEPS,
    Outcome,
    StartCallback,
    StepCallback,
    StepReport,
    maybe_await,
    outcome_of,
    outcome_view,
)
from rollbot.commands.rollback.steps.assess import assess
from rollbot.commands.rollback.steps.disconnect import disconnect
from rollbot.commands.rollback.steps.flatten import flatten
from rollbot.commands.rollback.steps.halt import halt
from rollbot.commands.rollback.steps.verify import verify
from rollbot.errors import Refused

STEP_FUNCTIONS: dict[int, Callable[[RunContext], Awaitable[dict[str, Any]]]] = {
    1: halt,
    2: disconnect,
    3: assess,
    4: flatten,
    5: verify,
}


async def run_steps(
    run: RunContext,
    steps: tuple[int, ...],
    done: dict[int, StepReport],
    *,
    new: bool,
    mark: int,
    on_start: StartCallback | None,
    on_step: StepCallback | None,
) -> Outcome:
    app, incident = run.app, run.incident
    first = app.db.one(
        "SELECT at FROM events WHERE incident_id = ? AND kind = 'STEP_STARTED' AND id > ?"
        " ORDER BY id LIMIT 1",
        (incident.id, mark),
    )
    t0 = parse_iso(first["at"]) if first else app.clock.now()
    run.reach_venues()
    reports: list[StepReport] = []
    for number in steps:
        if number in done:
            reports.append(done[number])
            continue
        taken = taken_over(app, incident.id)
        if taken:  # this process stalled past its heartbeat and another host took the run
            raise Refused(
                f"{incident.id} was taken over by {taken} while this process could not renew"
                " its heartbeat; it finishes the run there",
                code="TAKEN_OVER",
            )
        await maybe_await(on_start(STEPS[number]) if on_start else None)
        started = app.clock.now()
        app.events.append(
            "STEP_STARTED",
            run.actor,
            incident_id=incident.id,
            data={"step": number, "name": STEPS[number].name},
        )
        fields = await STEP_FUNCTIONS[number](run)
        report = _record_step(run, number, started, t0, fields)
        reports.append(report)
        run.watch_loss(report)
        await maybe_await(on_step(report) if on_step else None)
    outcome = outcome_of(app.incidents.get(incident.id), reports, new=new)
    with app.db.write():
        mark_done(run, outcome)
        app.outbox.put(
            "thread",
            incident_id=incident.id,
            text=f"{incident.id} {incident.kind}: {outcome.final_status.value}",
            view="outcome",
            data=outcome_view(outcome, incident),
        )
        app.outbox.put("headline", incident_id=incident.id)
    outcome.incident = app.incidents.get(incident.id)
    return outcome


def _record_step(
    run: RunContext, number: int, started: datetime, t0: datetime, fields: dict[str, Any]
) -> StepReport:
    """The step's report: its STEP_ENDED event, then its line in the thread and the headline."""
    app, incident, step = run.app, run.incident, STEPS[number]
    ended = app.clock.now()
    report = StepReport(
        step=step.number,
        name=step.name,
        start_time=started,
        end_time=ended,
        duration_seconds=round((ended - started).total_seconds(), 3),
        elapsed_seconds=round((ended - t0).total_seconds(), 3),
        target_seconds=step.target_seconds,
        cumulative_target_seconds=step.cumulative_target_seconds,
        **fields,
    )
    with app.db.write():
        app.events.append(
            "STEP_ENDED",
            run.actor,
            incident_id=incident.id,
            data=report.model_dump(mode="json"),
        )
        app.outbox.put(
            "thread",
            incident_id=incident.id,
            text=f"Step {step.number} {step.name}: {report.status.value}",
            view="step",
            data={**report.model_dump(mode="json"), "by": run.actor.label},
        )
        app.outbox.put("headline", incident_id=incident.id)
    return report


def mark_done(run: RunContext, outcome: Outcome) -> None:
    """The incident's final status and its DONE phase (inside the caller's transaction)."""
    final = outcome.final_status.value
    run.app.incidents.update(run.incident.id, final_status=final)
    run.app.incidents.set_phase(run.incident.id, "DONE", run.actor, final_status=final)
