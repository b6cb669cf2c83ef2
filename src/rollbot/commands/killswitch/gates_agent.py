"""The gates across hosts. The trading system reads its gates from two files on its own host;
several rollbot hosts cannot all own one local file. So with `[gates] agent = true` rollbot
hosts never write the files: a change is a new generation stored in the database
(gate_changes, with its GATES_REQUESTED event), and `rollbot gates agent`, run on the trading
system's host, applies each new generation to the files there (only the gate keys, every other
byte kept: commands/killswitch/gates.py), records GATES_WRITTEN, and reports what it read back from
the files every poll (gate_readings). rollbot hosts read the gates from that report.

Fail closed, both ways:
- no fresh report (the agent down, or cut off from the database) -> the gates read as
  unreadable on every rollbot host: live trading counts as BLOCKED, the guard refuses orders;
- the agent without the database for `agent_fail_closed_s` -> it puts its files in shadow
  itself (nobody can reach the trading system to stop it otherwise), and records that once the
  database is back, as a change of its own, so the desired state matches the files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any

from rollbot.clock import Clock, iso
from rollbot.commands.killswitch.gates import LIVE, SHADOW, Gates, GateValues
from rollbot.config import GatesConfig
from rollbot.storage.db import Database
from rollbot.storage.events import Actor, EventLog
from rollbot.storage.gate_changes import GateChanges

log = logging.getLogger("rollbot.gates_agent")

KEYS = tuple(k for k in GateValues.model_fields if k not in ("readable", "problem", "pending"))


def _values(v: GateValues) -> dict[str, Any]:
    return {k: getattr(v, k) for k in KEYS}


class GatesViaAgent:
    """Gates for a rollbot host that does not own the files: asks through the database, reads
    the agent's report. Same face as Gates."""

    def __init__(self, db: Database, clock: Clock, events: EventLog, cfg: GatesConfig) -> None:
        self.db = db
        self.clock = clock
        self.events = events
        self.cfg = cfg
        self.changes = GateChanges(db)

    def where(self) -> str:
        reading = self.changes.reading()
        host = reading.host if reading else "(no agent has reported yet)"
        return f"Gates files on the trading system's host {host}, applied by `rollbot gates agent`"

    def read(self) -> GateValues:
        """The agent's last report of its files; unreadable (so BLOCKED) when it is stale."""
        reading = self.changes.reading()
        if reading is None:
            return GateValues(
                readable=False,
                problem="no gates agent has reported: run `rollbot gates agent` on the trading"
                " system's host",
            )
        age = (self.clock.now() - reading.read_at).total_seconds()
        if age > self.cfg.agent_stale_s:
            return GateValues(
                readable=False,
                problem=f"the gates agent on {reading.host} last reported {age:.0f} s ago (at"
                f" {iso(reading.read_at)}): it is down or cut off from the database",
            )
        if not reading.readable:
            return GateValues(
                readable=False, problem=f"on {reading.host}: {reading.problem or 'unreadable'}"
            )
        values = GateValues(**reading.values)
        latest = self.changes.latest()
        if latest is not None and latest.generation > reading.generation:
            values.pending = (
                f"Change {latest.generation} ({latest.reason}) asked for at"
                f" {iso(latest.requested_at)}, not yet applied by the gates agent on"
                f" {reading.host} (it has applied {reading.generation})"
            )
        return values

    def live_allowed(self) -> bool:
        return self.read().live_allowed

    def cache_key(self) -> Any:
        return int(time.monotonic() * 4)  # a database read at most 4 times a second

    def write(
        self, values: GateValues, actor: Actor, reason: str, incident_id: str | None = None
    ) -> GateValues:
        with self.db.write():
            before = self.read()
            generation = self.changes.request(
                _values(values), actor.label, reason, incident_id, self.clock.now()
            )
            self.events.append(
                "GATES_REQUESTED",
                actor,
                reason=reason,
                incident_id=incident_id,
                data={
                    "generation": generation,
                    "before": _values(before) if before.readable else None,
                    "after": _values(values),
                },
            )
        return self.read()

    def disable(self, actor: Actor, reason: str, incident_id: str | None = None) -> GateValues:
        """Idempotent: shadow already asked for (applied or on its way) asks nothing new."""
        latest = self.changes.latest()
        if latest is not None and latest.values == _values(SHADOW):
            return self.read()
        return self.write(SHADOW, actor, reason, incident_id)

    def arm(self, actor: Actor, reason: str, incident_id: str | None = None) -> GateValues:
        return self.write(LIVE, actor, reason, incident_id)

    async def settle(self, values: GateValues) -> GateValues:
        """Wait (up to [gates] apply_timeout_s) for the agent to apply the latest change."""
        deadline = time.monotonic() + self.cfg.apply_timeout_s
        while True:
            now = self.read()
            if not now.pending or time.monotonic() >= deadline:
                return now
            await asyncio.sleep(min(0.05, self.cfg.agent_poll_s / 4))


class GatesAgent:
    """`rollbot gates agent`: on the trading system's host, applies the database's gate changes
    to the local files and reports them back."""

    def __init__(
        self,
        open_db: Any,
        gates_at: tuple[Any, Any],
        clock: Clock,
        cfg: GatesConfig,
        host: str,
    ) -> None:
        self.open_db = open_db  # () -> Database: opened again after the database was lost
        self.live_path, self.shadow_path = gates_at
        self.clock = clock
        self.cfg = cfg
        self.host = host
        self.actor = Actor(id=f"gates-agent@{host}", source="system", name="gates agent", host=host)
        self.db: Database | None = None
        self.applied = 0  # the generation the files hold
        self.last_ok = time.monotonic()
        self.failed_closed_at: datetime | None = None
        self.said: str = ""

    def _say(self, text: str) -> None:
        """Each new trouble once (stderr, the log), not once a poll."""
        if text and text != self.said:
            log.warning(text)
        self.said = text

    def poll(self) -> str:
        """One round; returns what happened (for the log and tests)."""
        try:
            return self._poll()
        except Exception as exc:
            if self.db is not None:
                try:
                    self.db.close()
                except Exception:
                    log.debug("closing the lost database", exc_info=True)
                self.db = None
            return self._without_db(exc)

    def _poll(self) -> str:
        if self.db is None:
            self.db = self.open_db()
        db = self.db
        events = EventLog(db, self.clock)
        files = Gates(self.live_path, self.shadow_path, events)
        changes = GateChanges(db)
        done = "in step"
        if self.failed_closed_at is not None:  # back: the shadow it wrote alone is recorded
            with db.write():
                generation = changes.request(
                    _values(SHADOW),
                    self.actor.label,
                    "the gates agent lost the database and put the files in shadow itself",
                    None,
                    self.clock.now(),
                    applied_by=self.host,
                )
                events.append(
                    "GATES_FAIL_CLOSED",
                    self.actor,
                    reason=f"the gates agent on {self.host} could not reach the database from"
                    f" {iso(self.failed_closed_at)} and put the gates in shadow",
                    data={"generation": generation, "after": _values(SHADOW)},
                )
            self.applied = generation
            self.failed_closed_at = None
            done = f"database back: shadow recorded as change {generation}"
        else:
            reading = changes.reading()
            if self.applied == 0 and reading is not None and reading.host == self.host:
                self.applied = reading.generation  # a restart: what it had applied before
        latest = changes.latest()
        if latest is not None and latest.generation > self.applied:
            wanted = GateValues(**latest.values)
            with db.write():
                files.write(
                    wanted,
                    self.actor,
                    f"change {latest.generation} from the database: {latest.reason}",
                    latest.incident_id,
                )
                changes.applied(latest.generation, self.host, self.clock.now())
            self.applied = latest.generation
            done = f"applied change {latest.generation}"
        now = files.read()
        changes.report(
            self.host, self.applied, _values(now), now.readable, now.problem, self.clock.now()
        )
        self.last_ok = time.monotonic()
        self._say("")
        return done

    def _without_db(self, exc: Exception) -> str:
        away = time.monotonic() - self.last_ok
        why = f"{type(exc).__name__}: {exc}"
        if away < self.cfg.agent_fail_closed_s or self.failed_closed_at is not None:
            self._say(
                f"gates agent: cannot reach the database ({why}); "
                + (
                    "files in shadow"
                    if self.failed_closed_at
                    else f"shadow in {self.cfg.agent_fail_closed_s - away:.0f} s"
                )
            )
            return "no database"
        files = Gates(self.live_path, self.shadow_path)  # no event log: it is out of reach
        if files.read().model_dump() != SHADOW.model_dump():
            files.write(SHADOW, self.actor, "database unreachable")
        self.failed_closed_at = self.clock.now()
        self._say(
            f"gates agent: FAIL CLOSED — no database for {away:.0f} s ({why}); the gates files"
            " are in shadow until a person re-arms them"
        )
        return "failed closed"

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.poll)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.cfg.agent_poll_s)
