"""IBKR client ids across hosts. TWS / IB Gateway accepts one session per client id: a second
login with an id in use is refused (error 326), and two hosts configured alike would knock each
other's sessions off in turn. Each host configures its own ids ([[venues]] client_id and
spare_client_ids, in that host's config); every process leases its host's ids in the database
with its heartbeat, so a second host configured with an id another live host uses is named at
once — in the log, as an event and in the channel — instead of being found during a kill."""

from __future__ import annotations

from typing import Any

from rollbot.commands.desk.context import Rollbot
from rollbot.storage.events import Actor
from rollbot.storage.leases import Holder, Leases

LEASE_INTERVALS = 3


def _names(app: Rollbot) -> list[tuple[str, str, int]]:
    out = []
    for v in app.settings.venues:
        if v.kind == "ibkr":
            for cid in [v.client_id, *v.spare_client_ids]:
                out.append((f"ibkr_client:{v.host}:{v.port}:{cid}", v.name, cid))
    return out


def lease_client_ids(app: Rollbot, said: set[str]) -> list[str]:
    """Renew this host's IBKR client ids; one line per id another live host holds. `said`: the
    conflicts already reported by this process (each is reported once)."""
    me: dict[str, Any] = app.me
    host = me["host"]
    holder = Holder(id=f"host:{host}", host=host, pid=me["pid"], started=me["started"])
    ttl = LEASE_INTERVALS * app.settings.host.lease_interval_s
    clashes = []
    with app.db.write():
        now = app.clock.now()
        for name, venue, cid in _names(app):
            held = Leases(app.db).hold(name, holder, now, ttl)
            if held.held:
                continue
            text = (
                f"IBKR client id {cid} of venue {venue} is configured on host {host} and in use"
                f" by host {held.lease.host}: TWS takes one session per client id, so the two"
                " hosts would log each other off. Give each host its own client_id and"
                " spare_client_ids."
            )
            clashes.append(text)
            if name not in said:
                said.add(name)
                app.events.append(
                    "HOST_CONFLICT",
                    Actor.clock("client_ids"),
                    reason=text,
                    data={"venue": venue, "client_id": cid, "other_host": held.lease.host},
                )
                app.outbox.put("channel", text=f"⚠️ {text}", dedupe_key=f"{name}:{host}:clash")
    return clashes
