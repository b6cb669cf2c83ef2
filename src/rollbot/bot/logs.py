"""Logging for the long-running faces (`serve`, `clock`): a level from --log-level or
ROLLBOT_LOG_LEVEL, plain lines or one JSON object a line (--log-json) for a log shipper."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime

from rollbot.errors import BadInput

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(level: str | None = None, as_json: bool = False) -> str:
    """Set up the root logger; returns the level in force."""
    name = (level or os.environ.get("ROLLBOT_LOG_LEVEL") or "INFO").strip().upper()
    if name not in LEVELS:
        source = "--log-level" if level else "ROLLBOT_LOG_LEVEL"
        raise BadInput(f"{source} {name!r} is not a level: use {', '.join(LEVELS)}")
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLines()
        if as_json
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(name)
    # APScheduler says "Running job" and "executed successfully" at INFO for every run of every
    # interval job (~170,000 lines a day here): that is chatter, kept for DEBUG
    logging.getLogger("apscheduler").setLevel("DEBUG" if name == "DEBUG" else "WARNING")
    return name
