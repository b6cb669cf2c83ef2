"""The two-person rule: risky actions wait for a second person before anything is sent.

Faces (Slack buttons, the terminal) only present these rules; every decision is made here, in
SQLite, so a click in Slack and a command at the terminal can never disagree.

Public API (what the faces call)
--------------------------------
``Approvals(app: Rollbot)``

``await Approvals.request(action, params, requester, reason, incident_id=None) -> ApprovalRequest``
    action  "flatten"      params {"venue": str | None, "symbols": list[str] | None}
            "rollback"     params {}
            "clear_hold"   params {"scope": str (default "global"), "source": str | None,
                           "hold_ids": list[int] (default: every active hold on the scope now)}
                           it clears exactly those holds, never one set after it was filed
            "enable_gates" params {}
            "resume"       params {"incident_id": str} (or the incident_id argument)
    Computes the plan (for a flatten every order: venue, symbol, side, quantity, type), binds
    it to a hash, stores the request and queues, in the same transaction, an outbox message
    (kind "channel", view "approval", data = ``request.view()``), a "thread" copy when the
    request belongs to an incident, and a "dm" copy to each eligible approver. The courier
    records each posted copy in message_copies (kind "approval", ref = approval id).
    Raises BadInput (bad params), NotFound (unknown incident) or Refused (code NOTHING_TO_DO,
    RESUME_BLOCKED — the message lists every missing condition). A refusal is an event.

``await Approvals.vote(approval_id, voter, decision, reason=None, *, on_start=None,
on_step=None) -> VoteResult``
    decision "approve" | "deny". The whole decision is one BEGIN IMMEDIATE transaction:
    expired -> EXPIRED; already decided -> ALREADY_DECIDED; the requester approving
    (by Slack ID, OS user or the identity mapped between them) -> SELF_APPROVAL; no allowed
    role -> ROLE_NOT_ALLOWED; a second vote by one person -> DUPLICATE_VOTE; resume
    conditions no longer hold -> RESUME_BLOCKED; a clear_hold or enable_gates that would re-arm
    live trading while an incident since the last resume exists -> RESUME_REQUIRED (also at
    request time; commands/rollback/rearm.py); the plan recomputed at quorum differs ->
    PLAN_CHANGED (the request becomes SUPERSEDED, nothing runs, a fresh request is stored and
    posted: ``VoteResult.superseded_by``). Refusals return ``accepted=False`` with that code and
    are APPROVAL_REFUSED events. The vote that reaches quorum moves the request to EXECUTING in
    the same transaction and then (outside it) runs the action exactly once, awaiting it, and
    stores the result (EXECUTED, or FAILED with the error). Any deny is final; the requester
    may deny (withdraw) their own request. Unknown id: NotFound (also an event).

``Approvals.expire_due(now=None) -> list[ApprovalRequest]``   (the clock job; vote checks too);
    ``await Approvals.sweep()`` is the same for ``Clockwork.every("approval_expiry", 15, ...)``
``Approvals.get(approval_id) -> ApprovalRequest``; ``Approvals.list(pending_only=False)``
``Approvals.needs_approval(action, actor) -> bool`` (rollback by the clock never waits)
``ApprovalRequest.view() -> dict``  what views.approval renders (id, action, status — APPROVED
    for an approved request whatever its execution state, which is in "state" and "note" —,
    requester_label, reason, plan_lines, plan_hash, expires_at, decided_by, decided_at, note).

Every status change queues an outbox message of kind "approval" whose data is the fresh
``view()`` (it carries both "id" and "approval_id"), so every posted copy — channel, thread,
DMs — is updated to APPROVED / DENIED / EXPIRED / SUPERSEDED with who and when.

Flatten and rollback run through Engine with dedupe_key "approval:<id>", so even a second run
of one approval opens no second incident and sends no second set of orders. A process that dies
between EXECUTING and the stored result leaves the request EXECUTING: the next start's
resume_unfinished (`rollbot recover`, `rollbot rollback`, the bot) finishes its incident, then
``Approvals.reconcile_interrupted`` gives the request that outcome.

Suggested Slack action ids: "approval_approve" / "approval_deny", value = the approval id.
See also commands/rollback/resume.py (resume_blockers) and commands/rollback/rca.py (record_rca).
Plans live in commands/approvals/plans.py, the records and their view in
commands/approvals/records.py; the names above are importable from here.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

from rollbot.clock import iso, parse_iso
from rollbot.commands.approvals.plans import (
    ACTIONS,
    Action,
    Plan,
    check_params,
    clear_targets,
    compute_plan,
    plan_hash,
    plan_sync,
    refuse_rearm,
)
from rollbot.commands.approvals.records import (
    ACTION_LABELS,
    SLACK_ID,
    ApprovalRequest,
    Decision,
    Status,
    Vote,
    VoteResult,
    authenticated_id,
    identities_of,
    label,
    summarize,
)
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.risk.alerts import alert_rolled_back, rollback_request
from rollbot.commands.rollback.engine import (
    Engine,
    Outcome,
    StartCallback,
    StepCallback,
    covering_incident,
)
from rollbot.commands.rollback.rearm import execute_resume
from rollbot.commands.rollback.resume import resume_blockers
from rollbot.config import ApprovalRule
from rollbot.errors import BadInput, NotFound, Refused, RollbotError
from rollbot.storage.db import dumps, loads
from rollbot.storage.events import Actor
from rollbot.storage.json_text import text_field

__all__ = [
    "ACTIONS",
    "ACTION_LABELS",
    "Action",
    "ApprovalRequest",
    "Approvals",
    "Decision",
    "Plan",
    "Status",
    "Vote",
    "VoteResult",
    "authenticated_id",
    "identities_of",
    "label",
]


class Approvals:
    def __init__(self, app: Rollbot) -> None:
        self.app = app

    # -- reading ------------------------------------------------------------------------------
    def _load(self, approval_id: str) -> ApprovalRequest | None:
        row = self.app.db.one("SELECT * FROM approvals WHERE id = ?", (approval_id,))
        if not row:
            return None
        votes = [
            Vote(voter=v["voter"], vote=v["vote"], reason=v["reason"], at=parse_iso(v["at"]))
            for v in self.app.db.query(
                "SELECT * FROM votes WHERE approval_id = ? ORDER BY at, rowid", (approval_id,)
            )
        ]
        requester = loads(row["requester"]) or {}
        request = ApprovalRequest(
            id=row["id"],
            action=row["action"],
            params=loads(row["params"]) or {},
            plan=loads(row["plan"]) or [],
            plan_hash=row["plan_hash"],
            reason=row["reason"],
            requested_by=row["requested_by"],
            requested_source=row["requested_source"],
            requester_ids=requester.get("ids", [row["requested_by"]]),
            requester=Actor.model_validate(
                requester.get("actor")
                or {"id": row["requested_by"], "source": row["requested_source"]}
            ),
            quorum=row["quorum"],
            roles=loads(row["roles"]) or [],
            required_roles=loads(row["required_roles"]) or [],
            status=Status(row["status"]),
            incident_id=row["incident_id"],
            created_at=parse_iso(row["created_at"]),
            expires_at=parse_iso(row["expires_at"]),
            decided_at=parse_iso(row["decided_at"]) if row["decided_at"] else None,
            decided_by=row["decided_by"],
            result=loads(row["result"]),
            replaces=row["replaces"],
            superseded_by=row["superseded_by"],
            votes=votes,
        )
        request.still_needed = request.unsigned_roles(request.approvers, self.app.settings.roles_of)
        return request

    def get(self, approval_id: str) -> ApprovalRequest:
        found = self._load(approval_id.strip())
        if found is None:
            raise NotFound(f"unknown approval {approval_id!r}")
        return found

    def list(self, *, pending_only: bool = False, limit: int = 50) -> list[ApprovalRequest]:
        sql = "SELECT id FROM approvals"
        if pending_only:
            sql += " WHERE status = 'PENDING'"
        sql += f" ORDER BY created_at DESC, id DESC LIMIT {int(limit)}"
        return [self.get(r["id"]) for r in self.app.db.query(sql)]

    def rule(self, action: str) -> ApprovalRule:
        return getattr(self.app.settings.approvals, action)  # type: ignore[no-any-return]

    def needs_approval(self, action: str, actor: Actor) -> bool:
        """Whether a face must ask for a second person before running `action`."""
        if action == "rollback":
            return actor.source not in ("clock", "system") and (
                self.app.settings.approvals.rollback_needs_approval
            )
        return action in ACTIONS

    # -- requesting ---------------------------------------------------------------------------
    def _refuse_request(
        self, action: str, requester: Actor, code: str, message: str, incident_id: str | None
    ) -> Refused:
        self.app.events.append(
            "APPROVAL_REQUEST_REFUSED",
            requester,
            reason=message,
            incident_id=incident_id,
            data={"action": action, "code": code},
        )
        return Refused(message, code=code)

    async def request(
        self,
        action: str,
        params: dict[str, Any] | None,
        requester: Actor,
        reason: str,
        incident_id: str | None = None,
    ) -> ApprovalRequest:
        if not reason or not reason.strip():
            raise BadInput("a reason is required")
        params = check_params(self.app, action, params, incident_id)
        if action == "resume":
            incident_id = params["incident_id"]
        elif incident_id:
            incident_id = self.app.incidents.get(incident_id).id
        elif action in ("flatten", "rollback") and not params.get("alert_id"):
            found = covering_incident(self.app, action, params.get("venue"))
            incident_id = found.id if found else None
        if action == "resume":
            blockers = resume_blockers(self.app, params["incident_id"])
            if blockers:
                raise self._refuse_request(
                    action,
                    requester,
                    "RESUME_BLOCKED",
                    f"resume of {params['incident_id']} refused; missing: " + "; ".join(blockers),
                    incident_id,
                )
        plan = await compute_plan(self.app, action, params)
        if plan.problem:
            raise self._refuse_request(
                action, requester, "NOTHING_TO_DO", plan.problem, incident_id
            )
        try:
            refuse_rearm(self.app, action, params)
        except Refused as exc:
            raise self._refuse_request(action, requester, exc.code, str(exc), incident_id) from None
        with self.app.db.write():
            approval_id = self._insert(action, params, plan, requester, reason.strip(), incident_id)
        return self.get(approval_id)

    def _insert(
        self,
        action: str,
        params: dict[str, Any],
        plan: Plan,
        requester: Actor,
        reason: str,
        incident_id: str | None,
        *,
        requester_ids: list[str] | None = None,
        replaces: str | None = None,
    ) -> str:
        """Store a request and queue its posts; inside the caller's write transaction."""
        rule = self.rule(action)
        now = self.app.clock.now()
        expires = now + timedelta(minutes=self.app.settings.approvals.expiry_minutes)
        row = self.app.db.one("SELECT COUNT(*) AS n FROM approvals")
        approval_id = f"APR-{(int(row['n']) if row else 0) + 1:04d}"
        ids = requester_ids or sorted(identities_of(requester, self.app.settings.identities))
        self.app.db.execute(
            "INSERT INTO approvals (id, action, plan, plan_hash, params, requested_by,"
            " requested_source, quorum, roles, status, incident_id, created_at, expires_at,"
            " reason, requester, replaces, required_roles) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " 'PENDING', ?, ?, ?, ?, ?, ?, ?)",
            (
                approval_id,
                action,
                dumps(plan.lines),
                plan.hash,
                dumps(params),
                requester.id,
                requester.source,
                rule.needed,
                dumps(rule.voters),
                incident_id,
                iso(now),
                iso(expires),
                reason,
                dumps({"actor": requester.model_dump(), "ids": ids}),
                replaces,
                dumps(list(rule.all_of)),
            ),
        )
        self.app.events.append(
            "APPROVAL_REQUESTED",
            requester,
            reason=reason,
            incident_id=incident_id,
            data={
                "approval_id": approval_id,
                "action": action,
                "params": params,
                "plan": plan.lines,
                "plan_hash": plan.hash,
                "quorum": rule.needed,
                "roles": rule.voters,
                "required_roles": list(rule.all_of),
                "expires_at": iso(expires),
                "replaces": replaces,
            },
        )
        request = self._load(approval_id)
        assert request is not None
        self._post(request, ids)
        return approval_id

    def _post(self, request: ApprovalRequest, requester_ids: list[str]) -> None:
        data = request.view()
        text = f"{data['action']} requested by {request.requester_label}: approval {request.id}"
        key = f"approval:{request.id}:posted"
        if not request.incident_id:  # an incident's requests live in its thread alone
            self.app.outbox.put(
                "channel", text=text, view="approval", data=data, dedupe_key=f"{key}:channel"
            )
        else:
            self.app.outbox.put(
                "thread",
                incident_id=request.incident_id,
                text=text,
                view="approval",
                data=data,
                dedupe_key=f"{key}:thread",
            )
        approvers = sorted(
            {uid for role in request.roles for uid in self.app.settings.roles.get(role, [])}  # type: ignore[call-overload]
            - set(requester_ids)
        )
        for uid in approvers:
            if SLACK_ID.match(uid):
                self.app.outbox.put(
                    "dm",
                    target=uid,
                    text=text,
                    view="approval",
                    data=data,
                    dedupe_key=f"{key}:dm:{uid}",
                )

    def _refresh(self, approval_id: str) -> None:
        """Every posted copy shows the new state; inside the caller's write transaction."""
        request = self._load(approval_id)
        assert request is not None
        data = request.view()
        self.app.outbox.put(
            "approval",
            incident_id=request.incident_id,
            text=f"{data['action']} {request.id}: {data['status']}",
            view="approval",
            data=data,
            dedupe_key=f"approval:{request.id}:{request.status.value}:{len(request.votes)}",
        )

    def _set_status(
        self,
        approval_id: str,
        status: Status,
        *,
        decided_by: str | None = None,
        result: dict[str, Any] | None = None,
        superseded_by: str | None = None,
    ) -> None:
        now = iso(self.app.clock.now())
        self.app.db.execute(
            "UPDATE approvals SET status = ?,"
            " decided_at = CASE WHEN ? IN ('EXECUTING', 'EXECUTED', 'FAILED')"
            "   THEN COALESCE(decided_at, ?) ELSE ? END,"
            " decided_by = COALESCE(?, decided_by), result = COALESCE(?, result),"
            " superseded_by = COALESCE(?, superseded_by) WHERE id = ?",
            (
                status.value,
                status.value,
                now,
                now,
                decided_by,
                dumps(result) if result is not None else None,
                superseded_by,
                approval_id,
            ),
        )

    # -- expiry -------------------------------------------------------------------------------
    def _expire(self, request: ApprovalRequest, actor: Actor) -> None:
        self._set_status(request.id, Status.EXPIRED)
        self.app.events.append(
            "APPROVAL_EXPIRED",
            actor,
            incident_id=request.incident_id,
            reason=f"no decision by {iso(request.expires_at)}",
            data={"approval_id": request.id, "action": request.action},
        )
        self._refresh(request.id)

    def expire_due(self, now: datetime | None = None) -> list[ApprovalRequest]:
        """Mark every pending request past its expiry EXPIRED (the clock job calls this)."""
        when = now or self.app.clock.now()
        actor = Actor.clock("approvals")
        expired = []
        with self.app.db.write():
            rows = self.app.db.query(
                "SELECT id FROM approvals WHERE status = 'PENDING' AND expires_at <= ?",
                (iso(when),),
            )
            for r in rows:
                request = self._load(r["id"])
                assert request is not None
                self._expire(request, actor)
                expired.append(r["id"])
        return [self.get(i) for i in expired]

    async def sweep(self) -> None:
        """expire_due for a scheduler that takes coroutine functions (Clockwork.every)."""
        self.expire_due()

    # -- voting -------------------------------------------------------------------------------
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
        fresh = self._load(request.id)
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
        before = self._load(approval_id.strip())
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
        return await self._execute(outcome.approval, voter, on_start, on_step)

    def _decide(
        self,
        approval_id: str,
        voter: Actor,
        decision: str,
        reason: str | None,
        fresh_plan: Plan | None,
    ) -> VoteResult:
        """The whole decision, inside one write transaction."""
        request = self._load(approval_id)
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
            self._expire(request, Actor.clock("approvals"))
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
            self._refresh(request.id)
            still = f"; still needed: {', '.join(missing)}" if missing else ""
            return VoteResult(
                approval=self.get(request.id),
                accepted=True,
                code="VOTE_RECORDED",
                message=f"approval recorded ({len(signers)} of {request.quorum}) for"
                f" {request.id}{still}",
            )
        self._set_status(request.id, Status.APPROVED, decided_by=me)
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
        self._set_status(request.id, Status.EXECUTING)
        self._refresh(request.id)
        return VoteResult(
            approval=self.get(request.id),
            accepted=True,
            code="EXECUTING",
            message=f"{request.id} approved; running",
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
        self._set_status(request.id, Status.DENIED, decided_by=me)
        self.app.events.append(
            "APPROVAL_DENIED",
            voter,
            reason=reason,
            incident_id=request.incident_id,
            data={"approval_id": request.id, "action": request.action, "withdrawn": withdrawn},
        )
        self._refresh(request.id)
        return VoteResult(
            approval=self.get(request.id),
            accepted=True,
            code="DENIED",
            message=f"{request.id} {'withdrawn' if withdrawn else 'denied'}; nothing ran",
        )

    def _supersede(
        self, request: ApprovalRequest, voter: Actor, decision: str, plan: Plan
    ) -> VoteResult:
        """What was approved is what runs: a changed plan is never run on an old approval."""
        fresh_id = None
        if not plan.problem:
            fresh_id = self._insert(
                request.action,
                request.params,
                plan,
                request.requester,
                request.reason,
                request.incident_id,
                requester_ids=request.requester_ids,
                replaces=request.id,
            )
        self._set_status(request.id, Status.SUPERSEDED, superseded_by=fresh_id)
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
        self._refresh(request.id)
        message = f"the plan of {request.id} changed since it was requested; nothing ran. " + (
            f"A fresh request {fresh_id} shows the new plan." if fresh_id else plan.problem or ""
        )
        result = self._refuse(
            request, voter, decision, "PLAN_CHANGED", message.strip(), fresh_request=fresh_id
        )
        if fresh_id:
            result.superseded_by = self.get(fresh_id)
        return result

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
            request = self.get(row["id"])
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
                    result = {
                        "incident_id": incident.id,
                        "final_status": outcome.final_status.value,
                        "residual": outcome.residual,
                        "open_orders": outcome.open_orders,
                        "unreachable": outcome.unreachable,
                    }
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
                self._finish(request, actor, status, result)
            done.append(self.get(request.id))
        return done

    # -- running ------------------------------------------------------------------------------
    async def _execute(
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
                result: dict[str, Any] = {
                    "incident_id": outcome.incident.id,
                    "final_status": outcome.final_status.value,
                    "residual": outcome.residual,
                    "open_orders": outcome.open_orders,
                    "unreachable": outcome.unreachable,
                }
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
                self._finish(
                    request, voter, Status.FAILED, {"error": f"{type(exc).__name__}: {exc}"}
                )
            raise
        with self.app.db.write():
            self._finish(request, voter, status, result)
        done = self.get(request.id)
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

    def _finish(
        self, request: ApprovalRequest, voter: Actor, status: Status, result: dict[str, Any]
    ) -> None:
        current = self._load(request.id)
        if current is not None and current.status is not Status.EXECUTING:
            return  # recorded already (by a restart's reconcile_interrupted): once is enough
        self._set_status(request.id, status, result=result)
        self.app.events.append(
            "APPROVAL_EXECUTED" if status is Status.EXECUTED else "APPROVAL_FAILED",
            voter,
            incident_id=request.incident_id or result.get("incident_id"),
            data={"approval_id": request.id, "action": request.action, "result": result},
        )
        self._refresh(request.id)
