"""Seen this delivery before? Socket Mode redelivers an envelope not acked in time, HTTP retries
with a header, another host may have taken the same delivery: each request's key is recorded
once, before the ack, and a second record of it is a retry.

A burst (a desk's kill storm) brings many requests at once, and each record was its own round
trip to the database before its ack (on PostgreSQL, a burst of 50 spent a sixth of its round
trips on them). The records of the requests that reach this point in one pass of the event loop
are written as one INSERT ... ON CONFLICT DO NOTHING RETURNING key: the unique key still makes
exactly one of any two records of a delivery the first, in one batch or across batches, hosts
or restarts.

SQLite waits for a lock with the event loop stopped, every other request's ack with it: a record
waits in tries of RECORD_TRY_MS with the loop free between them, until RECORD_BY_S (another
host's writes hold the lock for moments at a time); a /kill waits one try of HOLD_FIRST_WAIT_MS
and then goes on without its record (its incident's dedupe key catches a retry)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rollbot.commands.rollback.hold_first import HOLD_FIRST_WAIT_MS
from rollbot.errors import DatabaseBusy

RECORD_BY_S = 2.0  # how long a request's delivery record waits for the database's lock
RECORD_TRY_MS = 20  # ... in tries this long, the event loop free between them
MAX_BATCH = 200  # keys per statement: far inside every backend's parameter limit
LOCKED = (
    "rollbot's database is locked by another process; nothing was done."
    " Try again in a few seconds (/kill works meanwhile)."
)


class Deliveries:
    def __init__(self, db: Any) -> None:  # either backend (storage/backends.py)
        self.db = db
        self._pending: list[tuple[str, str, bool, asyncio.Future[bool]]] = []
        self._flushing = False

    async def first_time(self, key: str, at: str, *, kill: bool) -> bool:
        """True when this is the first record of `key` (go on), False for a retry. A /kill that
        cannot be recorded at once goes on (True); anything else waits up to RECORD_BY_S and
        is then DatabaseBusy, with nothing done."""
        deadline = time.monotonic() + RECORD_BY_S
        while True:
            try:
                return await self._record(key, at, kill)
            except DatabaseBusy:
                if kill:
                    return True
                if time.monotonic() >= deadline:
                    raise DatabaseBusy(LOCKED) from None
            await asyncio.sleep(RECORD_TRY_MS / 1000)

    def _record(self, key: str, at: str, kill: bool) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._pending.append((key, at, kill, future))
        if not self._flushing:  # the requests already on their way here join this one
            self._flushing = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flushing = False
        batch = [p for p in self._pending if not p[3].done()]  # a cancelled request: dropped
        self._pending = []
        while batch:
            part, batch = batch[:MAX_BATCH], batch[MAX_BATCH:]
            self._write(part)

    def _write(self, part: list[tuple[str, str, bool, asyncio.Future[bool]]]) -> None:
        keys: dict[str, str] = {}
        for key, at, _, _ in part:
            keys.setdefault(key, at)
        params: list[Any] = [v for pair in keys.items() for v in pair]
        sql = (
            "INSERT INTO deliveries (key, at) VALUES "
            + ", ".join(["(?, ?)"] * len(keys))
            + " ON CONFLICT DO NOTHING RETURNING key"
        )
        try:
            with self.db.patience(HOLD_FIRST_WAIT_MS if any(p[2] for p in part) else RECORD_TRY_MS):
                new = {row["key"] for row in self.db.execute_alone(sql, tuple(params))}
        except Exception as exc:  # DatabaseBusy: each request decides whether to try again
            for *_, future in part:
                if not future.done():
                    future.set_exception(exc)
            return
        for key, _, _, future in part:
            if not future.done():
                future.set_result(key in new)
            new.discard(key)  # the same key twice in one batch: the second is a retry
