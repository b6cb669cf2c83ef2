"""The history database for the scale figures (issue 18): 10,000 closed incidents and about
1,000,000 events (tests/fakes/history.py writes them), built once and cached under var/bench/,
keyed by its version, its size and the schema version, so reruns only copy it (~0.5 s)."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from fakes.history import build_history

from rollbot.storage.migrations import MIGRATIONS

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "var" / "bench"
VERSION = 1  # bump when tests/fakes/history.py writes something else


def cached(incidents: int, events: int) -> Path:
    """The cached history database, built first if missing."""
    path = CACHE / f"history-v{VERSION}-m{len(MIGRATIONS)}-{incidents}x{events}.db"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        build_history(tmp, incidents=incidents, events=events, now=datetime.now(UTC))
        tmp.replace(path)  # a half-built file never looks cached
    return path


def place(root: Path, incidents: int, events: int) -> Path:
    """A fresh copy of the history as `root`/rollbot.db (where settings_for puts the database)."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / "rollbot.db"
    shutil.copyfile(cached(incidents, events), target)
    return target
