"""Executing an approved request, exactly once: only the vote that moved it to EXECUTING runs it
(flatten and rollback through the Engine keyed "approval:<id>", so a second run opens no second
incident and sends no second set of orders), and its result is stored once. After a crash, the
request left EXECUTING takes the outcome of the run the restart finished."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from rollbot.commands.approvals.ledger import Ledger
from rollbot.commands.approvals.plans import clear_targets, refuse_rearm
from rollbot.commands.approvals.records import (
    ApprovalRequest,
    Status,
    VoteResult,
    label,
    summarize,
)
from rollbot.commands.risk.alerts import alert_rolled_back, rollback_request
from rollbot.commands.rollback.engine import Engine, Outcome, StartCallback, StepCallback
from rollbot.commands.rollback.rearm import execute_resume
from rollbot.errors import Refused, RollbotError
from rollbot.storage.events import Actor
from rollbot.storage.json_text import text_field


def run_result(outcome: Outcome) -> dict[str, Any]:
    """What a request that ran a flatten or rollback stores of its run."""
    return {
        "incident_id": outcome.incident.id,
        "final_status": outcome.final_status.value,
        "residual": outcome.residual,
        "open_orders": outcome.open_orders,
        "unreachable": outcome.unreachable,
    }


class Execution:
    def __init__(self, ledger: Ledger) -> None:
        self.app = ledger.app
        self.ledger = ledger

    # -- running ------------------------------------------------------------------------------
    async def execute(
        self,
        request: ApprovalRequest,
        voter: Actor,
        on_start: StartCallback | None,
        on_step: StepCallback | None,
    ) -> VoteResult:
        """Runs once per request: only the vote that moved it to EXECUTING gets here."""
        approvers = ", ".join(label(v) for v in request.approvers)
        why = (
            f"{request.reason} (approval {request.id}: requested by {request.requester_label},"
            f" approved by {approvers})"
        )
        key = f"approval:{request.id}"
        status, code = Status.EXECUTED, "EXECUTED"
        try:
            if request.action in ("flatten", "rollback"):
                engine = Engine(self.app, voter, on_start=on_start, on_step=on_step)
                outcome: Outcome
                going_on = request.incident_id and self.app.incidents.get(request.incident_id)
                if going_on and going_on.is_open:  # the incident goes on: its thread, its pages
                    symbols = {
                        str(line["symbol"]) for line in request.plan if isinstance(line, dict)
                    }
                    outcome = await engine.continue_incident(
                        going_on.id,
                        kind=request.action,
                        reason=why,
                        dedupe_key=key,
                        venue=request.params.get("venue"),
                        symbols=(symbols or None) if request.action == "flatten" else None,
                    )
                elif request.action == "flatten":
                    symbols = {
                        str(line["symbol"]) for line in request.plan if isinstance(line, dict)
                    }
                    outcome = await engine.flatten(
                        why, request.params.get("venue"), dedupe_key=key, symbols=symbols or None
                    )
                elif request.params.get("alert_id"):
                    alert = request.params["alert_id"]
                    trig = rollback_request(self.app, alert)
                    outcome = await engine.rollback(
                        f"{trig['reason']} — {why}",
                        trigger=trig["trigger"],
                        trigger_value=trig["trigger_value"],
                        trigger_threshold=trig["trigger_threshold"],
                        dedupe_key=key,
                    )
                    alert_rolled_back(self.app, alert, outcome.incident.id, voter)
                else:
                    outcome = await engine.rollback(why, dedupe_key=key)
                result: dict[str, Any] = run_result(outcome)
            elif request.action == "clear_hold":
                scope = request.params["scope"]
                with self.app.db.write():  # checked and cleared with no kill in between
                    refuse_rearm(self.app, request.action, request.params, request.created_at)
                    named = clear_targets(self.app, request.params, request.created_at)
                    cleared = self.app.killswitch.clear_ids([h.id for h in named], why, voter)
                result = {
                    "scope": scope,
                    "cleared": [h.id for h in cleared],
                    "state": self.app.killswitch.state_of(["global", scope]).value,
                }
            elif request.action == "enable_gates":
                with self.app.db.write():  # no hold cleared between the check and the arming
                    refuse_rearm(self.app, request.action, request.params)
                    values = self.app.gates.arm(voter, why, request.incident_id)
                result = {"live_allowed": values.live_allowed}
            else:
                result = execute_resume(self.app, request.params["incident_id"], voter, why)
        except RollbotError as exc:
            status, code = Status.FAILED, "EXECUTION_FAILED"
            result = {"error": str(exc)}
        except Exception as exc:
            with self.app.db.write():
                self.finish(
                    request, voter, Status.FAILED, {"error": f"{type(exc).__name__}: {exc}"}
                )
            raise
        with self.app.db.write():
            self.finish(request, voter, status, result)
        done = self.ledger.get(request.id)
        message = (
            f"{request.id} approved and executed: {summarize(request.action, result)}"
            if status is Status.EXECUTED
            else f"{request.id} approved but execution failed: {result['error']}"
        )
        return VoteResult(
            approval=done,
            accepted=True,
            code=code,
            message=message,
            executed=True,
            result=result,
        )

    def finish(
        self, request: ApprovalRequest, voter: Actor, status: Status, result: dict[str, Any]
    ) -> None:
        current = self.ledger.load(request.id)
        if current is not None and current.status is not Status.EXECUTING:
            return  # recorded already (by a restart's reconcile_interrupted): once is enough
        self.ledger.set_status(request.id, status, result=result)
        self.app.events.append(
            "APPROVAL_EXECUTED" if status is Status.EXECUTED else "APPROVAL_FAILED",
            voter,
            incident_id=request.incident_id or result.get("incident_id"),
            data={"approval_id": request.id, "action": request.action, "result": result},
        )
        self.ledger.refresh(request.id)

    # -- after a crash ------------------------------------------------------------------------
    async def reconcile_interrupted(
        self, actor: Actor, grace: timedelta = timedelta(seconds=60)
    ) -> list[ApprovalRequest]:
        """Requests left EXECUTING by a process that died before storing the result. A flatten
        or rollback ran as the incident keyed "approval:<id>": once that run is DONE (the
        restart's resume_unfinished finishes it first) the request takes its outcome. Other
        actions left events whose reason names the approval, or did not run. With nothing to
        show after `grace`, the action never started: FAILED, nothing ran."""
        stale = self.app.clock.now() - grace
        done = []
        for row in self.app.db.query("SELECT id FROM approvals WHERE status = 'EXECUTING'"):
            request = self.ledger.get(row["id"])
            started = request.decided_at is not None and request.decided_at < stale
            status, result = Status.EXECUTED, None
            if request.action in ("flatten", "rollback"):
                found = self.app.db.one(
                    "SELECT id FROM incidents WHERE dedupe_key = ?", (f"approval:{request.id}",)
                ) or self.app.db.one(  # or the open incident it continued
                    "SELECT incident_id AS id FROM events WHERE kind = 'INCIDENT_CONTINUED'"
                    f" AND {text_field(self.app.db, 'data', 'key')} = ?",
                    (f"approval:{request.id}",),
                )
                if found is not None:
                    incident = self.app.incidents.get(found["id"])
                    if incident.phase != "DONE":
                        continue  # still running somewhere, or left for resume_unfinished
                    engine = Engine(self.app, actor)  # a finished run: read back, nothing sent
                    outcome = await engine.run(incident, engine.steps_of(incident), new=False)
                    alert = request.params.get("alert_id")
                    if alert:
                        with contextlib.suppress(Refused):  # linked to another run meanwhile
                            alert_rolled_back(self.app, alert, incident.id, actor)
                    result = run_result(outcome)
            else:
                named = self.app.db.query(
                    "SELECT kind FROM events WHERE reason LIKE ? ORDER BY id",
                    (f"%(approval {request.id}:%",),
                )
                if named:
                    result = {"events": [r["kind"] for r in named]}
            if result is None:
                if not started:
                    continue  # may be starting in another process right now
                status = Status.FAILED
                result = {"error": "the process running it stopped before it started; nothing ran"}
            result["recovered"] = True
            with self.app.db.write():
                self.finish(request, actor, status, result)
            done.append(self.ledger.get(request.id))
        return done
