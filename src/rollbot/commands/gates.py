"""Live trading gates (Live -> Shadow seed, steps 4, 5 and 7): two small TOML files that the
trading system reads. rollbot owns them; every write is atomic (temp file, fsync, rename) so a
reader never sees half a file, and every change is an event."""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rollbot.errors import RollbotError
from rollbot.storage.db import loads
from rollbot.storage.events import Actor, EventLog


class GateValues(BaseModel):
    enable_live_trading: bool = False
    live_mode_armed: bool = False
    live_dry_run_mode: bool = True
    shadow_mode: str = "shadow"
    shadow_enabled: bool = True
    readable: bool = True
    problem: str = ""

    @property
    def live_allowed(self) -> bool:
        return (
            self.readable
            and self.enable_live_trading
            and self.live_mode_armed
            and not self.live_dry_run_mode
        )

    @property
    def shadow_active(self) -> bool:
        return self.readable and not self.live_allowed and self.shadow_enabled


SHADOW = GateValues()
LIVE = GateValues(
    enable_live_trading=True, live_mode_armed=True, live_dry_run_mode=False, shadow_enabled=False
)


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


LIVE_KEYS = ("enable_live_trading", "live_mode_armed", "live_dry_run_mode")


def _table(path: Path, name: str, flags: tuple[str, ...]) -> dict[str, Any]:
    """[name] from a gates file; each flag must be a real boolean (the string "false" is not)."""
    table = tomllib.loads(path.read_text(encoding="utf-8")).get(name)
    if not isinstance(table, dict):
        raise ValueError(f"{path}: no [{name}] table")
    for key in flags:
        if not isinstance(table.get(key), bool):
            raise ValueError(
                f"{path}: [{name}] {key} must be true or false, got {table.get(key)!r}"
            )
    return table


def _b(value: bool) -> str:
    return "true" if value else "false"


class Gates:
    def __init__(self, live_environment: Path, shadow_config: Path, events: EventLog | None = None):
        self.live_path = live_environment
        self.shadow_path = shadow_config
        self.events = events

    def read(self) -> GateValues:
        """Missing, unreadable or malformed files read as live trading disabled (fail closed)."""
        try:
            env = _table(self.live_path, "environment", LIVE_KEYS)
            shadow = _table(self.shadow_path, "shadow", ("enabled",))
        except FileNotFoundError as exc:
            return GateValues(readable=False, problem=f"{exc.filename} does not exist")
        except (OSError, ValueError) as exc:  # TOMLDecodeError, UnicodeDecodeError are ValueErrors
            return GateValues(readable=False, problem=str(exc))
        return GateValues(
            enable_live_trading=env["enable_live_trading"],
            live_mode_armed=env["live_mode_armed"],
            live_dry_run_mode=env["live_dry_run_mode"],
            shadow_mode=str(shadow.get("mode", "shadow")),
            shadow_enabled=shadow["enabled"],
        )

    def live_allowed(self) -> bool:
        return self.read().live_allowed

    def write(self, values: GateValues, actor: Actor, reason: str, incident_id: str | None = None):
        before = self.read()
        try:
            atomic_write(
                self.live_path,
                "# Written by rollbot. Edit through `rollbot gates` so the change is recorded.\n"
                "[environment]\n"
                f"enable_live_trading = {_b(values.enable_live_trading)}\n"
                f"live_mode_armed = {_b(values.live_mode_armed)}\n"
                f"live_dry_run_mode = {_b(values.live_dry_run_mode)}\n",
            )
            atomic_write(
                self.shadow_path,
                "# Written by rollbot.\n"
                "[shadow]\n"
                f'mode = "{values.shadow_mode}"\n'
                f"enabled = {_b(values.shadow_enabled)}\n",
            )
        except OSError as exc:  # a sentence for the person, and the state as it now stands
            state = "still ENABLED" if self.read().live_allowed else "BLOCKED"
            raise RollbotError(
                f"cannot write gates file {exc.filename}: {exc.strerror or exc}; "
                f"live trading is {state}"
            ) from None
        if self.events:
            self.events.append(
                "GATES_WRITTEN",
                actor,
                reason=reason,
                incident_id=incident_id,
                data={
                    "before": before.model_dump(exclude={"readable", "problem"}),
                    "after": values.model_dump(exclude={"readable", "problem"}),
                },
            )
        return self.read()

    def disable(self, actor: Actor, reason: str, incident_id: str | None = None) -> GateValues:
        """Idempotent: gates already in shadow are not rewritten (no fsync on every /kill)."""
        current = self.read()
        if current.readable and current.model_dump() == SHADOW.model_dump():
            self._record_unrecorded(current, actor, reason, incident_id)
            return current
        return self.write(SHADOW, actor, reason, incident_id)

    def _record_unrecorded(
        self, current: GateValues, actor: Actor, reason: str, incident_id: str | None
    ) -> None:
        """Files in shadow that the log does not show in shadow were changed without their
        event: a crash between writing them and recording it (the redone step lands here), or a
        hand edit. Record them now, so the log (and the time in shadow) catches up."""
        if not self.events:
            return
        row = self.events.db.one(
            "SELECT data FROM events WHERE kind = 'GATES_WRITTEN' ORDER BY id DESC LIMIT 1"
        )
        values = current.model_dump(exclude={"readable", "problem"})
        last = (loads(row["data"]) or {}).get("after") if row else None
        if last == values:
            return
        self.events.append(
            "GATES_WRITTEN",
            actor,
            reason=f"{reason} (found already written, not yet recorded)",
            incident_id=incident_id,
            data={"before": last, "after": values, "recorded_late": True},
        )

    def arm(self, actor: Actor, reason: str, incident_id: str | None = None) -> GateValues:
        return self.write(LIVE, actor, reason, incident_id)


def gate_lines(v: GateValues) -> list[tuple[bool, str]]:
    """(ok, text) per check, worded like the seed's expected output."""
    if not v.readable:
        if "does not exist" in v.problem:  # a fresh install: nothing has written them yet
            return [
                (
                    False,
                    f"No gates files yet ({v.problem}); until they exist live trading counts as"
                    " BLOCKED. Write them in the safe state: `rollbot gates disable --confirm`",
                )
            ]
        return [(False, f"Gates unreadable: {v.problem} (treated as live trading BLOCKED)")]
    return [
        (
            v.shadow_active,
            f"Shadow mode: {'ENABLED' if v.shadow_active else 'DISABLED'} (mode={v.shadow_mode})",
        ),
        (not v.live_allowed, f"Live trading: {'DISABLED' if not v.live_allowed else 'ENABLED'}"),
        (v.live_dry_run_mode, f"Dry-run mode: {'ENABLED' if v.live_dry_run_mode else 'DISABLED'}"),
        (not v.enable_live_trading, f"enable_live_trading = {_b(v.enable_live_trading)}"),
        (not v.live_mode_armed, f"live_mode_armed = {_b(v.live_mode_armed)}"),
        (v.live_dry_run_mode, f"live_dry_run_mode = {_b(v.live_dry_run_mode)}"),
    ]
