"""The clock: APScheduler 3.x (AsyncIOScheduler) firing the durable deadlines of the timers table.

The database is the truth; APScheduler's jobs are only alarms. At start the Clockwork fires
every deadline already due, then keeps one date job per pending deadline (re-read from the
table every `sync_interval_s`, so deadlines queued by other processes are picked up), and an
auditor job (every settings.escalation.auditor_interval_s) that fires anything overdue by more
than a minute and runs the sweeps (escalate unescalated incidents, critical losses, checklists
for finished rollbacks). Every firing goes through commands.timers.fire, whose claim makes a
double fire — two processes, or a job and the auditor — a no-op the second time.

Monitors and other periodic work use `every(name, seconds, coro_fn)`. The risk monitor runs in
one process at a time, whoever holds its lease (storage/leases.py): `rollbot serve` and
`rollbot clock` may both run, on one host or several; the others stand by and take over when the
holder's process is gone (on this machine: /proc; on another host: its heartbeat ran out) or has
not renewed the lease for 3 monitor intervals.

The other work that must be done once, not once per process — the sweeps (escalations,
checklists, abandoned flattens, runs cut off by a dead process), approval expiry, resending
webhook pages lost with their sender, the armed-status checks and alerts, the drill's schedule —
is done by the holder of the clock's lease (CLOCK_LEASE), renewed every [host] lease_interval_s
and taken over after 3 missed renewals. Deadlines fire in whichever process claims them first
(storage/timers.py): every process keeps the alarms, so one dead host delays none. Every
process beats its heartbeat (commands/desk/liveness.py) every lease interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from rollbot.commands.approvals.recover import resume_unfinished
from rollbot.commands.approvals.two_person import Approvals
from rollbot.commands.desk.client_ids import lease_client_ids
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.desk.liveness import holder_gone
from rollbot.commands.paging import escalation, webhooks
from rollbot.commands.risk import preflight
from rollbot.commands.risk.checks import record_venue_events
from rollbot.commands.risk.dead_mans_switch import DeadMansSwitch
from rollbot.commands.risk.monitors import MONITOR, Monitor, MonitorReport
from rollbot.commands.rollback import checklist, drill_schedule
from rollbot.commands.rollback.engine import halt_abandoned_flattens
from rollbot.commands.rollback.timers import Fired, Via, due, fire, fire_due, handlers
from rollbot.storage.events import Actor
from rollbot.storage.leases import Holder, Leases
from rollbot.storage.timers import Timers

log = logging.getLogger("rollbot.clock")

AUDIT_GRACE_S = 60.0  # the auditor fires deadlines overdue by more than this
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
MONITOR_LEASE = "risk_monitor"
CLOCK_LEASE = "clock"  # the sweeps and other once-per-desk work
LEASE_INTERVALS = 3  # a holder that missed this many ticks is taken over
ABANDONED_FLATTEN_S = 5.0  # how soon a dead flatten's REDUCING holds are HALTED again


class Clockwork:
    def __init__(
        self,
        app: Rollbot,
        *,
        sync_interval_s: float = 1.0,
        slack_probe: preflight.SlackProbe | None = None,
    ) -> None:
        self.app = app
        self.slack_probe = slack_probe
        self.sync_interval_s = sync_interval_s
        self.scheduler: AsyncIOScheduler | None = None
        self._intervals: dict[str, tuple[float, Callable[[], Awaitable[Any]]]] = {}
        self._scheduled: dict[int, str] = {}  # timer id -> token its job fires
        self._failed: dict[int, str] = {}  # left to the auditor after a handler error
        # two clockworks in one process (tests) are two holders
        me = app.me
        self.holder = Holder(
            id=f"{me['host']} pid {me['pid']} #{secrets.token_hex(2)}",
            host=me["host"],
            pid=me["pid"],
            started=me["started"],
        )
        self.monitor = Monitor(app)
        self._leading: bool | None = None
        self._clock_until: datetime | None = None  # the clock's lease, held here until then
        self._once: set[str] = set()  # interval jobs only the clock's lease holder runs
        # awaited before each periodic job: in `serve`, the bot's acks go first
        # (bot/slack/acks_first.py); a deadline's page is not held back by it
        self.yield_to: Callable[[], Awaitable[None]] | None = None
        self._beating: threading.Event | None = None
        self._clashes: set[str] = set()  # IBKR client ids another host uses, said once
        lease_s = app.settings.host.lease_interval_s
        # this process is alive, for other hosts; and which process does the once-per-desk work
        self.every("heartbeat", lease_s, self.heartbeat)
        self.every("risk_monitor", app.settings.kill_switches.interval_s, self.risk_tick)
        # every posted copy of an expired request says EXPIRED without anyone clicking
        self.every("approval_expiry", 15, Approvals(app).sweep, once=True)
        # the armed status: is the kill path able to work now (commands/risk/preflight.py)
        self.every("preflight", app.settings.preflight.interval_s, self.preflight, once=True)
        # a flatten whose process died leaves its holds REDUCING: HALTED again within seconds
        self.every(
            "abandoned_flattens", ABANDONED_FLATTEN_S, self.halt_abandoned_flattens, once=True
        )
        # a run cut off by its process's death (here or on another host) is finished here
        self.every("resume_orphans", lease_s, self.resume_orphans, once=True)
        # the exchanges' countdown cancel-all, refreshed every third of the shortest countdown
        self.dead_mans_switch = DeadMansSwitch(app)
        self.dead_mans_switch_notes: list[str] = []
        refresh_s = self.dead_mans_switch.interval_s()
        if refresh_s is not None:
            self.every("dead_mans_switch", refresh_s, self.dead_mans_switch.refresh)

    # -- public ---------------------------------------------------------------------------------
    def every(
        self,
        name: str,
        seconds: float,
        coro_fn: Callable[[], Awaitable[Any]],
        *,
        once: bool = False,
    ) -> None:
        """Run `await coro_fn()` every `seconds` (one at a time; errors are logged, not fatal);
        `once`: only while this process holds the clock's lease (once per desk, not per host)."""
        if seconds <= 0:
            raise ValueError(f"interval for {name!r} must be positive, got {seconds}")
        self._intervals[name] = (seconds, coro_fn)
        if once:
            self._once.add(name)
        if self.scheduler is not None:
            self._add_interval(name, seconds, coro_fn)

    async def start(self) -> None:
        self.scheduler = AsyncIOScheduler(
            event_loop=asyncio.get_running_loop(), timezone=UTC, job_defaults=JOB_DEFAULTS
        )
        self.scheduler.start()
        await self._guard("heartbeat", self.heartbeat)
        if self._beating is None:
            self._beating = self.app.heartbeats.beating(self.app.me)
        await self._guard("startup", lambda: self.run_due(via="startup"))
        await self._guard("dead_mans_switch", self._arm_dead_mans_switch)
        if self.leads_clock():
            await self._guard("resend", lambda: webhooks.resend_lost(self.app))
            await self._guard("sweep", self.sweep)
            await self._guard("drill_schedule", self._schedule_drill)
        self.sync()
        self.scheduler.add_job(
            self._audit_job,
            "interval",
            seconds=self.app.settings.escalation.auditor_interval_s,
            id="rollbot:auditor",
        )
        self.scheduler.add_job(
            self._sync_job, "interval", seconds=self.sync_interval_s, id="rollbot:sync"
        )
        for name, (seconds, fn) in self._intervals.items():
            self._add_interval(name, seconds, fn)

    async def run(self, stop: asyncio.Event) -> None:
        """Start, run until `stop` is set, shut down."""
        await self.start()
        try:
            await stop.wait()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.scheduler = None
        self._scheduled.clear()
        if self._leading:  # a standby takes over at its next tick, not after the lease runs out
            with contextlib.suppress(Exception):
                Leases(self.app.db).release(MONITOR_LEASE, self.holder)
            self._leading = None
        if self._clock_until is not None:
            with contextlib.suppress(Exception):
                Leases(self.app.db).release(CLOCK_LEASE, self.holder)
            self._clock_until = None
        if self._beating is not None:
            self._beating.set()
            self._beating = None
        with contextlib.suppress(Exception):
            self.app.heartbeats.stop(self.app.me)

    async def heartbeat(self) -> None:
        """The clock's lease renewed (or taken over); this process's heartbeat beats in its own
        thread as well (Heartbeats.beating)."""
        self.app.heartbeats.beat(self.app.me)
        for clash in lease_client_ids(self.app, self._clashes):
            log.error(clash)
        self.leads_clock(renew=True)

    def _gone(self, lease: Any) -> bool:
        return holder_gone(lease, self.app.me, self.app.beat)

    def leads_clock(self, *, renew: bool = False) -> bool:
        """Does this process hold the clock's lease (the once-per-desk work)? `renew`: renew or
        take it now; otherwise it is taken only when not held until a moment from now."""
        app = self.app
        now = app.clock.now()
        interval = app.settings.host.lease_interval_s
        if (
            not renew
            and self._clock_until is not None
            and self._clock_until - now > timedelta(seconds=interval)
        ):
            return True
        ttl = LEASE_INTERVALS * interval
        try:
            with app.db.write():
                held = Leases(app.db).hold(CLOCK_LEASE, self.holder, now, ttl, dead=self._gone)
                if held.taken_from is not None and held.taken_from.holder:
                    gone = held.taken_from
                    app.events.append(
                        "CLOCK_TAKEN_OVER",
                        Actor.clock("leases"),
                        reason=f"the clock's sweeps taken over by {self.holder.id} from"
                        f" {gone.holder} (host {gone.host})",
                        data={
                            "holder": self.holder.id,
                            "host": self.holder.host,
                            "from": gone.holder,
                            "from_host": gone.host,
                        },
                    )
        except Exception:
            log.exception("the clock's lease cannot be read; its sweeps wait")
            self._clock_until = None
            return False
        self._clock_until = held.lease.expires_at if held.held else None
        return held.held

    async def resume_orphans(self) -> None:
        """Finish runs whose process stopped (SIGKILL, a host lost): on this machine known at
        once, on another host when its heartbeat runs out (3 lease intervals)."""
        await resume_unfinished(
            self.app,
            Actor.clock("resume_orphans"),
            reason="its run stopped with its process (no heartbeat): finished here by"
            f" {self.holder.id}",
        )

    async def risk_tick(self) -> MonitorReport | None:
        """The risk monitor's tick in the process holding its lease. A standby only stores the
        venue events it saw (the monitor counts them from the database)."""
        if not self._lead():
            record_venue_events(self.app)
            return None
        return await self.monitor.tick()

    def _lead(self) -> bool:
        app = self.app
        ttl = LEASE_INTERVALS * app.settings.kill_switches.interval_s
        try:
            with app.db.write():
                now = app.clock.now()
                held = Leases(app.db).hold(MONITOR_LEASE, self.holder, now, ttl, dead=self._gone)
                if held.taken_from is not None:
                    gone = held.taken_from
                    why = (
                        "its process has ended"
                        if gone.expires_at > now
                        else f"it has not renewed its lease in {ttl:g} s"
                    )
                    text = f"Risk monitor taken over by {self.holder.id} from {gone.holder}: {why}."
                    app.events.append(
                        "MONITOR_TAKEN_OVER",
                        MONITOR,
                        reason=text,
                        data={"holder": self.holder.id, "from": gone.holder},
                    )
                    app.outbox.put("channel", text=f"⚠️ {text}")
        except Exception:
            # a monitor run twice is better than none: when in doubt, watch
            log.exception("risk monitor: the lease cannot be read; ticking anyway")
            return True
        if held.held != self._leading:
            if held.held:
                log.info("risk monitor: runs here (%s)", self.holder.id)
            else:
                log.info(
                    "risk monitor: runs in %s (lease until %s); this process stands by",
                    held.lease.holder,
                    held.lease.expires_at.isoformat(),
                )
        self._leading = held.held
        return held.held

    async def preflight(self) -> list[preflight.Check]:
        return await preflight.preflight(self.app, self.slack_probe)

    async def _arm_dead_mans_switch(self) -> None:
        self.dead_mans_switch_notes = await self.dead_mans_switch.start()

    async def disarm_dead_mans_switch(self, why: str) -> list[str]:
        """Only for a stop a person asked for (SIGTERM/SIGINT of serve or clock)."""
        return await self.dead_mans_switch.disarm(why)

    async def _schedule_drill(self) -> None:
        drill_schedule.ensure_scheduled(self.app)

    def pending_count(self) -> int:
        return len(Timers(self.app.db, self.app.clock).pending())

    async def run_due(self, via: Via = "manual") -> list[Fired]:
        """Fire every deadline due now (by the app's clock), follow-ups included."""
        return await fire_due(self.app, via=via)

    async def audit(self, *, sweep: bool = True) -> list[Fired]:
        """Fire deadlines overdue by more than a minute (their alarm was lost), then sweep
        (`sweep`: in the clock's lease holder only)."""
        fired = await fire_due(self.app, via="auditor", grace_s=AUDIT_GRACE_S)
        for f in fired:
            log.warning(
                "auditor fired %s deadline %s for %s, %.1f s late",
                f.timer.kind,
                f.timer.id,
                f.timer.ref,
                f.lag_s,
            )
        self._failed.clear()
        if sweep:
            await webhooks.resend_lost(self.app)  # pages whose sender died mid-POST
            await self.sweep()
        return fired

    async def halt_abandoned_flattens(self) -> None:
        halt_abandoned_flattens(self.app, Actor.clock("abandoned_flattens"))

    async def sweep(self) -> None:
        await self.halt_abandoned_flattens()
        self.app.heartbeats.forget_older_than(self.app.clock.now() - timedelta(days=1))
        escalation.sweep(self.app)
        checklist.open_finished_rollbacks(self.app)

    def sync(self) -> int:
        """One alarm per pending deadline; drop alarms of deadlines fired or cancelled elsewhere."""
        if self.scheduler is None:
            return 0
        known = handlers()
        pending = {
            t.id: t for t in Timers(self.app.db, self.app.clock).pending() if t.kind in known
        }
        for timer_id in [i for i in self._scheduled if i not in pending]:
            self._scheduled.pop(timer_id, None)
            with contextlib.suppress(JobLookupError):
                self.scheduler.remove_job(f"timer:{timer_id}")
        added = 0
        now = self.app.clock.now()
        for timer in pending.values():
            if self._scheduled.get(timer.id) == timer.token:
                continue
            if self._failed.get(timer.id) == timer.token:
                continue
            # the app's clock may be a test's ManualClock: keep the distance, not the instant
            delay = max(0.0, (timer.due_at - now).total_seconds())
            self.scheduler.add_job(
                self._fire_job,
                "date",
                run_date=datetime.now(UTC) + timedelta(seconds=delay),
                args=[timer.id, timer.token],
                id=f"timer:{timer.id}",
                replace_existing=True,
            )
            self._scheduled[timer.id] = timer.token
            added += 1
        return added

    def overdue(self) -> int:
        return len(due(self.app))

    # -- jobs -----------------------------------------------------------------------------------
    async def _fire_job(self, timer_id: int, token: str) -> None:
        try:
            await fire(self.app, timer_id, token, "scheduler")
        except Exception:
            log.exception("deadline %s failed; the auditor will retry it", timer_id)
            self._failed[timer_id] = token
        finally:
            if self._scheduled.get(timer_id) == token:
                del self._scheduled[timer_id]

    async def _sync_job(self) -> None:
        try:
            if self.yield_to is not None:
                await self.yield_to()
            self.sync()
        except Exception:
            log.exception("reading the deadlines failed; will retry")

    async def _audit_job(self) -> None:
        await self._guard("auditor", lambda: self.audit(sweep=self.leads_clock()))

    async def _guard(self, name: str, fn: Callable[[], Awaitable[Any]]) -> None:
        try:
            if self.yield_to is not None:
                await self.yield_to()
            await fn()
        except Exception:
            log.exception("clock job %s failed", name)

    def _add_interval(self, name: str, seconds: float, fn: Callable[[], Awaitable[Any]]) -> None:
        assert self.scheduler is not None

        async def job() -> None:
            if name in self._once and not self.leads_clock():
                return
            await self._guard(name, fn)

        self.scheduler.add_job(
            job, "interval", seconds=seconds, id=f"every:{name}", replace_existing=True
        )
