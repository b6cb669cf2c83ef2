"""The append-only event log: who, when, what, why, from where. Reports are built from it."""

from __future__ import annotations

import getpass
import os
import socket
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from rollbot.clock import Clock, iso, parse_iso
from rollbot.storage.db import Database, dumps, loads

Source = Literal["slack", "cli", "clock", "system"]


class Actor(BaseModel):
    """Who is acting and through which face. `id` is a Slack user ID where one is known."""

    id: str
    source: Source
    name: str = ""
    host: str = ""

    @classmethod
    def terminal(cls, by: str | None = None, identities: dict[str, str] | None = None) -> Actor:
        try:
            os_user = getpass.getuser()
        except (KeyError, OSError):  # a uid with no name (containers): still record who
            os_user = f"uid{os.getuid()}"
        mapped = (identities or {}).get(os_user)
        return cls(
            id=by or mapped or os_user, source="cli", name=os_user, host=socket.gethostname()
        )

    @classmethod
    def clock(cls, job: str) -> Actor:
        return cls(id=f"clock:{job}", source="clock")

    @property
    def label(self) -> str:
        if self.source == "slack":
            return f"<@{self.id}>"
        if self.source == "cli":
            return f"{self.id} ({self.name}@{self.host})" if self.host else self.id
        return self.id


class Event(BaseModel):
    id: int
    at: datetime
    kind: str
    actor: str
    source: Source
    scope: str | None = None
    incident_id: str | None = None
    reason: str | None = None
    data: dict[str, Any] = {}


class EventLog:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def append(
        self,
        kind: str,
        actor: Actor,
        *,
        reason: str | None = None,
        scope: str | None = None,
        incident_id: str | None = None,
        data: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> int:
        payload = dict(data or {})
        if actor.source == "cli" and actor.host:
            payload.setdefault("os_user", actor.name)
            payload.setdefault("host", actor.host)
        cur = self.db.execute(
            "INSERT INTO events (at, kind, actor, source, scope, incident_id, reason, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                iso(at or self.clock.now()),
                kind,
                actor.id,
                actor.source,
                scope,
                incident_id,
                reason,
                dumps(payload),
            ),
        )
        return int(cur.lastrowid or 0)

    def list(
        self,
        *,
        incident_id: str | None = None,
        kinds: list[str] | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        where, params = [], []
        if incident_id is not None:
            where.append("incident_id = ?")
            params.append(incident_id)
        if kinds:
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            params.extend(kinds)
        if since is not None:
            where.append("at >= ?")
            params.append(iso(since))
        sql = "SELECT * FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [
            Event(**{**row, "at": parse_iso(row["at"]), "data": loads(row["data"]) or {}})
            for row in self.db.query(sql, tuple(params))
        ]

    def count(self, kind: str, since: datetime | None = None) -> int:
        if since is None:
            row = self.db.one("SELECT COUNT(*) AS n FROM events WHERE kind = ?", (kind,))
        else:
            row = self.db.one(
                "SELECT COUNT(*) AS n FROM events WHERE kind = ? AND at >= ?", (kind, iso(since))
            )
        return int(row["n"]) if row else 0
