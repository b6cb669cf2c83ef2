"""The rollback engine (IBKR seed): HALT -> DISCONNECT -> ASSESS -> FLATTEN -> VERIFY, against
every venue at once. `/kill` is steps 1-2, `/flatten` steps 3-5, `/rollback` all five.

Every step writes STEP_STARTED and STEP_ENDED events; a rerun of an incident skips the steps
that ended and redoes, idempotently, the one that was cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from rollbot.brokers.base import CancelAllResult, Side, Venue, VenueError
from rollbot.clock import parse_iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.desk.liveness import is_me
from rollbot.commands.desk.mrkdwn import escape
from rollbot.commands.desk.venue_timeouts import bounded, contained
from rollbot.commands.killswitch.kill_scope import AccountCancel, cancel_account, guard_probes
from rollbot.commands.killswitch.trading_state import TradingState, parse_scope
from rollbot.commands.paging import escalation
from rollbot.commands.rollback.flatten import VenueCloser, VenueFlatten, choose_strategy
from rollbot.commands.rollback.held_incident import HOLD_WAIT_MS, store_held_incident
from rollbot.commands.rollback.hooks import run_strategy_stop
from rollbot.commands.rollback.positions import VenueBook, coverage_line, read_book
from rollbot.errors import DatabaseBusy, HoldNotStored, Refused, StorageError
from rollbot.storage.db import dumps, loads
from rollbot.storage.events import Actor
from rollbot.storage.holds import Hold
from rollbot.storage.incidents import Incident
from rollbot.storage.json_text import text_field
from rollbot.storage.nav import NavSamples

log = logging.getLogger(__name__)

D0 = Decimal(0)
# a kill waits this long for another process's write transaction, then cancels without it
HOLD_FIRST_WAIT_MS = HOLD_WAIT_MS


class StepStatus(StrEnum):
    SUCCESS = "SUCCESS"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


class Step(BaseModel):
    number: int
    name: str
    target_seconds: float  # seed target for this step alone
    cumulative_target_seconds: float


STEPS = {
    1: Step(number=1, name="Immediate Halt", target_seconds=10, cumulative_target_seconds=10),
    2: Step(number=2, name="Disconnect", target_seconds=10, cumulative_target_seconds=20),
    3: Step(number=3, name="Assess Positions", target_seconds=10, cumulative_target_seconds=30),
    4: Step(number=4, name="Flatten Positions", target_seconds=90, cumulative_target_seconds=120),
    5: Step(number=5, name="Verify Recovery", target_seconds=60, cumulative_target_seconds=180),
}
KILL_STEPS = (1, 2)
FLATTEN_STEPS = (3, 4, 5)
ROLLBACK_STEPS = (1, 2, 3, 4, 5)


class StepReport(BaseModel):
    step: int
    name: str
    start_time: datetime
    end_time: datetime
    duration_seconds: float
    elapsed_seconds: float  # since the incident's first step started
    target_seconds: float
    cumulative_target_seconds: float
    status: StepStatus
    actions: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)  # what went wrong, even when it recovered
    venues: dict[str, str] = Field(default_factory=dict)  # venue -> its own outcome
    positions: dict[str, dict[str, dict[str, str]]] | None = None
    total_pnl: str | None = None
    flatten_strategy: dict[str, str] | None = None
    orders: list[dict[str, str]] | None = None
    verification: dict[str, Any] | None = None

    @property
    def on_target(self) -> bool:
        return self.elapsed_seconds <= self.cumulative_target_seconds


class Outcome(BaseModel):
    incident: Incident
    steps: list[StepReport]
    final_status: StepStatus
    residual: dict[str, dict[str, str]] = Field(default_factory=dict)  # venue -> symbol -> qty
    open_orders: dict[str, int] = Field(default_factory=dict)
    unreachable: list[str] = Field(default_factory=list)
    new_incident: bool = True


StepCallback = Callable[[StepReport], Awaitable[None] | None]
StartCallback = Callable[[Step], Awaitable[None] | None]


async def _maybe(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result


def _status(ok: int, total: int) -> StepStatus:
    if total == 0:
        return StepStatus.SKIPPED
    if ok == total:
        return StepStatus.SUCCESS
    return StepStatus.PARTIAL if ok else StepStatus.FAILED


def _qty(d: Decimal) -> str:
    return format(d.normalize(), "f")


def ended_steps(app: Rollbot, incident_id: str) -> list[StepReport]:
    """The incident's steps as their STEP_ENDED events recorded them, in order."""
    return [
        StepReport.model_validate(e.data)
        for e in app.events.list(incident_id=incident_id, kinds=["STEP_ENDED"])
    ]


async def cancel_in_scope(venue: Venue, scope: str) -> CancelAllResult | AccountCancel:
    """What a kill of `scope` cancels at this venue: one account's orders, or all of them."""
    if scope.startswith("account:"):
        return await cancel_account(venue, scope.partition("/")[2])
    return await venue.cancel_all()


def describe_cancel(cancel: CancelAllResult | AccountCancel | Exception) -> tuple[bool, str]:
    """(complete, what a person reads) for one venue's cancel."""
    if isinstance(cancel, Exception):
        return False, f"FAILED: {cancel}"
    if isinstance(cancel, AccountCancel):
        return cancel.complete, cancel.describe()
    if cancel.complete:
        return True, f"{len(cancel.cancelled)} of {cancel.requested} orders cancelled, none left"
    left = ", ".join(
        f"{o.symbol} {o.side.value} {_qty(o.remaining)} ({o.order_id})" for o in cancel.remaining
    )
    return False, f"{len(cancel.cancelled)} cancelled; still open: {left}"


class Engine:
    def __init__(
        self,
        app: Rollbot,
        actor: Actor,
        *,
        on_step: StepCallback | None = None,
        on_start: StartCallback | None = None,
        venue_timeout_s: float = 15,
        page: bool = True,
    ) -> None:
        self.app = app
        # every run pages its incident's chain as it starts, whoever opened it; a venue drill
        # (a rehearsal on a real venue) pages nobody
        self.page = page
        self.actor = actor
        self.on_step = on_step
        self.on_start = on_start
        self.venue_timeout_s = venue_timeout_s
        self.on_note: Callable[[str], None] | None = None  # what a person should know now
        self._stop_storing = threading.Event()
        self._read_only: set[str] = set()
        self._continuing = False  # this run continues an incident opened by another action
        self.navs = NavSamples(app.db)

    # -- entry points -------------------------------------------------------------------------
    def open_held_incident(
        self,
        *,
        kind: str,
        reason: str,
        scope_text: str | None = None,
        trigger: str | None = None,
        trigger_value: float | None = None,
        trigger_threshold: float | None = None,
        dedupe_key: str | None = None,
        hold_source: str = "person",
        also: Callable[[], None] | None = None,
        hold_state: TradingState = TradingState.HALTED,
    ) -> tuple[Incident, bool]:
        """Store the incident and its hold (HALTED, or REDUCING) in one transaction, before
        any venue call (`also` writes in the same transaction: the terminal's BREAK_GLASS)."""
        return store_held_incident(
            self.app,
            self.actor,
            kind=kind,
            reason=reason,
            scope_text=scope_text,
            trigger=trigger,
            trigger_value=trigger_value,
            trigger_threshold=trigger_threshold,
            dedupe_key=dedupe_key,
            hold_source=hold_source,
            also=also,
            hold_state=hold_state,
        )

    async def open_held(self, **kw: Any) -> tuple[Incident, bool]:
        """open_held_incident for a kill or a rollback, which never waits on the database.

        When another process holds SQLite's write lock past HOLD_FIRST_WAIT_MS, the cancels of
        the scope go out at once, on every venue, while a thread keeps retrying the hold write
        until it is stored; then what was cancelled before the hold is recorded in the incident
        (step 1 reports it). A write that fails for good (a full disk, a corrupt file) after
        the cancels went out is HoldNotStored (exit 1: the cancels changed something)."""
        try:
            with self.app.db.patience(HOLD_FIRST_WAIT_MS):
                return self.open_held_incident(**kw)
        except DatabaseBusy as busy:
            locked = str(busy)
        scope = parse_scope(kw.get("scope_text"), self.app.venue_names)
        started = time.monotonic()
        store = self._store_in_thread(kw)
        done = await self.cancel_now(scope)
        if not store.done() and self.on_note is not None:
            self.on_note(
                f"{locked}: cancels sent before the hold — "
                + ("; ".join(f"{n}: {t}" for n, t in done.items()) or "no venue in scope")
                + ". The HALTED hold is retried until stored."
            )
        try:
            incident, new = await asyncio.shield(store)
        except asyncio.CancelledError:  # the process is stopping: the thread must not outlive it
            self._stop_storing.set()
            raise
        except StorageError as exc:
            raise HoldNotStored(
                f"the HALTED hold on {scope} was NOT stored: {exc}. Cancels sent: "
                + ("; ".join(f"{n}: {t}" for n, t in done.items()) or "none (no venue in scope)")
            ) from None
        self.record_early_cancels(incident.id, scope, done, time.monotonic() - started, locked)
        return incident, new

    async def cancel_now(self, scope: str) -> dict[str, str]:
        """The scope's cancels on every venue at once, touching no database: what a kill does
        while it cannot store its hold. Venue -> what happened there."""
        venues = {n: bounded(v, self.venue_timeout_s) for n, v in self._venues_in(scope).items()}
        cancels = await self._per_venue(venues, lambda v: cancel_in_scope(v, scope))
        return {name: describe_cancel(c)[1] for name, c in cancels.items()}

    def record_early_cancels(
        self, incident_id: str, scope: str, done: dict[str, str], waited_s: float, why: str
    ) -> None:
        """What was cancelled before the hold was stored; step 1 reports it."""
        self.app.events.append(
            "CANCELLED_BEFORE_HOLD",
            self.actor,
            reason=why,
            scope=scope,
            incident_id=incident_id,
            data={"venues": done, "waited_s": round(waited_s, 3)},
        )

    def _store_in_thread(self, kw: dict[str, Any]) -> asyncio.Future[tuple[Incident, bool]]:
        """Its own thread, not the loop's shared executor: nothing else queued there (a slow
        call, a leaked one) may delay the hold."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Incident, bool]] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        def work() -> None:
            result, error = None, None
            try:
                result = self._store_until_stored(kw)
            except BaseException as exc:  # handed to the awaiting kill, which reports it
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed: the process is ending
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=work, name="rollbot-hold-write", daemon=True).start()
        return future

    def _store_until_stored(self, kw: dict[str, Any]) -> tuple[Incident, bool]:
        """In a thread: the hold write, again and again while another process holds the lock.
        Each try holds the shared connection 100 ms at most, so the event loop's own reads
        (and the cancels beside them) are never queued behind a long busy wait. Any other
        storage error is final."""
        while True:
            try:
                with self.app.db.patience(HOLD_FIRST_WAIT_MS):
                    return self.open_held_incident(**kw)
            except DatabaseBusy:
                if self._stop_storing.wait(0.01):
                    raise

    async def kill(
        self,
        reason: str,
        scope_text: str | None = None,
        dedupe_key: str | None = None,
        hold_source: str = "person",
        also: Callable[[], None] | None = None,
        hold_state: TradingState = TradingState.HALTED,
    ) -> Outcome:
        incident, new = await self.open_held(
            kind="kill",
            reason=reason,
            scope_text=scope_text,
            dedupe_key=dedupe_key,
            hold_source=hold_source,
            also=also,
            hold_state=hold_state,
        )
        return await self.run(incident, KILL_STEPS, new=new)

    async def rollback(
        self,
        reason: str,
        *,
        trigger: str | None = None,
        trigger_value: float | None = None,
        trigger_threshold: float | None = None,
        dedupe_key: str | None = None,
        hold_source: str = "person",
    ) -> Outcome:
        incident, new = await self.open_held(
            kind="rollback",
            reason=reason,
            trigger=trigger or "Manual rollback",
            trigger_value=trigger_value,
            trigger_threshold=trigger_threshold,
            dedupe_key=dedupe_key,
            hold_source=hold_source,
        )
        return await self.run(incident, ROLLBACK_STEPS, new=new)

    async def flatten(
        self,
        reason: str,
        venue: str | None = None,
        dedupe_key: str | None = None,
        symbols: set[str] | None = None,
    ) -> Outcome:
        """Close positions on one venue or all: holds go HALTED first (nothing new may open)."""
        incident, new = self.open_held_incident(
            kind="flatten", reason=reason, scope_text=venue, dedupe_key=dedupe_key
        )
        if new and symbols:  # stored, so a resumed run closes the same subset
            self.app.events.append(
                "FLATTEN_SYMBOLS",
                self.actor,
                incident_id=incident.id,
                data={"symbols": sorted(symbols)},
            )
        return await self.run(incident, FLATTEN_STEPS, new=new)

    async def continue_incident(
        self,
        incident_id: str,
        *,
        kind: str,
        reason: str,
        dedupe_key: str,
        venue: str | None = None,
        symbols: set[str] | None = None,
    ) -> Outcome:
        """An approved flatten or rollback of an open incident runs as that incident's next
        run: its steps, thread, report and escalation, never a second incident (nor a second
        page of tier 1). The incident's own holds are left as they are: the kill's hold already
        covers what this run closes. Once per key: a rerun finishes the same continuation."""
        if kind not in ("flatten", "rollback"):
            raise ValueError(f"only a flatten or a rollback continues an incident, not {kind}")
        scope = parse_scope(venue, self.app.venue_names) if kind == "flatten" else "global"
        steps = FLATTEN_STEPS if kind == "flatten" else ROLLBACK_STEPS
        with self.app.db.write():
            incident = self.app.incidents.get(incident_id)
            seen = self.app.db.one(
                "SELECT id FROM events WHERE incident_id = ? AND kind = 'INCIDENT_CONTINUED'"
                f" AND {text_field(self.app.db, 'data', 'key')} = ?",
                (incident_id, dedupe_key),
            )
            if seen is None:
                self.app.events.append(
                    "INCIDENT_CONTINUED",
                    self.actor,
                    reason=reason,
                    scope=scope,
                    incident_id=incident_id,
                    data={
                        "kind": kind,
                        "scope": scope,
                        "steps": list(steps),
                        "key": dedupe_key,
                        "symbols": sorted(symbols) if symbols else None,
                    },
                )
                self.app.outbox.put(
                    "thread",
                    incident_id=incident_id,
                    text=f"▶ {kind.capitalize()} of {scope} continues {incident_id}:"
                    f" {escape(reason)}",
                )
        return await self.run(incident, steps, new=False)

    def continuation(self, incident_id: str) -> tuple[int, dict[str, Any]]:
        """(event id, data) of the incident's latest continuation; (0, {}) when it has none."""
        row = self.app.db.one(
            "SELECT id, data FROM events WHERE incident_id = ? AND kind = 'INCIDENT_CONTINUED'"
            " ORDER BY id DESC LIMIT 1",
            (incident_id,),
        )
        return (int(row["id"]), loads(row["data"]) or {}) if row else (0, {})

    def _symbols(self, incident_id: str) -> set[str] | None:
        mark, data = self.continuation(incident_id)
        if mark:
            return set(data["symbols"]) if data.get("symbols") else None
        found = self.app.events.list(incident_id=incident_id, kinds=["FLATTEN_SYMBOLS"], limit=1)
        return set(found[0].data["symbols"]) if found else None

    # -- the run ------------------------------------------------------------------------------
    def steps_of(self, incident: Incident) -> tuple[int, ...]:
        mark, data = self.continuation(incident.id)
        if mark:
            return tuple(data["steps"])
        return {"kill": KILL_STEPS, "flatten": FLATTEN_STEPS}.get(incident.kind, ROLLBACK_STEPS)

    def finished_steps(self, incident_id: str) -> dict[int, StepReport]:
        """The steps of the incident's current run: after its latest continuation, if any."""
        mark, _ = self.continuation(incident_id)
        rows = self.app.db.query(
            "SELECT data FROM events WHERE incident_id = ? AND kind = 'STEP_ENDED' AND id > ?"
            " ORDER BY id",
            (incident_id, mark),
        )
        reports = [StepReport.model_validate(loads(r["data"])) for r in rows]
        return {s.step: s for s in reports}

    def _as_run(self, incident: Incident) -> tuple[Incident, int]:
        """The incident as its current run sees it: a continuation's kind and scope."""
        mark, data = self.continuation(incident.id)
        if not mark:
            return incident, 0
        return incident.model_copy(update={"kind": data["kind"], "scope": data["scope"]}), mark

    def _venues_in(self, scope: str) -> dict[str, Venue]:
        """The venues a scope reaches. A venue that cannot even be built is in it as a venue
        that fails every call by name: the others still get their cancels."""
        venues = self.app.venues(contain=True)
        if scope.startswith("venue:"):
            return {scope[6:]: venues[scope[6:]]}
        if scope.startswith("account:"):
            name = scope[8:].partition("/")[0]
            return {name: venues[name]}
        if scope.startswith("strategy:"):
            return {}  # a strategy's orders are not identifiable at the venue: hold only
        return venues

    async def run(self, incident: Incident, steps: tuple[int, ...], *, new: bool = True) -> Outcome:
        """Run (or finish) the incident. Once per incident at a time: a second run in this
        process waits for the first and returns its outcome; another live process running it
        is refused (RUNNING_ELSEWHERE) — it finishes the incident there."""
        key = (id(asyncio.get_running_loop()), str(self.app.db.path), incident.id)
        while (ongoing := _RUNS.get(key)) is not None:
            await ongoing.wait()
            incident = self.app.incidents.get(incident.id)
        _RUNS[key] = asyncio.Event()
        try:
            return await self._run(incident, steps, new=new)
        except BaseException as exc:  # not a crash: say the run stopped, so others may finish it
            with contextlib.suppress(Exception):
                if not isinstance(exc, Refused):
                    self.app.events.append(
                        "RUN_INTERRUPTED",
                        self.actor,
                        incident_id=incident.id,
                        reason=f"{type(exc).__name__}: {exc}"[:300],
                    )
            raise
        finally:
            _RUNS.pop(key).set()

    async def _run(self, incident: Incident, steps: tuple[int, ...], *, new: bool) -> Outcome:
        incident, mark = self._as_run(incident)
        self._continuing = bool(mark)
        done = self.finished_steps(incident.id)
        if done and all(s in done for s in steps):  # finished before: nothing is sent again
            if incident.phase == "RUNNING":  # the crash came after the last step ended
                outcome = self._outcome(incident, [done[s] for s in steps], new=new, books=None)
                with self.app.db.write():
                    self.app.incidents.update(incident.id, final_status=outcome.final_status.value)
                    self.app.incidents.set_phase(
                        incident.id, "DONE", self.actor, final_status=outcome.final_status.value
                    )
                incident = self.app.incidents.get(incident.id)
            return self._outcome(incident, [done[s] for s in steps], new=new, books=None)
        with self.app.db.write():  # the claim: checked and taken in one transaction
            # the incident's row locked first: a database with row locks (not one write lock)
            # must not let two hosts both read "nobody runs it" and both run it
            self.app.db.execute("UPDATE incidents SET phase = phase WHERE id = ?", (incident.id,))
            other = running_elsewhere(self.app, incident.id)
            if other:
                raise Refused(
                    f"{incident.id} is being run by {other}; it finishes it there",
                    code="RUNNING_ELSEWHERE",
                )
            # the claim's heartbeat, so another host can tell when this process stops
            self.app.heartbeats.beat(self.app.me)
            self.app.incidents.set_phase(
                incident.id, "RUNNING", self.actor, steps=list(steps), runner=self.app.me
            )
        if 1 not in steps or 1 in done:  # else step 1 pages once its cancels are out
            self._escalate(incident)
        # the runner's heartbeat while the run lasts (a terminal's `rollbot rollback` has no
        # clock beating for it): other hosts finish the run once it stops
        beating = self.app.heartbeats.beating(self.app.me)
        try:
            return await self._steps(incident, steps, done, new=new, mark=mark)
        finally:
            beating.set()

    async def _steps(
        self,
        incident: Incident,
        steps: tuple[int, ...],
        done: dict[int, StepReport],
        *,
        new: bool,
        mark: int,
    ) -> Outcome:
        first = self.app.db.one(
            "SELECT at FROM events WHERE incident_id = ? AND kind = 'STEP_STARTED' AND id > ?"
            " ORDER BY id LIMIT 1",
            (incident.id, mark),
        )
        t0 = parse_iso(first["at"]) if first else self.app.clock.now()
        # a venue that stops answering is unreachable after venue_timeout_s, in every step
        venues = {
            n: bounded(v, self.venue_timeout_s) for n, v in self._venues_in(incident.scope).items()
        }
        reports: list[StepReport] = []
        books: list[VenueBook] | None = None
        flattens: list[VenueFlatten] = []
        for number in steps:
            if number in done:
                reports.append(done[number])
                continue
            taken = taken_over(self.app, incident.id)
            if taken:  # this process stalled past its heartbeat and another host took the run
                raise Refused(
                    f"{incident.id} was taken over by {taken} while this process could not renew"
                    " its heartbeat; it finishes the run there",
                    code="TAKEN_OVER",
                )
            step = STEPS[number]
            await _maybe(self.on_start(step) if self.on_start else None)
            started = self.app.clock.now()
            self.app.events.append(
                "STEP_STARTED",
                self.actor,
                incident_id=incident.id,
                data={"step": number, "name": step.name},
            )
            fields: dict[str, Any]
            if number == 1:
                fields = await self._halt(incident, venues)
            elif number == 2:
                fields = await self._disconnect(incident, venues)
            elif number == 3:
                fields, books = await self._assess(incident, venues)
            elif number == 4:
                fields, flattens = await self._flatten(incident, venues, books)
            else:
                fields, books = await self._verify(incident, venues, flattens)
            ended = self.app.clock.now()
            report = StepReport(
                step=number,
                name=step.name,
                start_time=started,
                end_time=ended,
                duration_seconds=round((ended - started).total_seconds(), 3),
                elapsed_seconds=round((ended - t0).total_seconds(), 3),
                target_seconds=step.target_seconds,
                cumulative_target_seconds=step.cumulative_target_seconds,
                **fields,
            )
            with self.app.db.write():
                self.app.events.append(
                    "STEP_ENDED",
                    self.actor,
                    incident_id=incident.id,
                    data=report.model_dump(mode="json"),
                )
                self.app.outbox.put(
                    "thread",
                    incident_id=incident.id,
                    text=f"Step {number} {step.name}: {report.status.value}",
                    view="step",
                    data={**report.model_dump(mode="json"), "by": self.actor.label},
                )
                self.app.outbox.put("headline", incident_id=incident.id)
            reports.append(report)
            self._watch_loss(incident, report)
            await _maybe(self.on_step(report) if self.on_step else None)
        outcome = self._outcome(self.app.incidents.get(incident.id), reports, new=new, books=books)
        with self.app.db.write():
            self.app.incidents.update(incident.id, final_status=outcome.final_status.value)
            self.app.incidents.set_phase(
                incident.id, "DONE", self.actor, final_status=outcome.final_status.value
            )
            self.app.outbox.put(
                "thread",
                incident_id=incident.id,
                text=f"{incident.id} {incident.kind}: {outcome.final_status.value}",
                view="outcome",
                data=self._outcome_view(outcome, incident),
            )
            self.app.outbox.put("headline", incident_id=incident.id)
        outcome.incident = self.app.incidents.get(incident.id)
        return outcome

    def _escalate(self, incident: Incident) -> None:
        """Page the chain as the run starts (a run that halts: once step 1's cancels are sent,
        so no page write ever delays them), by whatever path the incident opened (a person, the
        terminal, the clock, a restart), with the loss its steps reported so far. Idempotent. A
        failure here stops no step: the clock's sweep retries it."""
        if not self.page or not incident.is_open:
            return
        try:
            escalation.escalate_incident(self.app, incident.id, self.actor)
        except Exception:
            log.exception("starting the escalation of %s failed", incident.id)

    def _watch_loss(self, incident: Incident, report: StepReport) -> None:
        """A loss a step reports above the critical one pages every tier at once."""
        if not self.page or not incident.is_open:
            return
        try:
            escalation.loss_watcher(self.app, incident.id, self.actor)(report)
        except Exception:
            log.exception("checking the loss of %s failed", incident.id)

    @staticmethod
    def _outcome_view(outcome: Outcome, run: Incident) -> dict[str, Any]:
        """The outcome as the thread shows it: of this run (a continuation's flatten or
        rollback, not the kill that opened the incident)."""
        data = outcome.model_dump(mode="json", exclude={"steps"})
        data["incident"]["kind"] = run.kind
        return data

    def _outcome(
        self,
        incident: Incident,
        reports: list[StepReport],
        *,
        new: bool,
        books: list[VenueBook] | None,
    ) -> Outcome:
        statuses = [r.status for r in reports if r.status is not StepStatus.SKIPPED]
        if not statuses or all(s is StepStatus.SUCCESS for s in statuses):
            final = StepStatus.SUCCESS
        elif reports[-1].status is StepStatus.FAILED and all(
            s is StepStatus.FAILED for s in statuses
        ):
            final = StepStatus.FAILED
        else:
            final = StepStatus.PARTIAL
        residual: dict[str, dict[str, str]] = {}
        open_orders: dict[str, int] = {}
        unreachable: list[str] = []
        last = reports[-1] if reports else None
        if last and last.verification:
            # verified where the venue answered, last known where it did not (see unreachable)
            residual = {
                **last.verification.get("residual", {}),
                **last.verification.get("last_known_residual", {}),
            }
            open_orders = last.verification.get("open_orders", {})
            unreachable = last.verification.get("unreachable", [])
        return Outcome(
            incident=incident,
            steps=reports,
            final_status=final,
            residual=residual,
            open_orders=open_orders,
            unreachable=unreachable,
            new_incident=new,
        )

    async def _per_venue(
        self, venues: dict[str, Venue], fn: Callable[[Venue], Awaitable[Any]]
    ) -> dict[str, Any]:
        """Run fn on every venue at once; a slow or failing venue never holds up the others."""

        async def guarded(v: Venue) -> Any:
            try:
                async with asyncio.timeout(self.venue_timeout_s):
                    return await fn(v)
            except TimeoutError:
                return VenueError(v.name, f"no answer within {self.venue_timeout_s:g} s")
            except Exception as exc:  # whatever a venue raises is that venue's failure alone
                return contained(v.name, exc)

        results = await asyncio.gather(*(guarded(v) for v in venues.values()))
        return dict(zip(venues, results, strict=True))

    # -- step 1 -------------------------------------------------------------------------------
    def held_state(self, incident: Incident) -> TradingState:
        """The state the incident's kill asked for: REDUCING for `/kill reducing`, as its first
        hold was stored; HALTED for every other kill, flatten and rollback."""
        if incident.kind != "kill":
            return TradingState.HALTED
        first = self.app.db.one(
            "SELECT data FROM events WHERE incident_id = ? AND kind = 'HOLD_SET'"
            " ORDER BY id LIMIT 1",
            (incident.id,),
        )
        state = (loads(first["data"]) or {}).get("state") if first else None
        return TradingState.REDUCING if state == "REDUCING" else TradingState.HALTED

    async def _halt(self, incident: Incident, venues: dict[str, Venue]) -> dict[str, Any]:
        state = self.held_state(incident)
        actions = [f"Kill switch held {state.value} on {incident.scope}"]
        if state is TradingState.REDUCING:
            actions[0] += " (only orders that shrink a position pass; cancels pass)"
        self.app.killswitch.trigger(
            incident.scope, incident.reason, self.actor, state=state, incident_id=incident.id
        )  # idempotent, never loosens; restores after a crash
        hook_task = asyncio.create_task(
            run_strategy_stop(self.app.settings.hooks.strategy_stop, incident.id, incident.reason)
        )

        # the cancels go first and never wait on the NAV read beside them: a venue whose
        # account summary fails must still have its orders cancelled
        both = asyncio.gather(
            self._per_venue(venues, lambda v: cancel_in_scope(v, incident.scope)),
            self._per_venue(venues, lambda v: v.account()),
        )
        await asyncio.sleep(0)  # the cancels are on their way before anyone is paged
        self._escalate(incident)
        cancels, accounts = await both
        hook = await hook_task
        if hook:
            actions.insert(1, hook)
        early = self.app.events.list(incident_id=incident.id, kinds=["CANCELLED_BEFORE_HOLD"])
        for before in early:
            waited = before.data["waited_s"]
            actions.append(
                f"Before the hold was stored (the database was locked for {waited:.2f} s),"
                " cancels went out at once:"
            )
            actions += [f"    {name}: {text}" for name, text in before.data["venues"].items()]
        ok, per = 0, {}
        navs = {}
        for name, cancel in cancels.items():
            nav = accounts[name]
            done, per[name] = describe_cancel(cancel)
            ok += done
            actions.append(f"{name}: {per[name]}")
            if isinstance(nav, Exception):
                actions.append(f"{name}: NAV not read: {nav}")
            else:
                navs[name] = str(nav.nav)
                self.navs.add(name, nav.at, nav.nav, nav.currency)
        if navs and not incident.start_nav:
            self.app.incidents.update(incident.id, start_nav=dumps(navs))
        status = _status(ok, len(venues)) if venues else StepStatus.SUCCESS
        if not venues:
            actions.append("No venue in this scope to cancel at (hold only)")
        return {"status": status, "actions": actions, "venues": per}

    # -- step 2 -------------------------------------------------------------------------------
    async def _disconnect(self, incident: Incident, venues: dict[str, Venue]) -> dict[str, Any]:
        actions = []
        ok = True
        if incident.scope == "global":
            try:
                values = self.app.gates.disable(self.actor, incident.reason, incident.id)
                values = await self.app.gates.settle(values)  # the gates agent's, elsewhere
            except Exception as exc:  # reported, and the venues below are still switched off
                ok = False
                actions.append(f"Live gates could NOT be disabled: {type(exc).__name__}: {exc}")
            else:
                ok = values.shadow_active and not values.pending
                if ok:
                    actions.append(
                        "Live gates disabled: enable_live_trading=false, live_mode_armed=false,"
                        " live_dry_run_mode=true; shadow mode enabled"
                    )
                else:  # read back, not assumed: the agent's report or the files say otherwise
                    actions.append(
                        "Live gates NOT confirmed disabled: "
                        + (values.pending or values.problem or "shadow mode is not active")
                    )
        for name, venue in venues.items():
            try:
                venue.set_reconnect(False)
            except VenueError as exc:  # contained: the other venues and the gates still count
                actions.append(f"{name}: automatic reconnect could NOT be switched off: {exc}")
                continue
            actions.append(f"{name}: automatic reconnect switched off (reads stay possible)")
        wanted = self.held_state(incident)
        for probe in guard_probes(incident.scope, self.app.venue_names):
            decision = self.app.killswitch.check_order(
                probe.venue, "ANY", Side.BUY, 1, account=probe.account, strategy=probe.strategy
            )
            if decision.allowed or decision.state.strictness < wanted.strictness:
                # refused for another reason (gates off) is no proof that the hold governs
                ok = False
                verdict = "ALLOWS" if decision.allowed else f"refuses ({decision.code}) but"
                actions.append(
                    f"Guard {verdict} new orders{probe.label} not {wanted.value}: check the holds"
                )
            else:
                actions.append(f"Guard refuses new orders{probe.label} ({decision.code})")
        return {"status": StepStatus.SUCCESS if ok else StepStatus.FAILED, "actions": actions}

    # -- step 3 -------------------------------------------------------------------------------
    async def _read(self, venue: Venue) -> VenueBook:
        book = await read_book(venue, self.venue_timeout_s)
        if book.error:  # IBKR seed step 3: reconnect read-only to assess
            try:
                await venue.connect(read_only=True)
                self._read_only.add(venue.name)
                book = await read_book(venue, self.venue_timeout_s)
            except VenueError as exc:
                book = VenueBook(
                    venue=venue.name, error=f"{book.error}; read-only reconnect: {exc}"
                )
        return book

    async def _assess(
        self, incident: Incident, venues: dict[str, Venue]
    ) -> tuple[dict[str, Any], list[VenueBook]]:
        books = list(await asyncio.gather(*(self._read(v) for v in venues.values())))
        cfg = self.app.settings.flatten
        positions: dict[str, dict[str, dict[str, str]]] = {}
        strategies: dict[str, str] = {}
        actions, per = [], {}
        total = D0
        for b in books:
            if b.error:
                per[b.venue] = f"FAILED: {b.error}"
                actions.append(f"{b.venue}: positions could not be read: {b.error}")
                continue
            positions[b.venue] = {
                p.symbol: {
                    "quantity": _qty(p.quantity),
                    "unrealized_pnl": str(p.unrealized_pnl),
                    "market_value": str(p.market_value),
                }
                for p in b.positions
            }
            total += b.unrealized_pnl
            strategies[b.venue] = choose_strategy(b.exposure, cfg)
            per[b.venue] = (
                f"{len(b.positions)} positions, exposure {b.exposure:,.2f},"
                f" unrealized PnL {b.unrealized_pnl:,.2f}, {len(b.orders)} open orders"
                f" -> {strategies[b.venue]}"
            )
            actions.append(f"{b.venue}: {per[b.venue]}")
        ok = sum(1 for b in books if not b.error)
        fields = {
            "status": _status(ok, len(books)) if books else StepStatus.SKIPPED,
            "actions": actions or ["No venue in scope"],
            "venues": per,
            "positions": positions,
            "total_pnl": str(total),
            "flatten_strategy": strategies,
        }
        return fields, books

    # -- step 4 -------------------------------------------------------------------------------
    async def _cancel_working(self, venue: Venue, symbols: set[str] | None) -> str:
        """Working orders could re-open what the flatten closes (a resting stop): cancel them
        first, only those on the chosen symbols when a subset is flattened. Our own closes
        (client ids "rb…") are left to the closer."""
        try:
            working = [
                o
                for o in await venue.open_orders()
                if not (o.client_order_id or "").startswith("rb")
                and (not symbols or o.symbol in symbols)
            ]
            if not working:
                return ""
            if symbols:
                for order in working:
                    await venue.cancel_order(order.order_id)
                left = [
                    o
                    for o in await venue.open_orders()
                    if o.order_id in {w.order_id for w in working}
                ]
            else:
                left = (await venue.cancel_all()).remaining
        except VenueError as exc:
            return f"cancelling working orders failed: {exc}"
        done = len(working) - len(left)
        return f"{done} working order(s) cancelled first" + (
            f", {len(left)} still open" if left else ""
        )

    async def _flatten(
        self, incident: Incident, venues: dict[str, Venue], books: list[VenueBook] | None
    ) -> tuple[dict[str, Any], list[VenueFlatten]]:
        if books is None:  # resumed after a crash past step 3: assess again
            _, books = await self._assess(incident, venues)
        by_name = {b.venue: b for b in books}
        symbols = self._symbols(incident.id)
        cfg = self.app.settings.flatten
        # only this flatten's own holds are loosened: another kill's hold, global or not, stays;
        # a flatten continuing a kill's incident loosens nothing (those holds are the kill's)
        own = not self._continuing
        if own:
            self.app.killswitch.set_incident_state(
                incident.id,
                TradingState.REDUCING,
                self.actor,
                "flattening: only reducing orders pass",
            )
        halted = kill_since(self.app, incident, set(venues))
        try:
            for name in self._read_only & set(venues):  # assessing left it read-only
                with contextlib.suppress(VenueError):  # step 4 reports the venue if still down
                    await venues[name].connect(read_only=False)

            cancelled: dict[str, str] = {}

            async def close(v: Venue) -> VenueFlatten:
                book = by_name.get(v.name)
                if book is not None and book.error:
                    book = None
                cancelled[v.name] = await self._cancel_working(v, symbols)
                strategy = choose_strategy(book.exposure if book else D0, cfg)
                assessed = book.positions if book else None  # known until it reads for itself
                return await VenueCloser(
                    self.app, v, incident.id, strategy, self.actor, symbols, assessed, halted
                ).run()

            results = await asyncio.gather(*(close(v) for v in venues.values()))
        finally:
            if own:
                self.app.killswitch.set_incident_state(
                    incident.id, TradingState.HALTED, self.actor, "flatten finished: halted again"
                )
        stopped = sorted({r.stopped_by for r in results if r.stopped_by})
        if stopped:
            with self.app.db.write():  # the event first, then what people see
                self.app.events.append(
                    "FLATTEN_STOPPED",
                    self.actor,
                    incident_id=incident.id,
                    reason="; ".join(stopped),
                    data={"venues": [r.venue for r in results if r.stopped_by]},
                )
                self.app.outbox.put(
                    "thread",
                    incident_id=incident.id,
                    text=f"⛔ Flatten stopped before its next order: {'; '.join(stopped)}."
                    " Closes still working were cancelled; no order is sent after a kill.",
                )
        actions, per, orders, errors = [], {}, [], []
        for r in results:
            closed = [o for o in r.outcomes if o.remaining == 0]
            left = ", ".join(f"{p.symbol} {_qty(p.quantity)}" for p in r.residual) or "none"
            if r.stopped_by:
                per[r.venue] = (
                    f"STOPPED by {r.stopped_by}; no order sent after it; remaining: {left}"
                    " (closes still working were cancelled)"
                )
            elif r.flat:
                per[r.venue] = f"flat: {len(closed)} positions closed ({r.strategy})"
            elif r.refused and not r.timed_out:
                refused = "; ".join(f"{sym}: {why}" for sym, why in r.refused.items())
                per[r.venue] = (
                    f"NOT flat: the venue refused the close for good ({refused}); not re-sent,"
                    f" escalated; remaining: {left}"
                )
            elif r.verified:
                per[r.venue] = (
                    f"NOT flat: gave up after {cfg.timeout_s:g} s; remaining: {left}"
                    " (closes still working were cancelled)"
                )
            elif r.known:
                per[r.venue] = f"NOT verified: venue unreachable; last known remaining: {left}"
            else:
                per[r.venue] = "NOT verified: venue unreachable; its positions were never read"
            if r.errors:
                per[r.venue] += f"; errors: {' | '.join(r.errors[:5])}"
            errors += [f"{r.venue}: {e}" for e in r.errors]
            if cancelled.get(r.venue):
                per[r.venue] = f"{per[r.venue]}; {cancelled[r.venue]}"
            actions.append(f"{r.venue}: {per[r.venue]}")
            for o in r.outcomes:
                for order in o.orders:
                    orders.append({"venue": r.venue, "symbol": o.symbol, **order})
        ok = sum(1 for r in results if r.flat)
        status = _status(ok, len(results)) if results else StepStatus.SKIPPED
        fields = {
            "status": status,
            "actions": actions,
            "errors": errors,
            "venues": per,
            "orders": orders,
        }
        return fields, results

    # -- step 5 -------------------------------------------------------------------------------
    def _halt_navs(self, incident: Incident) -> dict[str, str]:
        """The NAV per venue read in step 1, when the hold was stored."""
        return dict(loads(self.app.incidents.get(incident.id).start_nav) or {})

    def _session_start_navs(self, incident: Incident) -> dict[str, str]:
        """The day's first NAV sample per venue (IBKR seed: nav - initial_nav); the NAV read at
        HALT where no sample exists."""
        navs = self._halt_navs(incident)
        since = incident.opened_at - timedelta(hours=24)
        for venue in list(navs) or self.app.venue_names:
            first = self.navs.list(venue=venue, since=since)
            if first:
                navs[venue] = str(first[0].nav)
        return navs

    async def _verify(
        self, incident: Incident, venues: dict[str, Venue], flattens: list[VenueFlatten]
    ) -> tuple[dict[str, Any], list[VenueBook]]:
        books = list(await asyncio.gather(*(self._read(v) for v in venues.values())))
        start_navs = self._session_start_navs(incident)
        halt_navs = self._halt_navs(incident)
        flattened = {f.venue: f for f in flattens}
        residual: dict[str, dict[str, str]] = {}
        last_known: dict[str, dict[str, str]] = {}  # unreachable venues: step 4's last knowledge
        open_orders: dict[str, int] = {}
        not_checked: dict[str, list[str]] = {}
        unreachable: list[str] = []
        actions, per = [], {}
        nav_start = nav_end = D0
        # the seed's final PnL (NAV now less the session's first) is drift before the halt
        # plus what the rollback itself cost: each told apart where the halt's NAV was read
        nav_halt: Decimal | None = D0
        currencies: set[str] = set()
        for b in books:
            if b.error:
                unreachable.append(b.venue)
                per[b.venue] = f"UNVERIFIED: {b.error}"
                known = flattened.get(b.venue)
                if known is not None and known.residual:
                    last_known[b.venue] = {p.symbol: _qty(p.quantity) for p in known.residual}
                    per[b.venue] += "; last known remaining: " + ", ".join(
                        f"{sym} {qty}" for sym, qty in last_known[b.venue].items()
                    )
                actions.append(f"{b.venue}: could not read back: {per[b.venue]}")
                continue
            if b.positions:
                residual[b.venue] = {p.symbol: _qty(p.quantity) for p in b.positions}
            if b.orders:
                open_orders[b.venue] = len(b.orders)
            if b.account:
                self.navs.add(b.venue, b.account.at, b.account.nav, b.account.currency)
            if b.account and b.venue in start_navs:
                nav_start += Decimal(start_navs[b.venue])
                nav_end += b.account.nav
                currencies.add(b.account.currency)
                nav_halt = (
                    nav_halt + Decimal(halt_navs[b.venue])
                    if nav_halt is not None and b.venue in halt_navs
                    else None
                )
            per[b.venue] = (
                "flat, no open orders"
                if not b.positions and not b.orders
                else f"{len(b.positions)} positions and {len(b.orders)} orders remain"
            )
            if b.not_checked:  # never "flat" about what was not read
                not_checked[b.venue] = b.not_checked
                per[b.venue] = per[b.venue].replace("flat, no open orders", "nothing seen")
            if coverage_line(b):
                per[b.venue] += f" ({coverage_line(b)})"
            actions.append(f"{b.venue}: {per[b.venue]}")
        change = (nav_end - nav_start) / nav_start if nav_start else D0
        threshold = Decimal(str(self.app.settings.nav_change_threshold))
        breached = change < -threshold
        state = self.app.killswitch.state_of(["global", incident.scope])
        gates = self.app.gates.read()
        # the gates are step 2's work: a flatten alone (steps 3-5) never touches them
        gates_ok = (
            gates.shadow_active
            if incident.scope == "global" and incident.kind != "flatten"
            else True
        )
        actions.append(
            f"NAV change {change:+.2%} vs -{threshold:.0%} threshold"
            + (" — EXCEEDS THRESHOLD" if breached else "")
        )
        actions.append(
            f"Trading state {state.value}; shadow/dry-run "
            + ("active" if gates.shadow_active else "NOT active")
        )
        verification = {
            "all_positions_flat": not residual and not unreachable and not not_checked,
            "no_open_orders": not open_orders and not unreachable and not not_checked,
            "not_checked": not_checked,
            "residual": residual,
            "last_known_residual": last_known,
            "open_orders": open_orders,
            "unreachable": unreachable,
            "start_nav": str(nav_start),
            "final_nav": str(nav_end),
            "final_pnl": str(nav_end - nav_start),
            "halt_nav": str(nav_halt) if nav_halt is not None and nav_start else None,
            "pnl_before_halt": str(nav_halt - nav_start)
            if nav_halt is not None and nav_start
            else None,
            "pnl_during_rollback": str(nav_end - nav_halt)
            if nav_halt is not None and nav_start
            else None,
            "currency": "/".join(sorted(currencies)) or None,
            "nav_change": float(change),
            "nav_loss_exceeds_threshold": breached,
            "trading_state": state.value,
            "shadow_mode_active": gates.shadow_active,
            "live_trading_blocked": not gates.live_allowed,
        }
        checks = [
            verification["all_positions_flat"],
            verification["no_open_orders"],
            state is TradingState.HALTED,
            gates_ok,
        ]
        if all(checks):
            status = StepStatus.SUCCESS
        elif venues and len(unreachable) == len(venues):
            status = StepStatus.FAILED  # nothing could be read back
        else:
            status = StepStatus.PARTIAL
        fields = {"status": status, "actions": actions, "venues": per, "verification": verification}
        return fields, books


def covering_incident(app: Rollbot, action: str, venue: str | None) -> Incident | None:
    """The open incident a flatten or rollback asked for now belongs to: the latest one whose
    scope covers what it closes (a flatten of venue V: a global or venue:V incident; a flatten
    of everything or a rollback: a global one). Its request goes in that thread and, approved,
    continues it."""
    scopes = {"global"} | ({f"venue:{venue}"} if action == "flatten" and venue else set())
    for incident in app.incidents.list(open_only=True, limit=50):
        if incident.scope in scopes:
            return incident
    return None


def kill_since(app: Rollbot, incident: Incident, venues: set[str]) -> Callable[[], str | None]:
    """What stops a flatten before its next order: a HALTED hold over its scope (global, one of
    its venues or an account there, its own scope) set by another kill after the flatten's own
    hold was stored. Holds that were there before (the kill the flatten follows) do not."""
    row = app.db.one("SELECT MIN(id) AS id FROM holds WHERE incident_id = ?", (incident.id,))
    since = int(row["id"]) if row and row["id"] is not None else 0

    def covers(scope: str) -> bool:
        kind, _, name = scope.partition(":")
        return (
            scope in ("global", incident.scope)
            or (kind == "venue" and name in venues)
            or (kind == "account" and name.partition("/")[0] in venues)
        )

    def check() -> str | None:
        for hold in app.killswitch.holds.active():
            if (
                hold.id > since
                and hold.state == TradingState.HALTED.value
                and hold.incident_id != incident.id
                and covers(hold.scope)
            ):
                who = hold.incident_id or hold.source
                return f"kill {who} (hold #{hold.id} on {hold.scope}: {hold.reason})"
        return None

    return check


def running_here(app: Rollbot, incident_id: str) -> bool:
    return any(key[1] == str(app.db.path) and key[2] == incident_id for key in _RUNS)


def halt_abandoned_flattens(app: Rollbot, actor: Actor) -> list[Hold]:
    """A flatten loosens its own holds to REDUCING while it runs; when its process is gone
    (killed, crashed) they go back to HALTED at once — the clock and every start call this —
    rather than wait for someone to run `recover`."""
    restored: list[Hold] = []
    for incident_id in sorted(
        {h.incident_id for h in app.killswitch.holds.active() if h.state == "REDUCING"} - {None}
    ):
        assert incident_id is not None
        if app.incidents.get(incident_id).kind == "kill":
            continue  # a kill that asked for REDUCING itself: not a flatten's doing
        if running_here(app, incident_id) or running_elsewhere(app, incident_id):
            continue
        restored += app.killswitch.set_incident_state(
            incident_id,
            TradingState.HALTED,
            actor,
            f"the flatten of {incident_id} is not running (its process is gone): halted again",
        )
    return restored


OPENED_GRACE = timedelta(seconds=60)
_RUNS: dict[tuple[int, str, str], asyncio.Event] = {}  # runs in this process, per loop


def running_elsewhere(app: Rollbot, incident_id: str) -> str | None:
    """Who runs this incident right now, when it is another live process: on this machine by
    /proc, on another host by its heartbeat (the claim is in the RUNNING phase event; a run
    that stopped says so with RUN_INTERRUPTED)."""
    row = app.db.one(
        "SELECT kind, data FROM events WHERE incident_id = ?"
        " AND kind IN ('INCIDENT_PHASE', 'RUN_INTERRUPTED') ORDER BY id DESC LIMIT 1",
        (incident_id,),
    )
    if row is None or row["kind"] != "INCIDENT_PHASE":
        return None
    data = loads(row["data"]) or {}
    runner = data.get("runner") or {}
    if data.get("phase") != "RUNNING" or not app.live_elsewhere(runner):
        return None  # finished, crashed (the run is ours to finish), or this process (it waits)
    return f"process {runner['pid']} on {runner['host']}"


def taken_over(app: Rollbot, incident_id: str) -> str | None:
    """Another process's claim on this incident, newer than this process's own (fencing: a
    runner whose heartbeat lapsed must not go on beside the host that took over)."""
    row = app.db.one(
        "SELECT data FROM events WHERE incident_id = ? AND kind = 'INCIDENT_PHASE'"
        " ORDER BY id DESC LIMIT 1",
        (incident_id,),
    )
    data = (loads(row["data"]) or {}) if row else {}
    runner = data.get("runner") or {}
    if data.get("phase") != "RUNNING" or not runner or is_me(runner, app.me):
        return None
    return f"process {runner.get('pid')} on {runner.get('host')}"
