"""What a rollback run is made of and what it leaves behind: the seed's five steps with their
targets, each step's report (its STEP_ENDED event), and the run's outcome. Plain data, read
by the steps, the report, the drills and the faces alike; nothing here touches a venue.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from rollbot.commands.desk.context import Rollbot
from rollbot.storage.incidents import Incident

D0 = Decimal(0)


class StepStatus(StrEnum):
    SUCCESS = "SUCCESS"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


class Step(BaseModel):
    number: int
    name: str
    target_seconds: float  # seed target for this step alone
    cumulative_target_seconds: float


STEPS = {
    1: Step(number=1, name="Immediate Halt", target_seconds=10, cumulative_target_seconds=10),
    2: Step(number=2, name="Disconnect", target_seconds=10, cumulative_target_seconds=20),
    3: Step(number=3, name="Assess Positions", target_seconds=10, cumulative_target_seconds=30),
    4: Step(number=4, name="Flatten Positions", target_seconds=90, cumulative_target_seconds=120),
    5: Step(number=5, name="Verify Recovery", target_seconds=60, cumulative_target_seconds=180),
}
KILL_STEPS = (1, 2)
FLATTEN_STEPS = (3, 4, 5)
ROLLBACK_STEPS = (1, 2, 3, 4, 5)


class StepReport(BaseModel):
    step: int
    name: str
    start_time: datetime
    end_time: datetime
    duration_seconds: float
    elapsed_seconds: float  # since the incident's first step started
    target_seconds: float
    cumulative_target_seconds: float
    status: StepStatus
    actions: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)  # what went wrong, even when it recovered
    venues: dict[str, str] = Field(default_factory=dict)  # venue -> its own outcome
    positions: dict[str, dict[str, dict[str, str]]] | None = None
    total_pnl: str | None = None
    flatten_strategy: dict[str, str] | None = None
    orders: list[dict[str, str]] | None = None
    verification: dict[str, Any] | None = None

    @property
    def on_target(self) -> bool:
        return self.elapsed_seconds <= self.cumulative_target_seconds


class Outcome(BaseModel):
    incident: Incident
    steps: list[StepReport]
    final_status: StepStatus
    residual: dict[str, dict[str, str]] = Field(default_factory=dict)  # venue -> symbol -> qty
    open_orders: dict[str, int] = Field(default_factory=dict)
    unreachable: list[str] = Field(default_factory=list)
    new_incident: bool = True


StepCallback = Callable[[StepReport], Awaitable[None] | None]
StartCallback = Callable[[Step], Awaitable[None] | None]


async def maybe_await(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result


def step_status(ok: int, total: int) -> StepStatus:
    if total == 0:
        return StepStatus.SKIPPED
    if ok == total:
        return StepStatus.SUCCESS
    return StepStatus.PARTIAL if ok else StepStatus.FAILED


def qty(d: Decimal) -> str:
    return format(d.normalize(), "f")


def ended_steps(app: Rollbot, incident_id: str) -> list[StepReport]:
    """The incident's steps as their STEP_ENDED events recorded them, in order."""
    return [
        StepReport.model_validate(e.data)
        for e in app.events.list(incident_id=incident_id, kinds=["STEP_ENDED"])
    ]


def outcome_of(incident: Incident, reports: list[StepReport], *, new: bool) -> Outcome:
    """The run's outcome from its step reports: the worst of them, and what step 5 left."""
    statuses = [r.status for r in reports if r.status is not StepStatus.SKIPPED]
    if not statuses or all(s is StepStatus.SUCCESS for s in statuses):
        final = StepStatus.SUCCESS
    elif reports[-1].status is StepStatus.FAILED and all(s is StepStatus.FAILED for s in statuses):
        final = StepStatus.FAILED
    else:
        final = StepStatus.PARTIAL
    left: dict[str, Any] = {}  # what step 5 saw left: none when the run had no step 5
    last = reports[-1] if reports else None
    if last and last.verification:
        seen = last.verification
        left = {
            # verified where the venue answered, last known where it did not (see unreachable)
            "residual": {**seen.get("residual", {}), **seen.get("last_known_residual", {})},
            "open_orders": seen.get("open_orders", {}),
            "unreachable": seen.get("unreachable", []),
        }
    return Outcome(incident=incident, steps=reports, final_status=final, new_incident=new, **left)


def outcome_view(outcome: Outcome, run: Incident) -> dict[str, Any]:
    """The outcome as the thread shows it: of this run (a continuation's flatten or rollback,
    not the kill that opened the incident)."""
    data = outcome.model_dump(mode="json", exclude={"steps"})
    data["incident"]["kind"] = run.kind
    return data
