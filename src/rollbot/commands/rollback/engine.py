"""The rollback engine (IBKR seed): HALT -> DISCONNECT -> ASSESS -> FLATTEN -> VERIFY, against
every venue at once. `/kill` is steps 1-2, `/flatten` steps 3-5, `/rollback` all five.

Every step writes STEP_STARTED and STEP_ENDED events; a rerun of an incident skips the steps
that ended and redoes, idempotently, the one that was cut off.

Engine is the front door: it opens or continues an incident, claims its run and hands the run
to the step loop. The rest lives beside it, each piece on its own page:

    run_model.py     the steps, their reports and the outcome (data)
    run_context.py   RunContext, what every step is handed; the venues of a scope
    run_steps.py     the step loop: each step bracketed by its events, then the outcome
    steps/           the five steps, one module each, as functions of a RunContext
    run_claims.py    one run at a time: here, and across hosts (claim, fencing)
    continuation.py  a later run of an open incident: its steps, kind, scope and symbols
    hold_first.py    the hold written in a thread while a kill's cancels go out

`__all__` is what the rest of the code imports from here, wherever it is defined.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.trading_state import TradingState, parse_scope
from rollbot.commands.rollback.continuation import (
    as_run,
    covering_incident,
    finished_steps,
    record_continuation,
    steps_of,
)
from rollbot.commands.rollback.held_incident import store_held_incident
from rollbot.commands.rollback.hold_first import HOLD_FIRST_WAIT_MS, store_in_thread
from rollbot.commands.rollback.run_claims import (
    OPENED_GRACE,
    claim,
    halt_abandoned_flattens,
    running_elsewhere,
    running_here,
    turn_here,
)
from rollbot.commands.rollback.run_context import RunContext, held_state
from rollbot.commands.rollback.run_model import (
    FLATTEN_STEPS,
    KILL_STEPS,
    ROLLBACK_STEPS,
    STEPS,
    Outcome,
    StartCallback,
    Step,
    StepCallback,
    StepReport,
    StepStatus,
    ended_steps,
    outcome_of,
)
from rollbot.commands.rollback.run_steps import mark_done, run_steps
from rollbot.commands.rollback.steps.halt import cancel_now
from rollbot.errors import DatabaseBusy, HoldNotStored, Refused, StorageError
from rollbot.storage.events import Actor
from rollbot.storage.incidents import Incident
from rollbot.storage.nav import NavSamples

__all__ = [
    "FLATTEN_STEPS",
    "HOLD_FIRST_WAIT_MS",
    "KILL_STEPS",
    "OPENED_GRACE",
    "ROLLBACK_STEPS",
    "STEPS",
    "Engine",
    "Outcome",
    "StartCallback",
    "Step",
    "StepCallback",
    "StepReport",
    "StepStatus",
    "covering_incident",
    "ended_steps",
    "halt_abandoned_flattens",
    "running_elsewhere",
    "running_here",
]


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
        self._read_only: set[str] = set()  # venues step 3 left read-only, for step 4
        self.navs = NavSamples(app.db)

    # -- entry points -------------------------------------------------------------------------
    def open_held_incident(self, **kw: Any) -> tuple[Incident, bool]:
        """Store the incident and its hold (HALTED, or REDUCING) in one transaction, before
        any venue call (`also` writes in the same transaction: the terminal's BREAK_GLASS);
        the keywords are store_held_incident's."""
        return store_held_incident(self.app, self.actor, **kw)

    async def open_held(self, **kw: Any) -> tuple[Incident, bool]:
        """open_held_incident for a kill or a rollback, which never waits on the database.

        When another process holds SQLite's write lock past HOLD_FIRST_WAIT_MS, the cancels of
        the scope go out at once, on every venue, while a thread keeps retrying the hold write
        until it is stored; then what was cancelled before the hold is recorded in the incident
        (step 1 reports it). A write that fails for good (a full disk, a corrupt file) after
        the cancels went out is HoldNotStored (exit 1: the cancels changed something). Any other
        failure of the first write (a full disk, a server lost, a value it refuses) cancels at
        once the same way and tries the hold once more: no database fault stops the cancels."""
        try:
            with self.app.db.patience(HOLD_FIRST_WAIT_MS):
                return self.open_held_incident(**kw)
        except DatabaseBusy as busy:
            locked, again = str(busy), "retried until stored"
        except StorageError as failed:  # BadInput is not one: a wrong kill changes nothing
            locked, again = f"the hold could not be stored ({failed})", "tried once more"
        scope = parse_scope(kw.get("scope_text"), self.app.venue_names)
        started = time.monotonic()
        store = store_in_thread(self.app, lambda: self.open_held_incident(**kw), self._stop_storing)
        done = await self.cancel_now(scope)
        if self.on_note is not None:  # told whether or not the hold got in during the cancels
            stored = store.done() and not store.cancelled() and store.exception() is None
            self.on_note(
                f"{locked}: cancels sent before the hold — "
                + ("; ".join(f"{n}: {t}" for n, t in done.items()) or "no venue in scope")
                + f". The {TradingState(kw.get('hold_state', 'HALTED')).value} hold "
                + ("was stored meanwhile." if stored else f"is {again}.")
            )
        try:
            incident, new = await asyncio.shield(store)
        except asyncio.CancelledError:  # the process is stopping: the thread must not outlive it
            self._stop_storing.set()
            raise
        except StorageError as exc:
            raise HoldNotStored(
                f"the {TradingState(kw.get('hold_state', 'HALTED')).value} hold on {scope} was NOT"
                f" stored: {exc}. Cancels sent: "
                + ("; ".join(f"{n}: {t}" for n, t in done.items()) or "none (no venue in scope)")
            ) from None
        self.record_early_cancels(incident.id, scope, done, time.monotonic() - started, locked)
        return incident, new

    async def cancel_now(self, scope: str) -> dict[str, str]:
        """The scope's cancels on every venue at once, touching no database (steps/halt.py)."""
        return await cancel_now(self.app, scope, self.venue_timeout_s)

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
        incident = record_continuation(
            self.app,
            self.actor,
            incident_id,
            kind=kind,
            scope=scope,
            steps=steps,
            reason=reason,
            dedupe_key=dedupe_key,
            symbols=symbols,
        )
        return await self.run(incident, steps, new=False)

    def steps_of(self, incident: Incident) -> tuple[int, ...]:
        """The steps of the incident's current run (its latest continuation's, if any)."""
        return steps_of(self.app, incident)

    def held_state(self, incident: Incident) -> TradingState:
        """The state the incident's kill asked for (run_context.held_state)."""
        return held_state(self.app, incident)

    # -- the run ------------------------------------------------------------------------------
    async def run(self, incident: Incident, steps: tuple[int, ...], *, new: bool = True) -> Outcome:
        """Run (or finish) the incident. Once per incident at a time: a second run in this
        process waits for the first and returns its outcome; another live process running it
        is refused (RUNNING_ELSEWHERE) — it finishes the incident there."""
        async with turn_here(self.app, incident.id) as waited:
            if waited:
                incident = self.app.incidents.get(incident.id)
            try:
                return await self._run(incident, steps, new=new)
            except BaseException as exc:  # not a crash: say the run stopped, so others may finish
                with contextlib.suppress(Exception):
                    if not isinstance(exc, Refused):
                        self.app.events.append(
                            "RUN_INTERRUPTED",
                            self.actor,
                            incident_id=incident.id,
                            reason=f"{type(exc).__name__}: {exc}"[:300],
                        )
                raise

    async def _run(self, incident: Incident, steps: tuple[int, ...], *, new: bool) -> Outcome:
        incident, mark = as_run(self.app, incident)
        run = RunContext(
            app=self.app,
            actor=self.actor,
            incident=incident,
            venue_timeout_s=self.venue_timeout_s,
            navs=self.navs,
            page=self.page,
            continuing=bool(mark),
            read_only=self._read_only,
        )
        done = finished_steps(self.app, incident.id)
        if done and all(s in done for s in steps):  # finished before: nothing is sent again
            if incident.phase == "RUNNING":  # the crash came after the last step ended
                outcome = outcome_of(incident, [done[s] for s in steps], new=new)
                with self.app.db.write():
                    mark_done(run, outcome)
                incident = self.app.incidents.get(incident.id)
            return outcome_of(incident, [done[s] for s in steps], new=new)
        claim(self.app, self.actor, incident, steps)
        if 1 not in steps or 1 in done:  # else step 1 pages once its cancels are out
            run.escalate()
        # the runner's heartbeat while the run lasts (a terminal's `rollbot rollback` has no
        # clock beating for it): other hosts finish the run once it stops
        beating = self.app.heartbeats.beating(self.app.me)
        try:
            return await run_steps(
                run, steps, done, new=new, mark=mark, on_start=self.on_start, on_step=self.on_step
            )
        finally:
            beating.set()
