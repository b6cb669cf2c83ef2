"""Filing a request: its parameters checked, the resume's conditions and the re-arm rule asked,
its plan computed and bound to a hash, then stored and posted (channel or the incident's thread,
and a DM to each eligible approver) in one transaction. A refusal is an event. The vote files
again through here when the plan changed (the fresh request replaces the old one)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from rollbot.clock import iso
from rollbot.commands.approvals.ledger import Ledger
from rollbot.commands.approvals.plans import Plan, check_params, compute_plan, refuse_rearm
from rollbot.commands.approvals.records import SLACK_ID, ApprovalRequest, identities_of
from rollbot.commands.rollback.engine import covering_incident
from rollbot.commands.rollback.resume import resume_blockers
from rollbot.config import ApprovalRule
from rollbot.errors import BadInput, Refused
from rollbot.storage.db import dumps
from rollbot.storage.events import Actor


class Filing:
    def __init__(self, ledger: Ledger) -> None:
        self.app = ledger.app
        self.ledger = ledger

    def rule(self, action: str) -> ApprovalRule:
        return getattr(self.app.settings.approvals, action)  # type: ignore[no-any-return]

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
            approval_id = self.insert(action, params, plan, requester, reason.strip(), incident_id)
        return self.ledger.get(approval_id)

    def insert(
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
        request = self.ledger.load(approval_id)
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
