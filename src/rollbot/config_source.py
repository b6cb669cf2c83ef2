"""Which rollbot.toml a process reads. Standard library only: the terminal's kill reads the
same file as the full CLI before pydantic (or pathlib) is imported
(commands/killswitch/fast_hold.py)."""

from __future__ import annotations

import os


def config_path(explicit: str | os.PathLike[str] | None) -> str | None:
    """--config, else ROLLBOT_CONFIG, else ./rollbot.toml if present; None: the defaults."""
    if explicit:
        return os.fspath(explicit)
    env = os.environ.get("ROLLBOT_CONFIG")
    if env:
        return env
    return "rollbot.toml" if os.path.exists("rollbot.toml") else None
