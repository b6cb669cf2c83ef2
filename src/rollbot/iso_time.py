"""Times as stored: ISO 8601, UTC, milliseconds, a Z. Standard library only, so the terminal's
kill (commands/killswitch/fast_hold.py) stamps its rows before typing or pydantic is imported."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
