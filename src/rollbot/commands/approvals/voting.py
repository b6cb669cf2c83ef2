"""Voting on a request: the whole decision is one write transaction (expired, already decided,
the requester approving their own request, no allowed role, a second vote by one person, resume
conditions or the re-arm rule no longer met, or a plan that no longer hashes the same — each a
refusal, and an event). A deny is final; the vote that reaches quorum hands the request, now
EXECUTING, to executing.py outside the transaction; a changed plan supersedes the request and a
fresh one is filed."""

from __future__ import annotations

from typing import Any

from rollbot.clock import iso
from rollbot.commands.approvals.executing import Execution
from rollbot.commands.approvals.filing import Filing
from rollbot.commands.approvals.ledger import Ledger
from rollbot.commands.approvals.plans import Plan, compute_plan, plan_hash, plan_sync, refuse_rearm
from rollbot.commands.approvals.records import (
    ApprovalRequest,
    Status,
    VoteResult,
    authenticated_id,
    identities_of,
    label,
)
from rollbot.commands.rollback.engine import StartCallback, StepCallback
from rollbot.commands.rollback.resume import resume_blockers
from rollbot.errors import BadInput, NotFound, Refused
from rollbot.storage.events import Actor


class Voting:
    def __init__(self, ledger: Ledger, filing: Filing, execution: Execution) -> None:
        self.app = ledger.app
        self.ledger = ledger
        self.filing = filing
        self.execution = execution

    def _refuse(
        self,
        request: ApprovalRequest,
        voter: Actor,
        decision: str,
        code: str,
        message: str,
        **extra: Any,
    ) -> VoteResult:
        self.app.events.append(
            "APPROVAL_REFUSED",
            voter,
            reason=message,
            incident_id=request.incident_id,
            data={
                "approval_id": request.id,
                "action": request.action,
                "decision": decision,
                "code": code,
                "voter": authenticated_id(voter, self.app.settings.identities),
                **extra,
            },
        )
        fresh = self.ledger.load(request.id)
        assert fresh is not None
        return VoteResult(approval=fresh, accepted=False, code=code, message=message)

    async def vote(
        self,
        approval_id: str,
        voter: Actor,
        decision: str,
        reason: str | None = None,
        *,
        on_start: StartCallback | None = None,
        on_step: StepCallback | None = None,
    ) -> VoteResult:
        if decision not in ("approve", "deny"):
            raise BadInput(f"a vote is 'approve' or 'deny', not {decision!r}")
        reason = reason.strip() if reason and reason.strip() else None
        before = self.ledger.load(approval_id.strip())
        if before is None:
            self.app.events.append(
                "APPROVAL_REFUSED",
                voter,
                reason=f"unknown approval {approval_id!r}",
                data={"approval_id": approval_id, "decision": decision, "code": "UNKNOWN"},
            )
            raise NotFound(f"unknown approval {approval_id!r}")
        fresh_plan: Plan | None = None
        if decision == "approve" and before.status is Status.PENDING and before.action == "flatten":
            # venues are read before the transaction: nothing awaits while the database is held
            try:
                fresh_plan = await compute_plan(self.app, before.action, before.params)
            except BadInput as exc:  # a symbol it names is no longer held
                fresh_plan = Plan(lines=[str(exc)], hash=plan_hash(str(exc)), problem=str(exc))
        with self.app.db.write():
            outcome = self._decide(before.id, voter, decision, reason, fresh_plan)
        if outcome.code != "EXECUTING":
            return outcome
        return await self.execution.execute(outcome.approval, voter, on_start, on_step)

    def _decide(
        self,
        approval_id: str,
        voter: Actor,
        decision: str,
        reason: str | None,
        fresh_plan: Plan | None,
    ) -> VoteResult:
        """The whole decision, inside one write transaction."""
        request = self.ledger.load(approval_id)
        assert request is not None
        identities = self.app.settings.identities
        now = self.app.clock.now()
        me = authenticated_id(voter, identities)
        my_ids = identities_of(voter, identities)
        if request.status is Status.EXPIRED:
            return self._refuse(request, voter, decision, "EXPIRED", f"{request.id} has expired")
        if request.status is not Status.PENDING:
            by = f" by {label(request.decided_by)}" if request.decided_by else ""
            return self._refuse(
                request,
                voter,
                decision,
                "ALREADY_DECIDED",
                f"{request.id} is already {request.status.value}{by}",
            )
        if now >= request.expires_at:
            self.ledger.expire(request, Actor.clock("approvals"))
            return self._refuse(
                request,
                voter,
                decision,
                "EXPIRED",
                f"{request.id} expired at {iso(request.expires_at)}; nothing ran",
            )
        is_requester = bool(my_ids & set(request.requester_ids))
        if is_requester and decision == "approve":
            return self._refuse(
                request,
                voter,
                decision,
                "SELF_APPROVAL",
                f"you requested {request.id}: a second person must approve it",
            )
        has = self.app.settings.roles_of(me)
        mine = has & set(request.roles)
        if not mine and not is_requester:
            return self._refuse(
                request,
                voter,
                decision,
                "ROLE_NOT_ALLOWED",
                f"{request.action} needs a vote from {' or '.join(request.roles)};"
                f" {label(me)} has {', '.join(sorted(has)) or 'no role'}",
            )
        if any(v.voter in my_ids or v.voter == me for v in request.votes):
            return self._refuse(
                request, voter, decision, "DUPLICATE_VOTE", f"you already voted on {request.id}"
            )
        if decision == "deny":
            return self._deny(request, voter, me, reason, withdrawn=is_requester)
        signers = [*request.approvers, me]
        missing = request.unsigned_roles(signers, self.app.settings.roles_of)
        completes = len(signers) >= request.quorum and not missing
        if completes:
            if request.action == "resume":
                blockers = resume_blockers(self.app, request.params["incident_id"])
                if blockers:
                    return self._refuse(
                        request,
                        voter,
                        decision,
                        "RESUME_BLOCKED",
                        "resume refused; missing: " + "; ".join(blockers),
                        blockers=blockers,
                    )
            try:
                refuse_rearm(self.app, request.action, request.params, request.created_at)
            except Refused as exc:
                return self._refuse(request, voter, decision, exc.code, str(exc))
            plan = fresh_plan or plan_sync(self.app, request.action, request.params)
            if plan.hash != request.plan_hash:
                return self._supersede(request, voter, decision, plan)
        self._store_vote(request, voter, me, "approve", reason)
        if not completes:
            still = f"; still needed: {', '.join(missing)}" if missing else ""
            return self._accepted(
                request,
                "VOTE_RECORDED",
                f"approval recorded ({len(signers)} of {request.quorum}) for {request.id}{still}",
            )
        self.ledger.set_status(request.id, Status.APPROVED, decided_by=me)
        self.app.events.append(
            "APPROVAL_APPROVED",
            voter,
            reason=request.reason,
            incident_id=request.incident_id,
            data={
                "approval_id": request.id,
                "action": request.action,
                "approvers": [*request.approvers, me],
                "plan_hash": request.plan_hash,
            },
        )
        self.ledger.set_status(request.id, Status.EXECUTING)
        return self._accepted(request, "EXECUTING", f"{request.id} approved; running")

    def _accepted(self, request: ApprovalRequest, code: str, message: str) -> VoteResult:
        """A vote that counted: every posted copy shows the new state, then the voter's answer."""
        self.ledger.refresh(request.id)
        return VoteResult(
            approval=self.ledger.get(request.id), accepted=True, code=code, message=message
        )

    def _store_vote(
        self, request: ApprovalRequest, voter: Actor, me: str, vote: str, reason: str | None
    ) -> None:
        self.app.db.execute(
            "INSERT INTO votes (approval_id, voter, vote, reason, at) VALUES (?, ?, ?, ?, ?)",
            (request.id, me, vote, reason, iso(self.app.clock.now())),
        )
        self.app.events.append(
            "APPROVAL_VOTE",
            voter,
            reason=reason,
            incident_id=request.incident_id,
            data={"approval_id": request.id, "action": request.action, "vote": vote, "voter": me},
        )

    def _deny(
        self, request: ApprovalRequest, voter: Actor, me: str, reason: str | None, withdrawn: bool
    ) -> VoteResult:
        self._store_vote(request, voter, me, "deny", reason)
        self.ledger.set_status(request.id, Status.DENIED, decided_by=me)
        self.app.events.append(
            "APPROVAL_DENIED",
            voter,
            reason=reason,
            incident_id=request.incident_id,
            data={"approval_id": request.id, "action": request.action, "withdrawn": withdrawn},
        )
        return self._accepted(
            request, "DENIED", f"{request.id} {'withdrawn' if withdrawn else 'denied'}; nothing ran"
        )

    def _supersede(
        self, request: ApprovalRequest, voter: Actor, decision: str, plan: Plan
    ) -> VoteResult:
        """What was approved is what runs: a changed plan is never run on an old approval."""
        fresh_id = None
        if not plan.problem:
            fresh_id = self.filing.insert(
                request.action,
                request.params,
                plan,
                request.requester,
                request.reason,
                request.incident_id,
                requester_ids=request.requester_ids,
                replaces=request.id,
            )
        self.ledger.set_status(request.id, Status.SUPERSEDED, superseded_by=fresh_id)
        self.app.events.append(
            "APPROVAL_SUPERSEDED",
            voter,
            reason="the plan changed between request and approval",
            incident_id=request.incident_id,
            data={
                "approval_id": request.id,
                "old_hash": request.plan_hash,
                "new_hash": plan.hash,
                "new_plan": plan.lines,
                "fresh_request": fresh_id,
                "problem": plan.problem,
            },
        )
        self.ledger.refresh(request.id)
        message = f"the plan of {request.id} changed since it was requested; nothing ran. " + (
            f"A fresh request {fresh_id} shows the new plan." if fresh_id else plan.problem or ""
        )
        result = self._refuse(
            request, voter, decision, "PLAN_CHANGED", message.strip(), fresh_request=fresh_id
        )
        if fresh_id:
            result.superseded_by = self.ledger.get(fresh_id)
        return result
