"""The outbox: what commands want people to see, stored before anything is announced.

Commands never call Slack. They append messages here, in the same transaction as the state
change they describe; the Slack face (bot/slack/courier.py) delivers them in order and retries
until Slack answers. So an incident keeps running while the Web API is down, and its thread
catches up, in order, when it is back.

Kinds (the Slack face renders each):
  headline   create or refresh an incident's headline message in the ops channel
             payload: {}  (rendered from the incident's current state)
  thread     a message in an incident's thread        payload: {text, view?, data?}
  channel    a message in the ops channel             payload: {text, view?, data?}
  dm         a direct message; target = Slack user ID payload: {text, view?, data?}
  approval   refresh every posted copy of an approval payload: {approval_id}
`view` names a Block Kit renderer in bot/slack/views.py; `data` is what it renders.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from rollbot.clock import Clock, iso, parse_iso
from rollbot.storage.db import Database, dumps, loads

Kind = Literal["headline", "thread", "channel", "dm", "approval"]


class OutboxMessage(BaseModel):
    id: int
    at: datetime
    kind: Kind
    incident_id: str | None = None
    target: str | None = None
    payload: dict[str, Any]
    attempts: int = 0
    last_error: str | None = None


# read by /healthz, /metrics and the armed status on every scrape: through the partial index
# outbox_set_aside, never a scan of years of delivered messages
SET_ASIDE_SQL = (
    "SELECT * FROM outbox INDEXED BY outbox_set_aside WHERE delivered_at IS NOT NULL"
    " AND json_extract(result, '$.set_aside') = 1"
)


class Outbox:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def put(
        self,
        kind: Kind,
        *,
        incident_id: str | None = None,
        target: str | None = None,
        text: str = "",
        view: str | None = None,
        data: dict[str, Any] | None = None,
        dedupe_key: str | None = None,
    ) -> int | None:
        """Queue a message; with a dedupe_key seen before, nothing is queued (None)."""
        payload: dict[str, Any] = {"text": text}
        if view:
            payload["view"] = view
        if data is not None:
            payload["data"] = data
        cur = self.db.execute(
            "INSERT INTO outbox (at, kind, incident_id, target, payload, dedupe_key)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (iso(self.clock.now()), kind, incident_id, target, dumps(payload), dedupe_key),
        )
        return int(cur.lastrowid) if cur.rowcount == 1 and cur.lastrowid else None

    def pending(self, limit: int = 100) -> list[OutboxMessage]:
        rows = self.db.query(
            "SELECT * FROM outbox WHERE delivered_at IS NULL ORDER BY id LIMIT ?", (limit,)
        )
        return [
            OutboxMessage(**{**r, "at": parse_iso(r["at"]), "payload": loads(r["payload"]) or {}})
            for r in rows
        ]

    def delivered(self, message_id: int, result: dict[str, Any] | None = None) -> None:
        self.db.execute(
            "UPDATE outbox SET delivered_at = ?, result = ? WHERE id = ?",
            (iso(self.clock.now()), dumps(result or {}), message_id),
        )

    def set_aside(self, message_id: int, error: str) -> None:
        """Slack refused it for good for now (e.g. not_in_channel): out of the way of the rest,
        kept to be tried again once the cause is fixed (`set_aside_list`)."""
        self.delivered(message_id, {"error": error, "set_aside": True})

    def set_aside_list(self, limit: int = 100) -> list[OutboxMessage]:
        rows = self.db.query(SET_ASIDE_SQL + " ORDER BY id LIMIT ?", (limit,))
        return [
            OutboxMessage(**{**r, "at": parse_iso(r["at"]), "payload": loads(r["payload"]) or {}})
            for r in rows
        ]

    def count_set_aside(self) -> int:
        row = self.db.one(SET_ASIDE_SQL.replace("SELECT *", "SELECT COUNT(*) AS n", 1))
        return int(row["n"]) if row else 0

    def failed(self, message_id: int, error: str) -> None:
        self.db.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
            (error[:500], message_id),
        )
