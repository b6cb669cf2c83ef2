"""Checking the event log's hash chain (storage/chain.py) from the first event to the last.

Walks the events in the order they are stored (id) and stops at the first one that is wrong:
- edited: its content no longer gives its hash;
- missing: its seq skips one or more (events deleted before it), or its prev_hash is not the
  hash of the event before it (an event before it deleted or replaced);
- reordered: its seq belongs elsewhere in the log (rows moved or swapped);
- unhashed: it carries no place in the chain (written around rollbot's event log).
Only portable SQL through the Database API, in batches: it runs on either backend and reads a
million events in bounded memory. An attacker who can write the database can rewrite the whole
chain from the event he changes onward; only a head hash kept elsewhere (`--anchor`) shows that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from rollbot.storage.chain import GENESIS, row_hash
from rollbot.storage.db import Database

Problem = Literal["edited", "missing", "reordered", "unhashed", "anchor"]
BATCH = 5000
COLUMNS = (
    "id, seq, at, kind, actor, source, host, scope, incident_id, reason, data, prev_hash, hash"
)


@dataclass(frozen=True)
class Break:
    """The first event that is wrong, and what is wrong with it."""

    problem: Problem
    event_id: int | None
    seq: int | None
    at: str | None
    kind: str | None
    detail: str

    def describe(self) -> str:
        if self.event_id is None:
            return f"the log: {self.problem.upper()} - {self.detail}"
        seq = "no seq" if self.seq is None else f"seq {self.seq}"
        return (
            f"event id {self.event_id} ({seq}, {self.at}, {self.kind}):"
            f" {self.problem.upper()} - {self.detail}"
        )


@dataclass(frozen=True)
class Verdict:
    events: int  # how many were checked before the first break (all of them when intact)
    head_seq: int  # the last good event's place in the chain (0: none)
    head_hash: str
    broken: Break | None = None

    @property
    def intact(self) -> bool:
        return self.broken is None


def _event_rows(db: Database) -> Any:
    after: int | None = None
    while True:
        if after is None:
            rows = db.query(f"SELECT {COLUMNS} FROM events ORDER BY id LIMIT {BATCH}")
        else:
            rows = db.query(
                f"SELECT {COLUMNS} FROM events WHERE id > ? ORDER BY id LIMIT {BATCH}", (after,)
            )
        if not rows:
            return
        yield from rows
        after = rows[-1]["id"]


def verify(db: Database, anchor: tuple[int, str] | None = None) -> Verdict:
    """The chain from seq 1 to its head; `anchor` (seq, hash) is a head recorded elsewhere
    earlier: the log must still hold that event with that hash."""
    expected_seq, expected_prev, count = 1, GENESIS, 0
    anchor_seen = False
    for row in _event_rows(db):
        found = _check(db, row, expected_seq, expected_prev)
        if found is not None:
            return Verdict(count, expected_seq - 1, expected_prev, found)
        if anchor is not None and row["seq"] == anchor[0]:
            anchor_seen = True
            if row["hash"] != anchor[1]:
                return Verdict(
                    count,
                    expected_seq - 1,
                    expected_prev,
                    _break(
                        "anchor",
                        row,
                        f"its hash is {row['hash']}, not the anchored {anchor[1]}: the chain"
                        " up to it was rewritten after the anchor was taken",
                    ),
                )
        count += 1
        expected_seq, expected_prev = row["seq"] + 1, row["hash"]
    if anchor is not None and not anchor_seen:
        return Verdict(
            count,
            expected_seq - 1,
            expected_prev,
            Break(
                "anchor",
                None,
                None,
                None,
                None,
                f"the anchored event seq {anchor[0]} is not in the log (it ends at seq"
                f" {expected_seq - 1}): events at the end were deleted",
            ),
        )
    return Verdict(count, expected_seq - 1, expected_prev)


def _break(problem: Problem, row: dict[str, Any], detail: str) -> Break:
    return Break(problem, row["id"], row["seq"], row["at"], row["kind"], detail)


def _check(db: Database, row: dict[str, Any], seq: int, prev: str) -> Break | None:
    if row["seq"] is None or row["hash"] is None or row["prev_hash"] is None:
        return _break(
            "unhashed",
            row,
            "it has no place in the hash chain: it was written around rollbot's event log"
            " (or its chain columns were erased)",
        )
    try:
        intact = row_hash(row) == row["hash"]
    except (TypeError, ValueError):  # a field changed to something that no longer hashes
        intact = False
    if not intact:
        return _break(
            "edited",
            row,
            "its content no longer matches its hash: a field (seq, time, kind, actor, source,"
            " host, scope, incident, reason or data) was changed after it was written",
        )
    if row["seq"] != seq:
        if row["seq"] < seq:
            return _break(
                "reordered",
                row,
                f"seq {row['seq']} comes after seq {seq - 1}: events were moved or swapped",
            )
        elsewhere = db.one("SELECT id FROM events WHERE seq = ?", (seq,))
        if elsewhere is not None:
            return _break(
                "reordered",
                row,
                f"it stands where seq {seq} belongs, and seq {seq} is stored later (id"
                f" {elsewhere['id']}): events were moved or swapped",
            )
        gap = f"seq {seq}" if row["seq"] == seq + 1 else f"seq {seq}..{row['seq'] - 1}"
        return _break("missing", row, f"the event(s) {gap} before it are gone: deleted")
    if row["prev_hash"] != prev:
        return _break(
            "missing",
            row,
            f"its link to the event before it (seq {seq - 1}) is broken: that event was"
            " replaced, or deleted and the log renumbered",
        )
    return None
