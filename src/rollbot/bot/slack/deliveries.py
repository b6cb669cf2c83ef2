"""Seen this delivery before? Socket Mode redelivers an envelope not acked in time, HTTP retries
with a header, another host may have taken the same delivery: each request's key is recorded
once, before the ack, and a second record of it is a retry.

A burst (a desk's kill storm) brings many requests at once, and each record was its own round
trip to the database before its ack (on PostgreSQL, a burst of 50 spent a sixth of its round
trips on them). The records of the requests that reach this point in one pass of the event loop
(bot/slack/pass_batch.py) are written as one INSERT ... ON CONFLICT DO NOTHING RETURNING key:
the unique key still makes exactly one of any two records of a delivery the first, in one batch
or across batches, hosts or restarts.

SQLite waits for a lock with the event loop stopped, every other request's ack with it: a record
waits in tries of RECORD_TRY_MS with the loop free between them, until RECORD_BY_S (another
host's writes hold the lock for moments at a time); a /kill waits one try of HOLD_FIRST_WAIT_MS
and then goes on without its record (its incident's dedupe key catches a retry)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rollbot.bot.slack.pass_batch import PassBatch
from rollbot.commands.rollback.hold_first import HOLD_FIRST_WAIT_MS
from rollbot.errors import DatabaseBusy
from rollbot.storage.rows_sql import rows_sql

RECORD_BY_S = 2.0  # how long a request's delivery record waits for the database's lock
RECORD_TRY_MS = 20  # ... in tries this long, the event loop free between them
MAX_BATCH = 200  # keys per statement: far inside every backend's parameter limit
INSERT_DELIVERY = (
    "INSERT INTO deliveries (key, at) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING key"
)
LOCKED = (
    "rollbot's database is locked by another process; nothing was done."
    " Try again in a few seconds (/kill works meanwhile)."
)


class Deliveries:
    def __init__(self, db: Any) -> None:  # either backend (storage/backends.py)
        self.db = db
        self._batch: PassBatch[tuple[str, str, bool], bool] = PassBatch(self._write, MAX_BATCH)

    async def first_time(self, key: str, at: str, *, kill: bool) -> bool:
        """True when this is the first record of `key` (go on), False for a retry. A /kill that
        cannot be recorded at once goes on (True); anything else waits up to RECORD_BY_S and
        is then DatabaseBusy, with nothing done."""
        deadline = time.monotonic() + RECORD_BY_S
        while True:
            try:
                return await self._batch.submit((key, at, kill))
            except DatabaseBusy:
                if kill:
                    return True
                if time.monotonic() >= deadline:
                    raise DatabaseBusy(LOCKED) from None
            await asyncio.sleep(RECORD_TRY_MS / 1000)

    def _write(self, part: list[tuple[str, str, bool]]) -> list[bool]:
        keys: dict[str, str] = {}
        for key, at, _ in part:
            keys.setdefault(key, at)
        params: list[Any] = [v for pair in keys.items() for v in pair]
        sql = rows_sql(INSERT_DELIVERY, len(keys))
        with self.db.patience(HOLD_FIRST_WAIT_MS if any(p[2] for p in part) else RECORD_TRY_MS):
            new = {row["key"] for row in self.db.execute_alone(sql, tuple(params))}
        first = []
        for key, _, _ in part:
            first.append(key in new)
            new.discard(key)  # the same key twice in one batch: the second is a retry
        return first
