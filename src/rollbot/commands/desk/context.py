"""The one object every face hands to commands: settings, storage, clock and venues."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from rollbot.clock import Clock, SystemClock
from rollbot.commands.desk.outbox import Outbox
from rollbot.commands.killswitch.gates import Gates
from rollbot.commands.killswitch.gates_agent import GatesViaAgent
from rollbot.commands.killswitch.guard import Guard
from rollbot.commands.killswitch.switch import KillSwitch
from rollbot.config import Settings
from rollbot.errors import BadInput
from rollbot.storage.backends import open_database
from rollbot.storage.db import Database
from rollbot.storage.events import EventLog
from rollbot.storage.incidents import Incidents

if TYPE_CHECKING:
    from rollbot.brokers.base import Venue, VenueEvent
    from rollbot.commands.desk.liveness import Beat, Heartbeats
    from rollbot.secrets import Secrets


@dataclass
class Rollbot:
    settings: Settings
    db: Database
    clock: Clock
    events: EventLog
    incidents: Incidents
    gates: Gates | GatesViaAgent
    killswitch: KillSwitch
    outbox: Outbox
    _venues: dict[str, Venue] | None = None
    _unbuilt: dict[str, Exception] = field(default_factory=dict)  # why a venue was not built
    venue_events: list[VenueEvent] = field(default_factory=list)
    _secrets: Secrets | None = None

    @property
    def secrets(self) -> Secrets:
        """Read on first use: a kill stores its hold before pydantic-settings is imported."""
        if self._secrets is None:
            from rollbot.secrets import Secrets

            self._secrets = Secrets()
        return self._secrets

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        secrets: Secrets | None = None,
        venues: dict[str, Venue] | None = None,
        create: bool = True,
    ) -> Rollbot:
        """`create=False` for readers of state: no database, an empty or a foreign one is
        StateUnavailable, never a fresh one answering ACTIVE."""
        clock = clock or SystemClock()
        db = cast("Database", open_database(settings.database, create=create))
        events = EventLog(db, clock, host=settings.host.id)
        gates: Gates | GatesViaAgent
        if settings.gates.agent:  # the files are on the trading system's host (README)
            gates = GatesViaAgent(db, clock, events, settings.gates)
        else:
            gates = Gates(settings.paths.live_environment, settings.paths.shadow_config, events)
        holder: list[Rollbot] = []

        def fresh_venue(name: str) -> Venue:
            from rollbot.brokers.registry import build_venue  # venue libraries load on use

            return build_venue(settings.venue(name), holder[0].secrets, clock)

        guard = Guard(
            db,
            clock,
            gates,
            [v.name for v in settings.venues],
            fresh_venue=fresh_venue,
            live_venue=lambda name: holder[0].venue(name),
        )
        app = cls(
            settings=settings,
            db=db,
            clock=clock,
            _secrets=secrets,
            events=events,
            incidents=Incidents(db, events, clock),
            gates=gates,
            killswitch=KillSwitch(db, events, clock, gates, guard),
            outbox=Outbox(db, clock),
            _venues=venues,
        )
        holder.append(app)
        for venue in (venues or {}).values():  # venues handed in are watched like built ones
            venue.subscribe(app.seen)
        return app

    def seen(self, event: VenueEvent) -> None:
        """A venue event, stamped by this app's clock: the risk monitor counts them over windows
        of that clock, and a venue library stamps the wall clock (a test's clock is another)."""
        self.venue_events.append(event.model_copy(update={"at": self.clock.now()}))

    @property
    def me(self) -> dict[str, Any]:
        """This process as claims record it: [host] id, pid, when it started."""
        from rollbot.commands.desk.liveness import me_on

        return me_on(self.settings.host.id)

    @property
    def heartbeats(self) -> Heartbeats:
        from rollbot.commands.desk.liveness import Heartbeats

        return Heartbeats(self.db, self.clock.now, self.settings.host.lease_interval_s)

    def beat(self, claimer: dict[str, Any]) -> Beat:
        """Is the process that made this claim still beating (another host's process)."""
        return self.heartbeats.of(claimer)

    def live_elsewhere(self, claimer: dict[str, Any]) -> bool:
        from rollbot.commands.desk.liveness import live_elsewhere

        return live_elsewhere(claimer, self.me, self.beat)

    @property
    def venue_names(self) -> list[str]:
        return [v.name for v in self.settings.venues]

    def venues(self, *, contain: bool = False) -> dict[str, Venue]:
        """Built on first use: the kill path stores its hold before any venue library loads.

        A venue that cannot be built (a credential variable unset) is bad input for every
        command (ConfigError, exit 2, nothing touched) except those that must reach every
        other venue whatever happens: with `contain`, it stands in as a BrokenVenue that fails
        each call by name."""
        if self._venues is None:
            from rollbot.brokers.registry import build_venue

            built: dict[str, Venue] = {}
            for cfg in self.settings.venues:
                try:
                    built[cfg.name] = build_venue(cfg, self.secrets, self.clock)
                except Exception as exc:  # one venue's setup never stops the others'
                    self._unbuilt[cfg.name] = exc
                    continue
                built[cfg.name].subscribe(self.seen)
            self._venues = built
        if not contain:
            for exc in self._unbuilt.values():
                raise exc
            return self._venues
        from rollbot.commands.desk.venue_timeouts import BrokenVenue

        broken = {
            n: cast("Venue", BrokenVenue(n, str(exc) or type(exc).__name__))
            for n, exc in self._unbuilt.items()
        }
        return {**self._venues, **broken}

    def venue(self, name: str) -> Venue:
        if name not in self.venue_names:
            raise BadInput(f"unknown venue {name!r} (configured: {', '.join(self.venue_names)})")
        return self.venues()[name]

    def select(self, name: str | None) -> dict[str, Venue]:
        """One venue by name, or all of them for None / 'all'."""
        if name in (None, "", "all"):
            return self.venues()
        return {name: self.venue(name)}  # type: ignore[dict-item]

    async def aclose(self) -> None:
        for venue in (self._venues or {}).values():
            with contextlib.suppress(Exception):  # best effort: the process is ending
                await venue.close()
        self.db.close()
