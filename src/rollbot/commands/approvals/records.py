"""The records of the two-person rule: a request with its votes, what the faces render of it
(`ApprovalRequest.view()`), the answer to a vote, and how one person is recognised on both
faces (Slack user ID, OS user, and the [identities] mapping between them)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from itertools import permutations
from typing import Any, Literal

from pydantic import BaseModel, Field

from rollbot.clock import iso
from rollbot.commands.approvals.plans import Action
from rollbot.storage.db import dumps
from rollbot.storage.events import Actor

Decision = Literal["approve", "deny"]
ACTION_LABELS = {
    "flatten": "Flatten",
    "rollback": "Rollback",
    "clear_hold": "Clear kill-switch hold",
    "enable_gates": "Enable live gates",
    "resume": "Resume live trading",
}
SLACK_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


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
    return f"<@{user_id}>" if SLACK_ID.match(user_id) else user_id


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
    required_roles: list[str] = Field(default_factory=list)  # each signed by a different person
    still_needed: list[str] = Field(default_factory=list)  # required roles nobody signed yet
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

    def unsigned_roles(self, signers: list[str], roles_of: Callable[[str], set[str]]) -> list[str]:
        """The required roles left unsigned by the best assignment of one distinct signer to
        each (a person holding two required roles signs for one of them)."""
        need = self.required_roles
        seats: list[str | None] = [*signers, *[None] * len(need)]
        best = list(need)
        for order in permutations(seats, len(need)):
            left = [
                r
                for r, who in zip(need, order, strict=True)
                if who is None or r not in roles_of(who)
            ]
            if len(left) < len(best):
                best = left
        return best

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
            "required_roles": self.required_roles,
            "still_needed": self.still_needed,
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
            if self.required_roles:
                signed = ", ".join(label(v) for v in self.approvers) or "nobody yet"
                needed = ", ".join(r.replace("_", " ") for r in self.still_needed) or "nothing"
                each = ", ".join(r.replace("_", " ") for r in self.required_roles)
                return (
                    f"Needs a sign-off from each of {each} (different people, not the"
                    f" requester). Signed: {signed}. Still needed: {needed}."
                )
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
