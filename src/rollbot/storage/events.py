"""The append-only event log: who, when, what, why, from where. Reports are built from it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel

from rollbot.clock import Clock, iso, parse_iso
from rollbot.errors import BadInput
from rollbot.storage.chain import HEAD_SQL, INSERT_SQL, event_hash, next_link
from rollbot.storage.db import Database, dumps, loads
from rollbot.storage.os_identity import hostname, os_login, terminal_id
from rollbot.storage.rows_sql import MAX_ROWS, rows_sql

Source = Literal["slack", "cli", "clock", "system"]


class Actor(BaseModel):
    """Who is acting and through which face. `id` is a Slack user ID where one is known."""

    id: str
    source: Source
    name: str = ""
    host: str = ""
    uid: int | None = None  # the real uid behind a terminal actor

    @classmethod
    def terminal(cls, by: str | None = None, identities: dict[str, str] | None = None) -> Actor:
        """The person at this terminal: the real uid's login name, mapped through [identities].

        USER and LOGNAME are whatever the caller exported, so they never name anyone. `by` may
        only repeat who you already are (your mapped Slack ID or your login name): anything else
        would let one person act as another, so it is refused (IdentityRefused).
        """
        os_user, uid = os_login()
        me = cls(
            id=terminal_id(os_user, identities),
            source="cli",
            name=os_user,
            host=hostname(),
            uid=uid,
        )
        if by is not None and by.strip() not in (me.id, os_user):
            raise IdentityRefused(me, by)
        return me

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


class IdentityRefused(BadInput):
    """`--by` named someone other than the person at the terminal."""

    def __init__(self, actor: Actor, claimed: str) -> None:
        super().__init__(
            f"--by {claimed!r} refused: you are {actor.id} (OS user {actor.name}, uid"
            f" {actor.uid}); who acts at the terminal comes from the OS user, and --by may only"
            " repeat it. Nothing was changed."
        )
        self.actor = actor
        self.claimed = claimed


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
    host: str | None = None  # the machine whose process wrote it (None: before V10)
    seq: int | None = None  # its place in the hash chain (storage/chain.py)
    hash: str | None = None


class NewEvent(NamedTuple):
    """An event to append (EventLog.append's arguments, for append_many)."""

    kind: str
    actor: Actor
    reason: str | None = None
    scope: str | None = None
    incident_id: str | None = None
    data: dict[str, Any] | None = None
    at: datetime | None = None


class EventLog:
    """Appends chain each event to the one before (storage/chain.py). `host` names the machine
    writing (default: this one's name); a terminal actor's own host wins."""

    def __init__(self, db: Database, clock: Clock, host: str | None = None) -> None:
        self.db = db
        self.clock = clock
        self.host = host or hostname()

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
        return self.append_many([NewEvent(kind, actor, reason, scope, incident_id, data, at)])

    def append_many(self, entries: list[NewEvent]) -> int:
        """Append these events in this order, chained, in one INSERT (a burst of kills stores
        its events in one round trip); the last one's row id (0 for none)."""
        if not entries:
            return 0
        rows: list[Any] = []
        # the head is read in the write transaction that appends: writers are serialized
        # (BEGIN IMMEDIATE; PostgreSQL's advisory lock), so no two events claim one link; a
        # second event in the same transaction links on from the first without reading it back
        # (every event is appended here; the memo lives and dies with the transaction)
        with self.db.write():
            link = self.db.next_link
            if link is None:
                head = self.db.one(HEAD_SQL)
                link = next_link(None if head is None else (head["seq"], head["hash"]))
            for e in entries:
                payload = dict(e.data or {})
                actor = e.actor
                if actor.source == "cli" and actor.host:
                    payload.setdefault("os_user", actor.name)
                    payload.setdefault("host", actor.host)
                    if actor.uid is not None:
                        payload.setdefault("uid", actor.uid)
                when = iso(e.at or self.clock.now())
                host = actor.host or self.host
                text = dumps(payload)
                seq, prev = link
                digest = event_hash(
                    seq, when, e.kind, actor.id, actor.source, host, e.scope, e.incident_id,
                    e.reason, text, prev,
                )  # fmt: skip
                rows.append(
                    (when, e.kind, actor.id, actor.source, host, e.scope, e.incident_id,
                     e.reason, text, seq, prev, digest)
                )  # fmt: skip
                link = (seq + 1, digest)
            last = 0
            for start in range(0, len(rows), MAX_ROWS):
                part = rows[start : start + MAX_ROWS]
                cur = self.db.execute(
                    rows_sql(INSERT_SQL, len(part)), tuple(v for row in part for v in row)
                )
                last = int(cur.lastrowid or 0)
            self.db.next_link = link
        return last

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
