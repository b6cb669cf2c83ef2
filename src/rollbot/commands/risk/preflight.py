"""Armed status: is the kill path able to work right now, before anyone needs it?

Each check answers PASS or FAIL with the reason and what a person should do. A check that
cannot run is a FAIL (fail closed). `run_checks` reads; `record` stores the latest answer per
check in `armed_checks` and, on each change (a check failing, or recovering), writes one event
and queues one post for the ops channel, so a failure is announced once, not every tick.

The Slack checks (token, ops channel, contacts) need the Web API, which commands/ never call:
the face hands in a `SlackProbe` (bot/slack/probe.py) that runs them.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from rollbot.brokers.base import TradingRefused, VenueUnavailable
from rollbot.clock import iso, parse_iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.desk.liveness import holder_gone
from rollbot.commands.risk import dead_mans_switch
from rollbot.errors import StateUnavailable, StorageError
from rollbot.storage.events import Actor
from rollbot.storage.leases import Leases

PREFLIGHT = Actor(id="clock:preflight", source="clock")
MONITOR_LEASE = "risk_monitor"  # the lease bot/scheduler.py holds while it runs the monitor


class Check(BaseModel):
    name: str
    ok: bool
    reason: str
    action: str = ""  # what to do when it fails


SlackProbe = Callable[[], Awaitable[list[Check]]]


def passed(name: str, reason: str) -> Check:
    return Check(name=name, ok=True, reason=reason)


def failed(name: str, reason: str, action: str) -> Check:
    return Check(name=name, ok=False, reason=reason, action=action)


# -- the checks ---------------------------------------------------------------------------------
async def check_venue(app: Rollbot, name: str, timeout_s: float) -> Check:
    """Reachable, its key reads positions and orders, and it may trade (no order is sent).

    It connects as a kill does (read-write), and a venue already connected stays as it is: in
    serve and clock the venue is the one the next /kill cancels through, and a read-only
    reconnect here left it refusing every cancel (and cut the session of a kill in flight)."""
    check = f"venue:{name}"
    action = f"give {name}'s API key permission to trade and cancel"
    try:
        venue = app.venue(name)
        await asyncio.wait_for(venue.connect(), timeout_s)
        positions = await asyncio.wait_for(venue.positions(), timeout_s)
        orders = await asyncio.wait_for(venue.open_orders(), timeout_s)
        permission = getattr(venue, "trading_permission", None)
        if permission is None:
            can_trade, why = (
                False,
                (
                    "its key's permission to trade and cancel cannot be read on this kind of venue"
                    " without sending an order"
                ),
            )
        else:
            # (may trade, why) or (may trade, why, what to do): the venue knows its own remedy
            can_trade, why, *remedy = await asyncio.wait_for(permission(), timeout_s)
            action = remedy[0] if remedy and remedy[0] else action
    except TradingRefused as exc:  # the venue answered: no order and no cancel at all
        return failed(check, f"refuses to trade or cancel: {exc}", exc.action or action)
    except TimeoutError:
        return failed(
            check,
            f"no answer within {timeout_s:g} s",
            f"check that {name} is up and reachable from this host",
        )
    except VenueUnavailable as exc:  # the request did not get an answer: down or unreachable
        return failed(
            check,
            f"unreachable: {exc}",
            f"check that {name} is up and reachable from this host",
        )
    except Exception as exc:  # any failure to read is a failure of the check
        return failed(
            check,
            f"{type(exc).__name__}: {exc}",
            f"check {name}'s connection settings and its API key's permissions",
        )
    if not can_trade:
        return failed(
            check, f"reads {len(positions)} positions and {len(orders)} orders, but {why}", action
        )
    return passed(check, f"reads {len(positions)} positions and {len(orders)} orders; {why}")


def check_gates(app: Rollbot) -> Check:
    paths = [app.settings.paths.live_environment, app.settings.paths.shadow_config]
    values = app.gates.read()
    if not values.readable:
        return failed(
            "gates",
            f"the gates files cannot be read: {', '.join(str(p) for p in paths)}",
            "run `rollbot gates disable --confirm` to write them in the safe state",
        )
    for folder in {p.parent for p in paths}:
        try:  # the real thing: a kill writes a temporary file here, then renames it over
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".rollbot-preflight-"):
                pass
        except OSError as exc:
            return failed(
                "gates",
                f"{folder} is not writable: a kill could not disable the gates ({exc})",
                f"give the user running rollbot write access to {folder}",
            )
    return passed("gates", "readable and writable")


def check_database(app: Rollbot) -> Check:
    if app.db.dialect != "sqlite":
        return _check_postgresql(app)
    try:
        conn = sqlite3.connect(app.settings.database.path, timeout=2)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return failed(
            "database",
            f"cannot take the write lock on {app.settings.database.path}: {exc}",
            "check the file's permissions and what else holds it",
        )
    return passed("database", "writable")


def _check_postgresql(app: Rollbot) -> Check:
    """The writers' lock taken within 2 s on a connection of its own, and the right to write
    the hold table: what a kill needs of the server."""
    from rollbot.storage.backends import open_database

    try:
        db = open_database(app.settings.database, create=False)
        try:
            with db.patience(2000), db.write():
                row = db.one("SELECT has_table_privilege('holds', 'INSERT') AS ok")
        finally:
            db.close()
    except (StorageError, StateUnavailable) as exc:
        return failed(
            "database",
            f"cannot take the write lock on {app.db.path}: {exc}",
            "check the server, the network and what else holds the lock",
        )
    if not row or not row["ok"]:
        return failed(
            "database",
            f"the role in {app.db.path} may not write the holds table",
            "GRANT SELECT, INSERT, UPDATE on rollbot's tables to that role",
        )
    return passed("database", "writable (PostgreSQL)")


def check_disk(app: Rollbot) -> Check:
    # on PostgreSQL the database's disk is the server's to watch: here, the reports' folder
    local = app.settings.database.path if app.db.dialect == "sqlite" else None
    folder = Path(local or app.settings.paths.reports_dir).resolve().parent
    need = app.settings.preflight.min_free_mb
    try:
        free = shutil.disk_usage(folder).free / 2**20
    except OSError as exc:
        return failed("disk", f"cannot read the free space of {folder}: {exc}", "check the disk")
    if free < need:
        return failed(
            "disk",
            f"{free:,.0f} MiB free under {folder}, below the {need:,} MiB threshold",
            "free space on that disk: a full disk stops every write, holds included",
        )
    if local is None:  # say what was read: never the server's disk
        return passed(
            "disk",
            f"{free:,.0f} MiB free under {folder} (threshold {need:,} MiB); the database's"
            " disk is the PostgreSQL server's, not read here",
        )
    return passed("disk", f"{free:,.0f} MiB free (threshold {need:,} MiB)")


def check_monitor_lease(app: Rollbot) -> Check:
    lease = Leases(app.db).get(MONITOR_LEASE)
    start = "start `rollbot serve` or `rollbot clock`"
    if lease is None:
        return failed("monitor_lease", "no process has ever run the risk monitor", start)
    if lease.expires_at <= app.clock.now():
        return failed(
            "monitor_lease",
            f"the lease of {lease.holder} ran out at {iso(lease.expires_at)}: nobody watches"
            " PnL and drawdown",
            start,
        )
    if holder_gone(lease, app.me, app.beat):
        return failed("monitor_lease", f"{lease.holder} holds the lease but has ended", start)
    return passed("monitor_lease", f"held by {lease.holder} until {iso(lease.expires_at)}")


def check_dead_mans_switch(app: Rollbot, venue: str) -> Check:
    """The exchange's countdown armed, its trigger time (as the exchange answered) ahead."""
    name = dead_mans_switch.check_name(venue)
    armed, trigger, reason = dead_mans_switch.stored_trigger(app, venue)
    if not armed:
        return failed(
            name,
            f"not armed: {reason}",
            "start `rollbot serve` or `rollbot clock` (and see its start-up lines)",
        )
    if trigger is None or trigger <= app.clock.now():
        when = iso(trigger) if trigger else "an unknown time"
        return failed(
            name,
            f"the countdown ran out at {when}: no refresh got through, the exchange cancels"
            " (or has cancelled) this venue's orders",
            f"check that serve or clock runs and reaches {venue}",
        )
    return passed(name, f"armed: the exchange cancels at {iso(trigger)} unless refreshed")


def check_drill(app: Rollbot) -> Check:
    days = app.settings.drills.max_age_days
    row = app.db.one("SELECT at FROM drills WHERE status = 'SUCCESS' ORDER BY id DESC LIMIT 1")
    run = "run `rollbot drill` (or wait for the scheduled one)"
    if row is None:
        return failed("drill", "no drill has passed yet", run)
    age = app.clock.now() - parse_iso(row["at"])
    if age > timedelta(days=days):
        return failed(
            "drill",
            f"the last passed drill is {age.days} days old, older than its {days:g}-day period",
            run,
        )
    return passed("drill", f"last passed {iso(parse_iso(row['at']))}")


async def run_checks(app: Rollbot, slack: SlackProbe | None = None) -> list[Check]:
    """Every check, in the order a person reads them."""
    checks: list[Check] = []
    if slack is not None:
        try:
            checks += await slack()
        except Exception as exc:
            checks.append(
                failed("slack_token", f"the Slack checks could not run: {exc}", "check Slack")
            )
    timeout = app.settings.preflight.venue_timeout_s
    checks += await asyncio.gather(*(check_venue(app, n, timeout) for n in app.venue_names))
    checks += [check_dead_mans_switch(app, v.name) for v in dead_mans_switch.configured(app)]
    for fn in (check_gates, check_database, check_disk, check_monitor_lease, check_drill):
        try:
            checks.append(fn(app))
        except Exception as exc:
            name = fn.__name__.removeprefix("check_")
            checks.append(failed(name, f"the check could not run: {exc}", "see the logs"))
    return checks


# -- what was last seen, and announcing changes -------------------------------------------------
def latest(app: Rollbot) -> list[Check]:
    rows = app.db.query("SELECT * FROM armed_checks ORDER BY rowid")
    return [
        Check(name=r["name"], ok=bool(r["ok"]), reason=r["reason"], action=r["action"])
        for r in rows
    ]


def record(app: Rollbot, checks: list[Check]) -> list[Check]:
    """Store the latest answers; announce each check that changed. Returns the changed ones."""
    now = iso(app.clock.now())
    changed: list[Check] = []
    with app.db.write():
        before = {c.name: c for c in latest(app)}
        for check in checks:
            prev = before.pop(check.name, None)
            app.db.execute(
                "INSERT INTO armed_checks (name, ok, reason, action, checked_at, since)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET ok = excluded.ok,"
                " reason = excluded.reason, action = excluded.action,"
                " checked_at = excluded.checked_at,"
                " since = CASE WHEN armed_checks.ok = excluded.ok THEN armed_checks.since"
                " ELSE excluded.since END",
                (check.name, int(check.ok), check.reason, check.action, now, now),
            )
            if (prev is None and not check.ok) or (prev is not None and prev.ok != check.ok):
                changed.append(check)
                _announce(app, check)
        # a check not run this time keeps its last answer (the contacts cannot be read while
        # the token is refused); only a venue removed from the config is forgotten
        for gone in before:
            venue = gone.partition(":")[2]
            kinds = ("venue:", "dead_mans_switch:")
            if gone.startswith(kinds) and venue not in app.venue_names:
                app.db.execute("DELETE FROM armed_checks WHERE name = ?", (gone,))
    return changed


def _announce(app: Rollbot, check: Check) -> None:
    if check.ok:
        kind, text = "ARMED_CHECK_RECOVERED", f"✅ Armed status: {check.name} passes again."
    else:
        kind = "ARMED_CHECK_FAILED"
        text = f"🔴 Armed status: {check.name} FAILED: {check.reason}. What to do: {check.action}."
    app.events.append(kind, PREFLIGHT, reason=check.reason, data={"check": check.name})
    app.outbox.put("channel", text=text)


async def preflight(app: Rollbot, slack: SlackProbe | None = None) -> list[Check]:
    checks = await run_checks(app, slack)
    record(app, checks)
    return checks
