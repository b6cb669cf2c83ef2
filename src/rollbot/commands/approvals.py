"""The two-person rule: risky actions wait for a second person before anything is sent.

Faces (Slack buttons, the terminal) only present these rules; every decision is made here, in
SQLite, so a click in Slack and a command at the terminal can never disagree.

Public API (what the faces call)
--------------------------------
``Approvals(app: Rollbot)``

``await Approvals.request(action, params, requester, reason, incident_id=None) -> ApprovalRequest``
    action  "flatten"      params {"venue": str | None, "symbols": list[str] | None}
            "rollback"     params {}
            "clear_hold"   params {"scope": str (default "global"), "source": str | None}
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
    conditions no longer hold -> RESUME_BLOCKED; the plan recomputed at quorum differs ->
    PLAN_CHANGED (the request becomes SUPERSEDED, nothing runs, a fresh request is stored and
    posted: ``VoteResult.superseded_by``). Refusals return ``accepted=False`` with that code and
    are APPROVAL_REFUSED events. The vote that reaches quorum moves the request to EXECUTING in
    the same transaction and then (outside it) runs the action exactly once, awaiting it, and
    stores the result (EXECUTED, or FAILED with the error). Any deny is final; the requester
    may deny (withdraw) their own request. Unknown id: NotFound (also an event).

``Approvals.expire_due(now=None) -> list[ApprovalRequest]``   (the clock job; vote checks too)
``Approvals.get(approval_id) -> ApprovalRequest``; ``Approvals.list(pending_only=False)``
``Approvals.needs_approval(action, actor) -> bool`` (rollback by the clock never waits)
``ApprovalRequest.view() -> dict``  what views.approval renders (id, action, status — APPROVED
    for an approved request whatever its execution state, which is in "state" and "note" —,
    requester_label, reason, plan_lines, plan_hash, expires_at, decided_by, decided_at, note).

Every status change queues an outbox message of kind "approval" whose data is the fresh
``view()`` (it carries both "id" and "approval_id"), so every posted copy — channel, thread,
DMs — is updated to APPROVED / DENIED / EXPIRED / SUPERSEDED with who and when.

Suggested Slack action ids: "approval_approve" / "approval_deny", value = the approval id.
See also commands/resume.py (resume_blockers) and commands/rca.py (record_rca).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from rollbot.clock import iso, parse_iso
from rollbot.commands.context import Rollbot
from rollbot.commands.flatten import FlattenPlan, plan_venue
from rollbot.commands.positions import read_books
from rollbot.commands.resume import execute_resume, gate_changes, resume_blockers, resume_plan
from rollbot.commands.rollback import Engine, Outcome, StartCallback, StepCallback
from rollbot.commands.trading_state import TradingState, parse_scope, strictest
from rollbot.config import ApprovalRule
from rollbot.errors import BadInput, NotFound, Refused, RollbotError
from rollbot.storage.db import dumps, loads
from rollbot.storage.events import Actor
from rollbot.storage.holds import Holds

ACTIONS = ("flatten", "rollback", "clear_hold", "enable_gates", "resume")
Action = Literal["flatten", "rollback", "clear_hold", "enable_gates", "resume"]
Decision = Literal["approve", "deny"]
ACTION_LABELS = {
    "flatten": "Flatten",
    "rollback": "Rollback",
    "clear_hold": "Clear kill-switch hold",
    "enable_gates": "Enable live gates",
    "resume": "Resume live trading",
}
_PARAMS: dict[str, set[str]] = {
    "flatten": {"venue", "symbols"},
    "rollback": set(),
    "clear_hold": {"scope", "source"},
    "enable_gates": set(),
    "resume": {"incident_id"},
}
_SLACK_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


class Status(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    EXECUTING = "EXECUTING"
    EXECUTED = "EXECUTED"
    FAILED = "FAILED"
    DENIED = "DENIED"
    EXPIRED = "EXPIRED"
    SUPERSEDED = "SUPERSEDED"


APPROVED_STATES = (Status.APPROVED, Status.EXECUTING, Status.EXECUTED, Status.FAILED)


def label(user_id: str | None) -> str:
    """How a person is named in Slack text: a mention for a Slack user ID, else as is."""
    if not user_id:
        return ""
    return f"<@{user_id}>" if _SLACK_ID.match(user_id) else user_id


def identities_of(actor: Actor, identities: dict[str, str]) -> set[str]:
    """Every name this person goes by: the actor id, their OS user and the Slack ID mapped to
    it (terminal), and any OS user mapped to their Slack ID — so one person is one person on
    both faces."""
    ids = {actor.id}
    if actor.source == "cli" and actor.name:
        ids.add(actor.name)
        if actor.name in identities:
            ids.add(identities[actor.name])
    ids |= {os_user for os_user, slack_id in identities.items() if slack_id in ids}
    return ids


def authenticated_id(actor: Actor, identities: dict[str, str]) -> str:
    """Who is really voting: at the terminal the OS user's mapped identity, never a claimed
    `--by`; in Slack the user ID Slack vouches for."""
    if actor.source == "cli" and actor.name:
        return identities.get(actor.name, actor.name)
    return actor.id


class Plan(BaseModel):
    """What an approval binds to. `lines` are shown to people: a dict per flatten order
    (venue, symbol, side, quantity, type, note), text for everything else."""

    lines: list[str | dict[str, str]]
    hash: str
    problem: str | None = None  # nothing to do: the request is refused


class Vote(BaseModel):
    voter: str
    vote: Decision
    reason: str | None = None
    at: datetime


class ApprovalRequest(BaseModel):
    id: str
    action: Action
    params: dict[str, Any]
    plan: list[str | dict[str, str]]
    plan_hash: str
    reason: str
    requested_by: str
    requested_source: str
    requester_ids: list[str]
    requester: Actor
    quorum: int
    roles: list[str]
    status: Status
    incident_id: str | None = None
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    result: dict[str, Any] | None = None
    replaces: str | None = None
    superseded_by: str | None = None
    votes: list[Vote] = Field(default_factory=list)

    @property
    def approvers(self) -> list[str]:
        return [v.voter for v in self.votes if v.vote == "approve"]

    @property
    def requester_label(self) -> str:
        if self.requested_source == "slack":
            return label(self.requested_by)
        return (
            f"{self.requested_by} (terminal)"
            if self.requested_source == "cli"
            else (self.requested_by)
        )

    def view(self) -> dict[str, Any]:
        """The data views.approval renders, for the first post and every refresh."""
        shown = Status.APPROVED if self.status in APPROVED_STATES else self.status
        decided_by = ", ".join(label(v) for v in self.approvers) or label(self.decided_by)
        if self.status is Status.DENIED:
            decided_by = label(self.decided_by)
        elif self.status is Status.EXPIRED:
            decided_by = "nobody in time (expired)"
        elif self.status is Status.SUPERSEDED:
            decided_by = "rollbot: the plan changed"
        data: dict[str, Any] = {
            "id": self.id,
            "approval_id": self.id,
            "action": ACTION_LABELS[self.action],
            "action_id": self.action,
            "status": shown.value,
            "state": self.status.value,
            "requested_by": self.requested_by,
            "requester_label": self.requester_label,
            "reason": self.reason,
            "plan_lines": self.plan,
            "plan_hash": self.plan_hash,
            "params": self.params,
            "quorum": self.quorum,
            "roles": self.roles,
            "approvals": [label(v) for v in self.approvers],
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "incident_id": self.incident_id,
            "note": self.note(),
        }
        if self.status is not Status.PENDING:
            data["decided_by"] = decided_by
            data["decided_at"] = iso(self.decided_at or self.expires_at)
        return data

    def note(self) -> str:
        who = " or ".join(r.replace("_", " ") for r in self.roles)
        if self.status is Status.PENDING:
            got = len(self.approvers)
            text = f"Needs {self.quorum} approval(s) from {who}, not the requester"
            return text + (f"; {got} of {self.quorum} so far." if got else ".")
        result = self.result or {}
        if self.status is Status.DENIED:
            deny = next((v for v in self.votes if v.vote == "deny"), None)
            return f"Denied: {deny.reason}" if deny and deny.reason else "Denied."
        if self.status is Status.SUPERSEDED:
            fresh = f" Fresh request: `{self.superseded_by}`." if self.superseded_by else ""
            return "The plan changed before approval; nothing ran." + fresh
        if self.status is Status.EXPIRED:
            return "Expired unapproved; nothing ran."
        if self.status in (Status.APPROVED, Status.EXECUTING):
            return "Running…"
        if self.status is Status.FAILED:
            return f"Execution failed: {result.get('error', 'unknown error')}"
        return "Executed: " + summarize(self.action, result)


def summarize(action: str, result: dict[str, Any]) -> str:
    if action in ("flatten", "rollback"):
        text = f"{result.get('incident_id')} {result.get('final_status')}"
        if result.get("residual"):
            text += f"; still open: {result['residual']}"
        return text
    if action == "clear_hold":
        return f"holds {result.get('cleared')} cleared; {result.get('scope')} is now " + str(
            result.get("state")
        )
    if action in ("enable_gates", "resume"):
        text = "live trading " + ("ENABLED" if result.get("live_allowed") else "still BLOCKED")
        if action == "resume":
            text += f"; holds {result.get('holds_cleared')} cleared"
            text += f"; global state {result.get('global_state')}"
        return text
    return dumps(result)


class VoteResult(BaseModel):
    approval: ApprovalRequest  # its state after this vote (and after running, if it ran)
    accepted: bool  # the vote counted
    code: str  # VOTE_RECORDED | DENIED | EXECUTED | EXECUTION_FAILED | a refusal code
    message: str  # a sentence for the person who clicked
    executed: bool = False  # this call ran the action
    result: dict[str, Any] | None = None
    superseded_by: ApprovalRequest | None = None  # PLAN_CHANGED: the fresh request

    @property
    def refused(self) -> bool:
        return not self.accepted


def _hash(payload: Any) -> str:
    return hashlib.sha256(
        json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()


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
        return ApprovalRequest(
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

    # -- plans --------------------------------------------------------------------------------
    def _check_params(
        self, action: str, params: dict[str, Any] | None, incident_id: str | None
    ) -> dict[str, Any]:
        if action not in ACTIONS:
            raise BadInput(f"unknown action {action!r}: choose from {', '.join(ACTIONS)}")
        params = dict(params or {})
        unknown = sorted(set(params) - _PARAMS[action])
        if unknown:
            raise BadInput(
                f"{action} takes no parameter {', '.join(unknown)}"
                + (f" (known: {', '.join(sorted(_PARAMS[action]))})" if _PARAMS[action] else "")
            )
        if action == "flatten":
            venue = params.get("venue") or None
            if venue in ("all",):
                venue = None
            if venue is not None:
                self.app.venue(venue)  # BadInput names the configured venues
            symbols = params.get("symbols") or None
            if symbols is not None:
                if isinstance(symbols, str):
                    symbols = [symbols]
                symbols = sorted({str(s).strip() for s in symbols if str(s).strip()}) or None
            params = {"venue": venue, "symbols": symbols}
        elif action == "clear_hold":
            params = {
                "scope": parse_scope(params.get("scope") or "global", self.app.venue_names),
                "source": params.get("source") or None,
            }
        elif action == "resume":
            target = params.get("incident_id") or incident_id
            if not target:
                raise BadInput("resume needs the incident it recovers from (incident_id)")
            params = {"incident_id": self.app.incidents.get(str(target)).id}
        return params

    async def plan(self, action: str, params: dict[str, Any]) -> Plan:
        if action == "flatten":
            return await self._flatten_plan(params)
        return self._plan_sync(action, params)

    async def _flatten_plan(self, params: dict[str, Any]) -> Plan:
        books = await read_books(self.app.select(params.get("venue")))
        wanted = set(params.get("symbols") or [])
        held = {p.symbol for b in books for p in b.positions if p.quantity != 0}
        missing = sorted(wanted - held)
        if missing:
            raise BadInput(
                f"unknown symbol(s) {', '.join(missing)}: no position held "
                f"(held: {', '.join(sorted(held)) or 'none'})"
            )
        plan = FlattenPlan(
            venues=[plan_venue(b, self.app.settings.flatten, wanted or None) for b in books]
        )
        lines: list[str | dict[str, str]] = [
            {
                "venue": o.venue,
                "symbol": o.symbol,
                "side": o.side.value,
                "quantity": format(o.quantity.normalize(), "f"),
                "type": o.type.value,
                "note": o.limit_note,
            }
            for o in plan.orders
        ]
        lines += [f"{v.venue}: unreachable — {v.error}" for v in plan.venues if v.error]
        problem = None
        if not plan.orders and not any(v.error for v in plan.venues):
            where = params.get("venue") or "any venue"
            problem = f"nothing to flatten: no open position at {where}"
        return Plan(lines=lines, hash=plan.hash, problem=problem)

    def _plan_sync(self, action: str, params: dict[str, Any]) -> Plan:
        lines: list[str | dict[str, str]]
        problem = None
        if action == "rollback":
            venues = ", ".join(self.app.venue_names) or "no venue"
            cfg = self.app.settings.flatten
            lines = [
                "Step 1 Immediate Halt: hold global HALTED (stored first), stop the strategy,"
                f" cancel every open order at {venues}",
                "Step 2 Disconnect: live gates disabled (enable_live_trading=false,"
                " live_mode_armed=false, live_dry_run_mode=true), shadow mode on;"
                " venue reconnects off",
                f"Step 3 Assess Positions at {venues}",
                "Step 4 Flatten Positions: close every position held when it runs (market"
                f" orders below {cfg.market_exposure_threshold} exposure per venue, aggressive"
                f" limits ± {cfg.limit_offset_bps} bps above)",
                "Step 5 Verify Recovery: read back positions, open orders, NAV and the gates",
            ]
        elif action == "clear_hold":
            scope, source = params["scope"], params.get("source")
            holds = [
                h for h in Holds(self.app.db).active([scope]) if not source or h.source == source
            ]
            lines = [
                f"clear {h.state} hold #{h.id} on {h.scope} from {h.source}"
                f" (set by {h.actor}: {h.reason})"
                for h in holds
            ]
            if holds:
                governing = ["global", scope] if scope != "global" else ["global"]
                left = strictest(
                    [
                        TradingState(h.state)
                        for h in Holds(self.app.db).active(governing)
                        if h.id not in {x.id for x in holds}
                    ]
                )
                lines.append(f"{scope} will then be {left.value}")
            else:
                problem = f"no active hold on {scope}" + (f" from {source}" if source else "")
        elif action == "enable_gates":
            gates = self.app.gates.read()
            lines = list(gate_changes(self.app))
            if gates.live_allowed:
                problem = "the live gates are already enabled"
        else:  # resume
            lines = list(resume_plan(self.app, params["incident_id"]))
        return Plan(
            lines=lines,
            hash=_hash({"action": action, "params": params, "lines": lines}),
            problem=problem,
        )

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
        params = self._check_params(action, params, incident_id)
        if action == "resume":
            incident_id = params["incident_id"]
        elif incident_id:
            incident_id = self.app.incidents.get(incident_id).id
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
        plan = await self.plan(action, params)
        if plan.problem:
            raise self._refuse_request(
                action, requester, "NOTHING_TO_DO", plan.problem, incident_id
            )
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
            " reason, requester, replaces) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'PENDING', ?, ?,"
            " ?, ?, ?, ?)",
            (
                approval_id,
                action,
                dumps(plan.lines),
                plan.hash,
                dumps(params),
                requester.id,
                requester.source,
                rule.quorum,
                dumps(list(rule.roles)),
                incident_id,
                iso(now),
                iso(expires),
                reason,
                dumps({"actor": requester.model_dump(), "ids": ids}),
                replaces,
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
                "quorum": rule.quorum,
                "roles": list(rule.roles),
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
        self.app.outbox.put(
            "channel", text=text, view="approval", data=data, dedupe_key=f"{key}:channel"
        )
        if request.incident_id:
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
            if _SLACK_ID.match(uid):
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
                fresh_plan = await self.plan(before.action, before.params)
            except BadInput as exc:  # a symbol it names is no longer held
                fresh_plan = Plan(lines=[str(exc)], hash=_hash(str(exc)), problem=str(exc))
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
        completes = len(request.approvers) + 1 >= request.quorum
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
            plan = fresh_plan or self._plan_sync(request.action, request.params)
            if plan.hash != request.plan_hash:
                return self._supersede(request, voter, decision, plan)
        self._store_vote(request, voter, me, "approve", reason)
        if not completes:
            self._refresh(request.id)
            got = len(request.approvers) + 1
            return VoteResult(
                approval=self.get(request.id),
                accepted=True,
                code="VOTE_RECORDED",
                message=f"approval recorded ({got} of {request.quorum}) for {request.id}",
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
                if request.action == "flatten":
                    symbols = {
                        str(line["symbol"]) for line in request.plan if isinstance(line, dict)
                    }
                    outcome = await engine.flatten(
                        why, request.params.get("venue"), dedupe_key=key, symbols=symbols or None
                    )
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
                cleared = self.app.killswitch.clear(
                    scope, why, voter, source=request.params.get("source")
                )
                result = {
                    "scope": scope,
                    "cleared": [h.id for h in cleared],
                    "state": self.app.killswitch.state_of(["global", scope]).value,
                }
            elif request.action == "enable_gates":
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
        self._set_status(request.id, status, result=result)
        self.app.events.append(
            "APPROVAL_EXECUTED" if status is Status.EXECUTED else "APPROVAL_FAILED",
            voter,
            incident_id=request.incident_id or result.get("incident_id"),
            data={"approval_id": request.id, "action": request.action, "result": result},
        )
        self._refresh(request.id)
