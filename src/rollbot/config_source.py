"""Which rollbot.toml a process reads. Standard library only: the terminal's kill reads the
same file as the full CLI before pydantic is imported (commands/fast_hold.py)."""

from __future__ import annotations

import os
from pathlib import Path


def config_path(explicit: str | Path | None) -> Path | None:
    """--config, else ROLLBOT_CONFIG, else ./rollbot.toml if present; None: the defaults."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("ROLLBOT_CONFIG")
    if env:
        return Path(env)
    default = Path("rollbot.toml")
    return default if default.exists() else None
