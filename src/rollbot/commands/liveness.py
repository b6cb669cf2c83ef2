"""Which process did it, and is that process still running: for work claimed in the database
(an incident's run, a webhook page in flight, the risk monitor's lease) that only a dead claimer
may leave to others.

A process is its host, its pid and when it started (boot id and start time from /proc): a pid
alone is reused — a bot restarted in its container is pid 1 again — and a reused pid would pass
for the dead claimer, here or in another process."""

from __future__ import annotations

import os
import socket
from functools import cache
from pathlib import Path
from typing import Any

from rollbot.storage.leases import Lease


@cache
def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces): [state, ppid, ...]."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def _started_from(stat: list[str] | None) -> str | None:
    boot = _boot_id()
    if boot is None or stat is None or len(stat) < 20:
        return None
    return f"{boot}:{stat[19]}"  # field 22, the start time in clock ticks since boot


def started(pid: int) -> str | None:
    """When `pid` started, unique on this host across reboots; None where /proc cannot say."""
    return _started_from(_stat(pid))


ME: dict[str, Any] = {
    "host": socket.gethostname(),
    "pid": os.getpid(),
    "started": started(os.getpid()),
}


def alive(pid: int, since: str | None = None) -> bool:
    """`pid` is running (not a zombie) and, when `since` is given, is the process that started
    then, not a later one given the same pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _stat(pid)
    if stat is None:
        return True  # running, and /proc cannot say more
    if stat[0] == "Z":  # killed, not yet reaped by its parent: it runs nothing
        return False
    now = _started_from(stat)
    return since is None or now is None or now == since


def is_me(claimer: dict[str, Any]) -> bool:
    return (
        claimer.get("host") == ME["host"]
        and claimer.get("pid") == ME["pid"]
        and claimer.get("started", ME["started"]) == ME["started"]
    )


def live_elsewhere(claimer: dict[str, Any]) -> bool:
    """Another process on this host, still running. One SQLite file in WAL mode is shared on
    one host only, so a claimer from another host (or with no pid) is not running here."""
    pid = claimer.get("pid")
    if not pid or claimer.get("host") != ME["host"] or is_me(claimer):
        return False
    return alive(int(pid), claimer.get("started"))


def holder_gone(lease: Lease) -> bool:
    """A lease holder on this host whose process has ended: nobody needs to wait out its lease."""
    claimer = {"host": lease.host, "pid": lease.pid, "started": lease.started}
    return lease.host == ME["host"] and not is_me(claimer) and not live_elsewhere(claimer)
