"""Leases: work that one process at a time must do (the risk monitor) is done by whoever holds
its lease. The holder renews it each time it does the work; when the holder stops (killed, hung,
its host gone) the lease runs out and another process takes it over, at once if the caller knows
the holder is dead. Time is the app's clock, so a test decides when a lease runs out."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from pydantic import BaseModel

from rollbot.clock import iso
from rollbot.storage.db import Database


class Holder(BaseModel):
    id: str  # unique per holder, also within one process
    host: str
    pid: int
    started: str | None = None  # when the process started: a pid alone is reused


class Lease(BaseModel):
    name: str
    holder: str
    host: str
    pid: int
    started: str | None = None
    taken_at: datetime
    expires_at: datetime


class Held(BaseModel):
    """The outcome of one attempt to hold a lease."""

    held: bool
    lease: Lease  # as it stands after the attempt
    taken_from: Lease | None = None  # another holder's lease this attempt took over


def _never(lease: Lease) -> bool:
    return False


class Leases:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, name: str) -> Lease | None:
        row = self.db.one("SELECT * FROM leases WHERE name = ?", (name,))
        return Lease.model_validate(row) if row else None

    def hold(
        self,
        name: str,
        holder: Holder,
        now: datetime,
        ttl_s: float,
        dead: Callable[[Lease], bool] = _never,
    ) -> Held:
        """Take or renew `name` for `holder` until now + ttl_s, unless another holder's lease is
        still running and `dead` does not say that holder is gone. One write transaction: two
        processes cannot both hold it. The row is made to exist and then locked before it is
        read (an UPDATE of itself): SQLite's write lock does that already, and a database with
        row locks (PostgreSQL under READ COMMITTED) must not let two holders read "expired"
        side by side and both take it."""
        with self.db.write():
            self.db.execute(
                "INSERT INTO leases (name, holder, host, pid, started, taken_at, expires_at)"
                " VALUES (?, '', '', 0, NULL, ?, ?) ON CONFLICT (name) DO NOTHING",
                (name, iso(now), iso(now)),
            )
            self.db.execute("UPDATE leases SET name = name WHERE name = ?", (name,))
            current = self.get(name)
            if current is not None and not current.holder:  # the placeholder just made
                current = None
            other = current if current is not None and current.holder != holder.id else None
            if other is not None and other.expires_at > now and not dead(other):
                return Held(held=False, lease=other)
            lease = Lease(
                name=name,
                holder=holder.id,
                host=holder.host,
                pid=holder.pid,
                started=holder.started,
                taken_at=current.taken_at if current is not None and other is None else now,
                expires_at=now + timedelta(seconds=ttl_s),
            )
            self.db.execute(
                "INSERT INTO leases (name, holder, host, pid, started, taken_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " holder = excluded.holder, host = excluded.host, pid = excluded.pid,"
                " started = excluded.started, taken_at = excluded.taken_at,"
                " expires_at = excluded.expires_at",
                (
                    name,
                    holder.id,
                    holder.host,
                    holder.pid,
                    holder.started,
                    iso(lease.taken_at),
                    iso(lease.expires_at),
                ),
            )
        return Held(held=True, lease=lease, taken_from=other)

    def drop_expired(self, prefix: str, cutoff: datetime) -> int:
        """Leases under `prefix` that ran out before `cutoff` (ISO-8601 UTC sorts as time)."""
        cur = self.db.execute(
            "DELETE FROM leases WHERE substr(name, 1, ?) = ? AND expires_at < ?",
            (len(prefix), prefix, iso(cutoff)),
        )
        return cur.rowcount

    def release(self, name: str, holder: Holder) -> bool:
        """Let another process take it at once (a clean shutdown)."""
        with self.db.write():
            cur = self.db.execute(
                "DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder.id)
            )
        return cur.rowcount > 0
