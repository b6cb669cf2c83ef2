"""Which process did it, and is that process still running: for work claimed in the database
(an incident's run, a webhook page in flight, the risk monitor's lease) that only a dead claimer
may leave to others.

A process is its host, its pid and when it started (boot id and start time from /proc): a pid
alone is reused — a bot restarted in its container is pid 1 again — and a reused pid would pass
for the dead claimer, here or in another process."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def started(pid: int) -> str | None:
    """When `pid` started, unique on this host across reboots; None where /proc cannot say."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        # field 22 of /proc/PID/stat, counted after the command name, which may hold spaces
        ticks = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    return f"{boot}:{ticks}"


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
    try:  # a killed process its parent has not reaped yet is not running anything
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] == "Z":
            return False
    except (OSError, IndexError):
        return True
    if since is None:
        return True
    now = started(pid)
    return now is None or now == since


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
