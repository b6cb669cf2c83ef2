"""JSON as stored in the event log, the outbox and elsewhere: sorted keys, no spaces. Standard
library only, for the terminal's kill (commands/killswitch/fast_hold.py)."""

from __future__ import annotations

import json

TYPE_CHECKING = False  # not typing's: importing typing costs the kill ~15 ms
if TYPE_CHECKING:
    from typing import Any


def dumps(data: Any) -> str:
    return json.dumps(data, default=str, sort_keys=True, separators=(",", ":"))


def loads(text: str | None) -> Any:
    return json.loads(text) if text else None


def text_field(db: object, column: str, key: str) -> str:
    """SQL for the text at `key` of a JSON column, to compare with a text parameter. On
    PostgreSQL the migrations' json_extract answers numbers and flags only (what most queries
    compare), so a text value is read with ->>."""
    if not key.isidentifier():
        raise ValueError(f"not a JSON key this reads: {key!r}")
    if getattr(db, "dialect", "sqlite") == "postgresql":
        return f"({column}::jsonb ->> '{key}')"
    return f"json_extract({column}, '$.{key}')"
