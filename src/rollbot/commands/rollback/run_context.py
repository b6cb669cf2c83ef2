"""What every step of a run is handed: the RunContext. The steps are plain functions over it
(rollback/steps/), not objects of their own, because what they share is exactly this — the
incident as the run sees it, its venues, who acts — and what one step leaves the next (step
3's books for step 4, step 4's flattens for step 5) is better a named field here than a
reference from one step object into another.

Also here: the venues a scope reaches, the bounded call to every venue at once, the state a
kill asked for, and the pages a run sends as it starts and when a step reports a loss.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from rollbot.brokers.base import Venue, VenueError
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.desk.venue_timeouts import bounded, contained
from rollbot.commands.killswitch.trading_state import TradingState
from rollbot.commands.paging import escalation
from rollbot.commands.rollback.flatten import VenueFlatten
from rollbot.commands.rollback.positions import VenueBook
from rollbot.commands.rollback.run_model import StepReport
from rollbot.storage.db import loads
from rollbot.storage.events import Actor
from rollbot.storage.incidents import Incident
from rollbot.storage.nav import NavSamples

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """One run of one incident, as its steps see it."""

    app: Rollbot
    actor: Actor
    incident: Incident  # as this run sees it: a continuation's kind and scope
    venue_timeout_s: float
    navs: NavSamples
    page: bool  # a venue drill (a rehearsal on a real venue) pages nobody
    continuing: bool  # this run continues an incident opened by another action
    read_only: set[str]  # venues step 3 reconnected read-only to assess; step 4 trades again
    # each bounded: unreachable after venue_timeout_s, in every step (reach_venues)
    venues: dict[str, Venue] = field(default_factory=dict)
    books: list[VenueBook] | None = None  # step 3's read of every venue (step 5's after it)
    flattens: list[VenueFlatten] = field(default_factory=list)  # step 4's, one per venue

    def reach_venues(self) -> None:
        """The scope's venues, built as the first step is about to run: a process's first
        run loads the venue libraries here, after the chain was paged."""
        self.venues = venues_in(self.app, self.incident.scope, self.venue_timeout_s)

    def escalate(self) -> None:
        """Page the chain as the run starts (a run that halts: once step 1's cancels are sent,
        so no page write ever delays them), by whatever path the incident opened (a person,
        the terminal, the clock, a restart), with the loss its steps reported so far.
        Idempotent. A failure here stops no step: the clock's sweep retries it."""
        if not self.page or not self.incident.is_open:
            return
        try:
            escalation.escalate_incident(self.app, self.incident.id, self.actor)
        except Exception:
            log.exception("starting the escalation of %s failed", self.incident.id)

    def watch_loss(self, report: StepReport) -> None:
        """A loss a step reports above the critical one pages every tier at once."""
        if not self.page or not self.incident.is_open:
            return
        try:
            escalation.loss_watcher(self.app, self.incident.id, self.actor)(report)
        except Exception:
            log.exception("checking the loss of %s failed", self.incident.id)


def venues_in(app: Rollbot, scope: str, timeout_s: float) -> dict[str, Venue]:
    """The venues a scope reaches, each bounded by timeout_s. A venue that cannot even be
    built is in it as a venue that fails every call by name: the others still get their
    cancels."""
    venues = app.venues(contain=True)
    if scope.startswith("venue:"):
        reached = {scope[6:]: venues[scope[6:]]}
    elif scope.startswith("account:"):
        name = scope[8:].partition("/")[0]
        reached = {name: venues[name]}
    elif scope.startswith("strategy:"):
        reached = {}  # a strategy's orders are not identifiable at the venue: hold only
    else:
        reached = venues
    return {n: bounded(v, timeout_s) for n, v in reached.items()}


async def per_venue(
    venues: dict[str, Venue], fn: Callable[[Venue], Awaitable[Any]], timeout_s: float
) -> dict[str, Any]:
    """Run fn on every venue at once; a slow or failing venue never holds up the others."""

    async def guarded(v: Venue) -> Any:
        try:
            async with asyncio.timeout(timeout_s):
                return await fn(v)
        except TimeoutError:
            return VenueError(v.name, f"no answer within {timeout_s:g} s")
        except Exception as exc:  # whatever a venue raises is that venue's failure alone
            return contained(v.name, exc)

    results = await asyncio.gather(*(guarded(v) for v in venues.values()))
    return dict(zip(venues, results, strict=True))


def held_state(app: Rollbot, incident: Incident) -> TradingState:
    """The state the incident's kill asked for: REDUCING for `/kill reducing`, as its first
    hold was stored; HALTED for every other kill, flatten and rollback."""
    if incident.kind != "kill":
        return TradingState.HALTED
    first = app.db.one(
        "SELECT data FROM events WHERE incident_id = ? AND kind = 'HOLD_SET' ORDER BY id LIMIT 1",
        (incident.id,),
    )
    state = (loads(first["data"]) or {}).get("state") if first else None
    return TradingState.REDUCING if state == "REDUCING" else TradingState.HALTED
