"""The leases a process of the bot holds for work done once per desk (storage/leases.py): the
clock's sweeps, the risk monitor, the courier's posts. One holder per lease user (two in one
process, in tests, are two holders); a holder known to have ended (its process gone, its
heartbeat run out) is taken over at once, any other after its lease runs out."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from datetime import datetime

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.desk.liveness import holder_gone
from rollbot.storage.leases import Held, Holder, Lease, Leases


def process_holder(app: Rollbot, role: str = "") -> Holder:
    me = app.me
    return Holder(
        id=f"{me['host']} pid {me['pid']}{f' {role}' if role else ''} #{secrets.token_hex(2)}",
        host=me["host"],
        pid=me["pid"],
        started=me["started"],
    )


class ProcessLease:
    """One named lease, held (renewed) or stood by for. `on_taken(lease, now, ttl_s)` is called
    in the same transaction when this holder takes it over from another."""

    def __init__(
        self,
        app: Rollbot,
        name: str,
        holder: Holder,
        on_taken: Callable[[Lease, datetime, float], None] | None = None,
    ) -> None:
        self.app = app
        self.name = name
        self.holder = holder
        self.on_taken = on_taken
        self.until: datetime | None = None  # held here until then; None: not held

    def gone(self, lease: Lease) -> bool:
        return holder_gone(lease, self.app.me, self.app.beat)

    def hold(self, ttl_s: float) -> Held:
        """Take or renew it; raises what the database raises (the caller decides: watch
        anyway, or wait)."""
        app = self.app
        with app.db.write():
            now = app.clock.now()
            held = Leases(app.db).hold(self.name, self.holder, now, ttl_s, dead=self.gone)
            if held.taken_from is not None and self.on_taken is not None:
                self.on_taken(held.taken_from, now, ttl_s)
        self.until = held.lease.expires_at if held.held else None
        return held

    def release(self) -> None:
        """Let a standby take it at once (a clean shutdown)."""
        if self.until is not None:
            with contextlib.suppress(Exception):
                Leases(self.app.db).release(self.name, self.holder)
            self.until = None
