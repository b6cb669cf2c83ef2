"""Live trading gates (Live -> Shadow seed, steps 4, 5 and 7): two small TOML files that the
trading system reads. rollbot changes only the gate keys in them: the desk's other keys, tables
and comments stay byte for byte (tomlkit). Every write is atomic (temp file, fsync, rename) so a
reader never sees half a file, and every change is an event."""

from __future__ import annotations

import contextlib
import os
import stat
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
    pending: str = ""  # a change asked for that the gates agent has not applied yet

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
        with contextlib.suppress(FileNotFoundError):  # keep who may read it (mkstemp is 0600)
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


LIVE_KEYS = ("enable_live_trading", "live_mode_armed", "live_dry_run_mode")
HEADER = "# Written by rollbot. Edit through `rollbot gates` so the change is recorded.\n"
UNPARSABLE_SUFFIX = ".rollbot-unparsable"


def with_gates(path: Path, name: str, gates: dict[str, Any]) -> tuple[str, bool]:
    """The file's text with only `gates` set in its [name] table; every other byte as it was.

    Returns (text, replaced): a file that is not TOML cannot be edited in place, yet the gates
    must still close, so it is replaced whole (replaced=True; the caller keeps the old bytes).
    """
    import tomlkit  # here, not at the top: every CLI start (a kill, the guard) imports this module

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = HEADER
    try:
        doc = tomlkit.parse(text)
        table = doc.get(name)
        if table is not None and not isinstance(table, dict):
            raise ValueError(f"{name} is not a table")
    except (ValueError, UnicodeDecodeError):  # tomlkit's ParseError is a ValueError
        doc, table = tomlkit.parse(HEADER), None
        replaced = True
    else:
        replaced = False
    if table is None:
        doc.add(name, tomlkit.table())
        table = doc[name]
    for key, value in gates.items():
        current = table.get(key)
        if current != value or not isinstance(current, type(value)):
            table[key] = value  # an unchanged gate keeps its exact text
    return tomlkit.dumps(doc), replaced


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


def _stat(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


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

    def where(self) -> str:
        return f"Gates files: {self.live_path} and {self.shadow_path}"

    def cache_key(self) -> Any:
        """Changes whenever what read() answers may have changed (the guard's cache)."""
        return (_stat(self.live_path), _stat(self.shadow_path))

    async def settle(self, values: GateValues) -> GateValues:
        """The gates once a change is in force: written here, at once."""
        return values

    def write(self, values: GateValues, actor: Actor, reason: str, incident_id: str | None = None):
        """The one writer of both files: only the gate keys change, each file atomically."""
        before = self.read()
        replaced: list[str] = []
        try:
            for path, name, gates in (
                (
                    self.live_path,
                    "environment",
                    {key: getattr(values, key) for key in LIVE_KEYS},
                ),
                (
                    self.shadow_path,
                    "shadow",
                    {"mode": values.shadow_mode, "enabled": values.shadow_enabled},
                ),
            ):
                text, unparsable = with_gates(path, name, gates)
                if unparsable:  # kept beside it: a person decides what to do with it
                    keep = path.with_name(path.name + UNPARSABLE_SUFFIX)
                    keep.write_bytes(path.read_bytes())
                    replaced.append(str(keep))
                atomic_write(path, text)
        except OSError as exc:  # a sentence for the person, and the state as it now stands
            state = "still ENABLED" if self.read().live_allowed else "BLOCKED"
            raise RollbotError(
                f"cannot write gates file {exc.filename}: {exc.strerror or exc}; "
                f"live trading is {state}"
            ) from None
        if self.events:
            data: dict[str, Any] = {
                "before": before.model_dump(exclude={"readable", "problem"}),
                "after": values.model_dump(exclude={"readable", "problem"}),
            }
            if replaced:
                data["unparsable_kept_as"] = replaced
            self.events.append(
                "GATES_WRITTEN", actor, reason=reason, incident_id=incident_id, data=data
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
    if v.pending:
        return [(False, v.pending), *gate_lines(v.model_copy(update={"pending": ""}))]
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
