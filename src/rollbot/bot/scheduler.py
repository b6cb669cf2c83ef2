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
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from rollbot.bot.deadline_alarms import DeadlineAlarms
from rollbot.bot.process_lease import ProcessLease, process_holder
from rollbot.commands.approvals.recover import resume_unfinished
from rollbot.commands.approvals.two_person import Approvals
from rollbot.commands.desk.client_ids import lease_client_ids
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.paging import escalation, webhooks
from rollbot.commands.risk import preflight
from rollbot.commands.risk.checks import record_venue_events
from rollbot.commands.risk.dead_mans_switch import DeadMansSwitch
from rollbot.commands.risk.monitors import MONITOR, Monitor, MonitorReport
from rollbot.commands.rollback import checklist, drill_schedule
from rollbot.commands.rollback.engine import halt_abandoned_flattens
from rollbot.commands.rollback.timers import Fired, Via, due, fire_due
from rollbot.storage.events import Actor
from rollbot.storage.leases import Lease
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
        self.alarms = DeadlineAlarms(app)
        # two clockworks in one process (tests) are two holders
        self.holder = process_holder(app)
        self._clock = ProcessLease(app, CLOCK_LEASE, self.holder, self._clock_taken)
        self._monitor_lease = ProcessLease(app, MONITOR_LEASE, self.holder, self._monitor_taken)
        self.monitor = Monitor(app)
        self._leading: bool | None = None
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
        self.alarms.scheduled.clear()
        # a standby takes over at its next tick, not after the lease runs out
        self._monitor_lease.release()
        self._leading = None
        self._clock.release()
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

    def leads_clock(self, *, renew: bool = False) -> bool:
        """Does this process hold the clock's lease (the once-per-desk work)? `renew`: renew or
        take it now; otherwise it is taken only when not held until a moment from now."""
        app = self.app
        interval = app.settings.host.lease_interval_s
        until = self._clock.until
        if (
            not renew
            and until is not None
            and until - app.clock.now() > timedelta(seconds=interval)
        ):
            return True
        try:
            return self._clock.hold(LEASE_INTERVALS * interval).held
        except Exception:
            log.exception("the clock's lease cannot be read; its sweeps wait")
            self._clock.until = None
            return False

    def _clock_taken(self, gone: Lease, now: datetime, ttl_s: float) -> None:
        if not gone.holder:  # the placeholder row made for the first holder
            return
        self.app.events.append(
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
        try:
            held = self._monitor_lease.hold(
                LEASE_INTERVALS * self.app.settings.kill_switches.interval_s
            )
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

    def _monitor_taken(self, gone: Lease, now: datetime, ttl_s: float) -> None:
        why = (
            "its process has ended"
            if gone.expires_at > now
            else f"it has not renewed its lease in {ttl_s:g} s"
        )
        text = f"Risk monitor taken over by {self.holder.id} from {gone.holder}: {why}."
        self.app.events.append(
            "MONITOR_TAKEN_OVER",
            MONITOR,
            reason=text,
            data={"holder": self.holder.id, "from": gone.holder},
        )
        self.app.outbox.put("channel", text=f"⚠️ {text}")

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
        self.alarms.failed.clear()
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
        return 0 if self.scheduler is None else self.alarms.sync(self.scheduler)

    def overdue(self) -> int:
        return len(due(self.app))

    # -- jobs -----------------------------------------------------------------------------------
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
