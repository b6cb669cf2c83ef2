"""The event log's hash chain: each event's hash covers its content and the hash before it, so an
edited, deleted or reordered event breaks the chain from that point on (`rollbot audit verify`).

Standard library only: the terminal's kill (commands/killswitch/fast_hold.py) chains its events
before pydantic is imported. The serialization is the audit format (README "Audit log"): a JSON
array, sorted keys, no spaces, ASCII, in this order —

    ["rollbot-event-1", seq, at, kind, actor, source, host, scope, incident_id, reason, data,
     prev_hash]

`data` is the parsed payload (not its stored text), so a backend that stores JSON in its own
form (PostgreSQL jsonb) hashes the same. The row id is not covered: it is where the row is
stored, and a PostgreSQL sequence leaves gaps; `seq` (1, 2, 3 ... in commit order) is the
event's place in the chain. Appends must be serialized — the previous hash is read in the
same write transaction that inserts (SQLite's BEGIN IMMEDIATE; an advisory lock on
PostgreSQL) — and the unique index on seq refuses a fork rather than storing one.
"""

from __future__ import annotations

import hashlib
import json

TYPE_CHECKING = False  # not typing's: importing typing costs the kill ~15 ms
if TYPE_CHECKING:
    from typing import Any

FORMAT = "rollbot-event-1"
GENESIS = "0" * 64  # the prev_hash of seq 1

# the last chained event, read inside the write transaction that appends the next one
HEAD_SQL = "SELECT seq, hash FROM events WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1"
INSERT_SQL = (
    "INSERT INTO events (at, kind, actor, source, host, scope, incident_id, reason, data,"
    " seq, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def canonical(
    seq: int,
    at: str,
    kind: str,
    actor: str,
    source: str,
    host: str | None,
    scope: str | None,
    incident_id: str | None,
    reason: str | None,
    data: Any,
    prev_hash: str,
) -> bytes:
    payload = data
    if isinstance(data, str | bytes) and data:
        try:
            payload = json.loads(data)
        except ValueError:  # not written by rollbot: hashed as the text it is
            payload = data if isinstance(data, str) else data.decode("utf-8", "replace")
    return json.dumps(
        [FORMAT, seq, at, kind, actor, source, host, scope, incident_id, reason, payload,
         prev_hash],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode("ascii")  # fmt: skip


def event_hash(
    seq: int,
    at: str,
    kind: str,
    actor: str,
    source: str,
    host: str | None,
    scope: str | None,
    incident_id: str | None,
    reason: str | None,
    data: Any,
    prev_hash: str,
) -> str:
    return hashlib.sha256(
        canonical(seq, at, kind, actor, source, host, scope, incident_id, reason, data, prev_hash)
    ).hexdigest()


def row_hash(row: dict[str, Any], prev_hash: str | None = None) -> str:
    """The hash a stored row should carry (its own prev_hash unless another is given)."""
    return event_hash(
        row["seq"],
        row["at"],
        row["kind"],
        row["actor"],
        row["source"],
        row["host"],
        row["scope"],
        row["incident_id"],
        row["reason"],
        row["data"],
        row["prev_hash"] if prev_hash is None else prev_hash,
    )


def next_link(head: tuple[int, str] | None) -> tuple[int, str]:
    """(seq, prev_hash) of the event after `head` (the HEAD_SQL row, or None: the first)."""
    if head is None:
        return 1, GENESIS
    return int(head[0]) + 1, str(head[1])
