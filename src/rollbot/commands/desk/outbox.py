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
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel

from rollbot.clock import Clock, iso, parse_iso
from rollbot.storage.db import Database, dumps, loads
from rollbot.storage.rows_sql import MAX_ROWS, rows_sql

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


INSERT_MESSAGE = (
    "INSERT INTO outbox (at, kind, incident_id, target, payload, dedupe_key)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)


class NewMessage(NamedTuple):
    """A message to queue (Outbox.put's arguments, for put_many)."""

    kind: Kind
    incident_id: str | None = None
    target: str | None = None
    text: str = ""
    view: str | None = None
    data: dict[str, Any] | None = None
    dedupe_key: str | None = None


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
        cur = self._insert([NewMessage(kind, incident_id, target, text, view, data, dedupe_key)])
        return int(cur.lastrowid) if cur.rowcount == 1 and cur.lastrowid else None

    def put_many(self, messages: list[NewMessage]) -> int:
        """Queue these messages, in this order, in one INSERT (a burst of kills' headlines);
        how many were queued (a dedupe_key seen before queues nothing)."""
        queued = 0
        for start in range(0, len(messages), MAX_ROWS):
            queued += self._insert(messages[start : start + MAX_ROWS]).rowcount
        return queued

    def _insert(self, messages: list[NewMessage]) -> Any:
        at = iso(self.clock.now())
        params: list[Any] = []
        for m in messages:
            payload: dict[str, Any] = {"text": m.text}
            if m.view:
                payload["view"] = m.view
            if m.data is not None:
                payload["data"] = m.data
            params += [at, m.kind, m.incident_id, m.target, dumps(payload), m.dedupe_key]
        return self.db.execute(rows_sql(INSERT_MESSAGE, len(messages)), tuple(params))

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
