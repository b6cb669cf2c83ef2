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

``Approvals`` is the one door; each job lives in its own module of this room: filing.py (a
request checked, planned, stored and posted), voting.py (the decision), executing.py (the run,
exactly once, and its outcome after a crash) and ledger.py (the table they share: reading,
status moves, refreshed copies, expiry). Plans live in plans.py, the records and their view in
records.py; the names above are importable from here.
"""

from __future__ import annotations

from rollbot.commands.approvals.executing import Execution
from rollbot.commands.approvals.filing import Filing
from rollbot.commands.approvals.ledger import Ledger
from rollbot.commands.approvals.plans import ACTIONS, Action, Plan
from rollbot.commands.approvals.records import (
    ACTION_LABELS,
    ApprovalRequest,
    Decision,
    Status,
    Vote,
    VoteResult,
    authenticated_id,
    identities_of,
    label,
)
from rollbot.commands.approvals.voting import Voting
from rollbot.commands.desk.context import Rollbot
from rollbot.storage.events import Actor

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
    """The two-person rule as every face calls it: each verb is answered by the job that owns
    it, all over one ledger, so no rule is written twice."""

    def __init__(self, app: Rollbot) -> None:
        self.app = app
        ledger = Ledger(app)
        filing = Filing(ledger)
        execution = Execution(ledger)
        self.get = ledger.get
        self.list = ledger.list
        self.expire_due = ledger.expire_due
        self.sweep = ledger.sweep
        self.rule = filing.rule
        self.request = filing.request
        self.vote = Voting(ledger, filing, execution).vote
        self.reconcile_interrupted = execution.reconcile_interrupted

    def needs_approval(self, action: str, actor: Actor) -> bool:
        """Whether a face must ask for a second person before running `action`."""
        if action == "rollback":
            return actor.source not in ("clock", "system") and (
                self.app.settings.approvals.rollback_needs_approval
            )
        return action in ACTIONS
