"""The approvals table: a request read back with its votes, its status moved, every posted copy
(channel, thread, DMs) shown the new state, and the expiry of requests nobody decided in time.
Filing, voting and executing all read and write a request through this one ledger."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rollbot.clock import iso, parse_iso
from rollbot.commands.approvals.records import ApprovalRequest, Status, Vote
from rollbot.commands.desk.context import Rollbot
from rollbot.errors import NotFound
from rollbot.storage.db import dumps, loads
from rollbot.storage.events import Actor


class Ledger:
    def __init__(self, app: Rollbot) -> None:
        self.app = app

    # -- reading ------------------------------------------------------------------------------
    def load(self, approval_id: str) -> ApprovalRequest | None:
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
        found = self.load(approval_id.strip())
        if found is None:
            raise NotFound(f"unknown approval {approval_id!r}")
        return found

    def list(self, *, pending_only: bool = False, limit: int = 50) -> list[ApprovalRequest]:
        sql = "SELECT id FROM approvals"
        if pending_only:
            sql += " WHERE status = 'PENDING'"
        sql += f" ORDER BY created_at DESC, id DESC LIMIT {int(limit)}"
        return [self.get(r["id"]) for r in self.app.db.query(sql)]

    # -- writing ------------------------------------------------------------------------------
    def refresh(self, approval_id: str) -> None:
        """Every posted copy shows the new state; inside the caller's write transaction."""
        request = self.load(approval_id)
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

    def set_status(
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
    def expire(self, request: ApprovalRequest, actor: Actor) -> None:
        self.set_status(request.id, Status.EXPIRED)
        self.app.events.append(
            "APPROVAL_EXPIRED",
            actor,
            incident_id=request.incident_id,
            reason=f"no decision by {iso(request.expires_at)}",
            data={"approval_id": request.id, "action": request.action},
        )
        self.refresh(request.id)

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
                request = self.load(r["id"])
                assert request is not None
                self.expire(request, actor)
                expired.append(r["id"])
        return [self.get(i) for i in expired]

    async def sweep(self) -> None:
        """expire_due for a scheduler that takes coroutine functions (Clockwork.every)."""
        self.expire_due()
