"""Which process did it, and is that process still running: for work claimed in the database
(an incident's run, a webhook page in flight) that only a dead claimer may leave to others."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

ME: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process its parent has not reaped yet is not running anything
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def is_me(claimer: dict[str, Any]) -> bool:
    return claimer.get("host") == ME["host"] and claimer.get("pid") == ME["pid"]


def live_elsewhere(claimer: dict[str, Any]) -> bool:
    """Another process on this host, still running. One SQLite file in WAL mode is shared on
    one host only, so a claimer from another host (or with no pid) is not running here."""
    pid = claimer.get("pid")
    if not pid or claimer.get("host") != ME["host"] or pid == ME["pid"]:
        return False
    return alive(int(pid))
