"""The exchange-armed dead-man's switch: while `serve` or `clock` runs, each crypto venue with
`dead_mans_switch_s` keeps its exchange's countdown cancel-all armed (brokers/crypto/countdown.py)
and refreshes it every third of the countdown, so if rollbot, its host or its network dies the
exchange itself cancels the orders.

Only a stop a person asked for (SIGTERM/SIGINT of serve or clock) disarms it, and says so as a
DEAD_MANS_SWITCH_DISARMED event. Two failed refreshes in a row post one alert in the ops
channel, and the first refresh that gets through again posts one recovery. The last answer per
venue is kept in `dead_mans_switches`, which the armed-status check reads
(commands/risk/preflight.py), so `rollbot preflight` in another process sees it too.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from rollbot.clock import iso, parse_iso
from rollbot.commands.desk.context import Rollbot
from rollbot.config import CryptoVenueConfig
from rollbot.storage.events import Actor

log = logging.getLogger(__name__)

DMS = Actor.clock("dead_mans_switch")
REFRESHES_PER_COUNTDOWN = 3  # refresh every third: two may fail before the countdown lapses
ALERT_AFTER_FAILURES = 2


def configured(app: Rollbot) -> list[CryptoVenueConfig]:
    return [
        v
        for v in app.settings.venues
        if isinstance(v, CryptoVenueConfig) and v.dead_mans_switch_s is not None
    ]


def check_name(venue: str) -> str:
    return f"dead_mans_switch:{venue}"


class DeadMansSwitch:
    def __init__(self, app: Rollbot) -> None:
        self.app = app
        self.venues = configured(app)
        self.failures: dict[str, int] = {}
        self.alerted: set[str] = set()
        self.unarmable: set[str] = set()
        self.stopped = False
        self._locks: dict[str, asyncio.Lock] = {}

    def interval_s(self) -> float | None:
        """How often to refresh: a third of the shortest countdown."""
        seconds = [v.dead_mans_switch_s for v in self.venues if v.dead_mans_switch_s]
        return min(seconds) / REFRESHES_PER_COUNTDOWN if seconds else None

    async def start(self) -> list[str]:
        """Arm every configured countdown; one line per venue saying what happened."""
        lines: list[str] = []
        for cfg in self.venues:
            seconds = cfg.dead_mans_switch_s or 0
            try:
                trigger, covers = await self._arm(cfg.name, seconds)
            except Exception as exc:
                why = getattr(exc, "detail", None) or str(exc)
                # no countdown at this exchange: said once; anything else is retried each tick
                never = getattr(exc, "code", None) == "NO_COUNTDOWN"
                if never:
                    self.unarmable.add(cfg.name)
                else:  # announced here: the refresh that arms it posts the recovery
                    self.failures[cfg.name] = 1
                    self.alerted.add(cfg.name)
                self._store(
                    cfg.name, armed=False, seconds=seconds, reason=f"cannot be armed: {why}"
                )
                self.app.events.append(
                    "DEAD_MANS_SWITCH_UNAVAILABLE", DMS, reason=why, data={"venue": cfg.name}
                )
                line = f"dead-man's switch on {cfg.name}: CANNOT be armed: {why}"
                if not never:
                    line += f" (retried every {self.interval_s():g} s)"
                log.warning(line)
                self.app.outbox.put("channel", text=f"🔴 {line}")
                lines.append(line)
                continue
            self.app.events.append(
                "DEAD_MANS_SWITCH_ARMED",
                DMS,
                reason=f"{seconds} s countdown, triggers at {iso(trigger)} unless refreshed",
                data={"venue": cfg.name, "seconds": seconds, "covers": covers},
            )
            line = (
                f"dead-man's switch on {cfg.name}: armed, {seconds} s countdown refreshed every"
                f" {seconds / REFRESHES_PER_COUNTDOWN:g} s; covers {covers}"
            )
            log.info(line)
            lines.append(line)
        return lines

    async def refresh(self) -> None:
        """Re-arm every countdown at its full length, the venues side by side."""
        if self.stopped:
            return
        await asyncio.gather(
            *(self._refresh_one(cfg) for cfg in self.venues if cfg.name not in self.unarmable)
        )

    async def _refresh_one(self, cfg: CryptoVenueConfig) -> None:
        # under the venue's lock: a refresh still in flight when a person stops rollbot must not
        # reach the exchange after the disarm and arm it again
        async with self._lock(cfg.name):
            if self.stopped:
                return
            seconds = cfg.dead_mans_switch_s or 0
            # a refresh that hangs past its own slot counts as failed: by the next one the
            # desk must know, not after the exchange's timeout has spent the countdown
            slot = seconds / REFRESHES_PER_COUNTDOWN
            try:
                trigger, _ = await asyncio.wait_for(self._arm(cfg.name, seconds), slot)
            except TimeoutError:
                self._refresh_failed(cfg, f"no answer within {slot:g} s")
                return
            except Exception as exc:
                self._refresh_failed(cfg, str(exc))
                return
        self.failures[cfg.name] = 0
        if cfg.name in self.alerted:
            self.alerted.discard(cfg.name)
            text = f"refreshed again; the exchange cancels at {iso(trigger)} unless refreshed"
            self.app.events.append(
                "DEAD_MANS_SWITCH_RECOVERED", DMS, reason=text, data={"venue": cfg.name}
            )
            self.app.outbox.put("channel", text=f"✅ Dead-man's switch on {cfg.name} {text}.")

    def _lock(self, venue: str) -> asyncio.Lock:
        return self._locks.setdefault(venue, asyncio.Lock())

    async def disarm(self, why: str) -> list[str]:
        """A stop a person asked for: turn every countdown off, and record it."""
        self.stopped = True
        lines: list[str] = []
        for cfg in self.venues:
            if cfg.name in self.unarmable:
                continue
            try:
                async with self._lock(cfg.name):  # after any refresh still in flight
                    await self.app.venue(cfg.name).arm_countdown(0)  # type: ignore[attr-defined]
            except Exception as exc:
                line = f"dead-man's switch on {cfg.name}: could NOT be disarmed: {exc}"
                log.warning(line)
                lines.append(line)
                continue
            reason = f"disarmed: {why}"
            self._store(cfg.name, armed=False, seconds=0, reason=reason)
            self.app.events.append(
                "DEAD_MANS_SWITCH_DISARMED", DMS, reason=why, data={"venue": cfg.name}
            )
            lines.append(f"dead-man's switch on {cfg.name}: {reason}")
        return lines

    # -- inner ----------------------------------------------------------------------------------
    async def _arm(self, venue: str, seconds: int) -> tuple[datetime, str]:
        arm = getattr(self.app.venue(venue), "arm_countdown", None)
        if arm is None:
            raise RuntimeError("this kind of venue has no countdown")
        countdown = await arm(seconds)
        self._store(
            venue,
            armed=True,
            seconds=seconds,
            trigger=countdown.trigger_at,
            covers=countdown.covers,
        )
        return countdown.trigger_at, countdown.covers

    def _refresh_failed(self, cfg: CryptoVenueConfig, why: str) -> None:
        n = self.failures.get(cfg.name, 0) + 1
        self.failures[cfg.name] = n
        with self.app.db.write():
            self.app.db.execute(
                "UPDATE dead_mans_switches SET failures = ?, reason = ?, updated_at = ?"
                " WHERE venue = ?",
                (n, why, iso(self.app.clock.now()), cfg.name),
            )
        log.warning("dead-man's switch on %s: refresh %d in a row failed: %s", cfg.name, n, why)
        if n >= ALERT_AFTER_FAILURES and cfg.name not in self.alerted:
            self.alerted.add(cfg.name)
            row = self.app.db.one(
                "SELECT trigger_at FROM dead_mans_switches WHERE venue = ?", (cfg.name,)
            )
            when = row["trigger_at"] if row and row["trigger_at"] else "its last trigger time"
            text = (
                f"{n} refreshes in a row failed ({why}). Unless one gets through, the exchange"
                f" cancels {cfg.name}'s orders at {when}"
            )
            self.app.events.append(
                "DEAD_MANS_SWITCH_REFRESH_FAILED", DMS, reason=text, data={"venue": cfg.name}
            )
            self.app.outbox.put("channel", text=f"🔴 Dead-man's switch on {cfg.name}: {text}.")

    def _store(
        self,
        venue: str,
        *,
        armed: bool,
        seconds: int,
        trigger: datetime | None = None,
        covers: str = "",
        reason: str = "",
    ) -> None:
        with self.app.db.write():
            self.app.db.execute(
                "INSERT INTO dead_mans_switches"
                " (venue, armed, seconds, trigger_at, covers, failures, reason, updated_at)"
                " VALUES (?, ?, ?, ?, ?, 0, ?, ?) ON CONFLICT (venue) DO UPDATE SET"
                " armed = excluded.armed, seconds = excluded.seconds,"
                " trigger_at = excluded.trigger_at, covers = excluded.covers, failures = 0,"
                " reason = excluded.reason, updated_at = excluded.updated_at",
                (
                    venue,
                    int(armed),
                    seconds,
                    iso(trigger) if trigger else None,
                    covers,
                    reason,
                    iso(self.app.clock.now()),
                ),
            )


def stored_trigger(app: Rollbot, venue: str) -> tuple[bool, datetime | None, str]:
    """(armed, trigger time, reason) as last stored for `venue`."""
    row = app.db.one("SELECT * FROM dead_mans_switches WHERE venue = ?", (venue,))
    if row is None:
        return False, None, "never armed: no `rollbot serve` or `rollbot clock` has run"
    trigger = parse_iso(row["trigger_at"]) if row["trigger_at"] else None
    return bool(row["armed"]), trigger, row["reason"]
