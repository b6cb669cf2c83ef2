"""The regulator's trail: every event in a time range as CSV or JSON lines — who, when, what,
why, from where (slack, cli, clock), on which host, the desk scope / venue / account / strategy
it belongs to, and its place in the hash chain.

An order's event names its venue; the scope it belongs to is its incident's (the kill or
rollback that sent it): both are given, so an order of a `strategy:mm-eu` kill reads as that
strategy's. `global` is the whole desk. JSON lines carry every field the hash covers, exactly
as stored (the chain can be recomputed from the file: README "Audit log"); CSV is for reading
in a spreadsheet, so text that a spreadsheet would run as a formula is defused with a leading '.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal

from rollbot.errors import BadInput
from rollbot.iso_time import iso
from rollbot.storage.db import Database, loads

Format = Literal["csv", "jsonl"]
FORMATS: tuple[Format, ...] = ("csv", "jsonl")
BATCH = 5000
COLUMNS = (
    "seq",
    "event_id",
    "at",
    "actor",
    "os_user",
    "source",
    "host",
    "kind",
    "reason",
    "incident_id",
    "scope",
    "incident_scope",
    "venue",
    "account",
    "strategy",
    "symbol",
    "order_id",
    "data",
    "prev_hash",
    "hash",
)
FORMULA_LEAD = ("=", "+", "-", "@", "\t", "\r")  # OWASP CSV injection


@dataclass(frozen=True)
class Window:
    """[start, end) as stored times (ISO text in UTC sorts as time does)."""

    start: str | None
    end: str | None

    def describe(self) -> str:
        return f"{self.start or 'the beginning'} to {self.end or 'now'} (end excluded)"


def _bound(text: str, option: str, *, end: bool) -> datetime:
    """A day (YYYY-MM-DD: --to includes all of it) or an ISO 8601 time (no zone: UTC)."""
    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadInput(
            f"{option} {text!r} is not a date: use YYYY-MM-DD or an ISO 8601 time such as"
            " 2026-01-05T14:30:00Z. Nothing was exported."
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    # times are stored to the millisecond: --to a time includes that millisecond
    return when + timedelta(milliseconds=1) if end else when


def window(start: str | None, end: str | None) -> Window:
    lo = _bound(start, "--from", end=False) if start else None
    hi = _bound(end, "--to", end=True) if end else None
    if lo is not None and hi is not None and lo >= hi:
        raise BadInput(f"--from {start!r} is not before --to {end!r}. Nothing was exported.")
    return Window(iso(lo) if lo else None, iso(hi) if hi else None)


def check_format(text: str) -> Format:
    if text not in FORMATS:
        raise BadInput(f"--format {text!r}: use csv or jsonl. Nothing was exported.")
    return text  # type: ignore[return-value]


def _scope_parts(scope: str | None) -> dict[str, str]:
    if not scope:
        return {}
    kind, _, name = scope.partition(":")
    if kind == "venue":
        return {"venue": name}
    if kind == "account":
        venue, _, account = name.partition("/")
        return {"venue": venue, "account": account}
    if kind == "strategy":
        return {"strategy": name}
    return {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def records(db: Database, span: Window) -> Iterator[dict[str, Any]]:
    """The events in the window, in chain order, each as an export record."""
    where, params = [], []
    if span.start:
        where.append("at >= ?")
        params.append(span.start)
    if span.end:
        where.append("at < ?")
        params.append(span.end)
    incident_scopes: dict[str, str | None] = {}
    after = None
    while True:
        clauses = [*where, "id > ?"] if after is not None else where
        args = (*params, after) if after is not None else tuple(params)
        sql = (
            "SELECT id, seq, at, kind, actor, source, host, scope, incident_id, reason, data,"
            " prev_hash, hash FROM events"
        )
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        rows = db.query(sql + f" ORDER BY id LIMIT {BATCH}", args)
        if not rows:
            return
        for row in rows:
            inc = row["incident_id"]
            if inc is not None and inc not in incident_scopes:
                found = db.one("SELECT scope FROM incidents WHERE id = ?", (inc,))
                incident_scopes[inc] = found["scope"] if found else None
            yield _record(row, incident_scopes.get(inc) if inc else None)
        after = rows[-1]["id"]


def _record(row: dict[str, Any], incident_scope: str | None) -> dict[str, Any]:
    try:
        data = loads(row["data"])
    except ValueError:
        data = row["data"]  # not JSON (not written by rollbot): given as it is
    payload = data if isinstance(data, dict) else {}
    # the event's own scope first, then what its payload names, then its incident's scope
    parts = {**_scope_parts(incident_scope), **_pick(payload), **_scope_parts(row["scope"])}
    return {
        "seq": row["seq"],
        "event_id": row["id"],
        "at": row["at"],
        "actor": row["actor"],
        "os_user": _text(payload.get("os_user")),
        "source": row["source"],
        "host": row["host"],
        "kind": row["kind"],
        "reason": row["reason"],
        "incident_id": row["incident_id"],
        "scope": row["scope"],
        "incident_scope": incident_scope,
        "venue": parts.get("venue"),
        "account": parts.get("account"),
        "strategy": parts.get("strategy"),
        "symbol": _text(payload.get("symbol")),
        "order_id": _text(payload.get("client_order_id")) or _text(payload.get("order_id")),
        "data": data,
        "prev_hash": row["prev_hash"],
        "hash": row["hash"],
    }


def _pick(payload: dict[str, Any]) -> dict[str, str]:
    return {k: v for k in ("venue", "account", "strategy") if (v := _text(payload.get(k)))}


def defuse(value: Any) -> str:
    """A CSV cell: None is empty, a payload is its JSON, and text a spreadsheet would run as a
    formula is prefixed with ' (OWASP): `=HYPERLINK(...)` in a reason stays text."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return "'" + text if text.startswith(FORMULA_LEAD) else text


def write(rows: Iterator[dict[str, Any]], fmt: Format, stream: IO[str]) -> int:
    count = 0
    if fmt == "csv":
        writer = csv.writer(stream, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        for record in rows:
            writer.writerow([defuse(record[c]) for c in COLUMNS])
            count += 1
    else:
        for record in rows:
            # ASCII: a U+2028 in a reason would split the line for some readers
            stream.write(json.dumps(record, sort_keys=False, ensure_ascii=True) + "\n")
            count += 1
    return count


def export_to_file(db: Database, span: Window, fmt: Format, out: Path) -> int:
    """Written whole to a temporary file beside `out`, then renamed: an interrupted export
    never leaves a partial trail under the name asked for. An existing file is refused."""
    if out.exists():
        raise BadInput(f"--out {str(out)!r} already exists: an export never overwrites a file.")
    if not out.parent.is_dir():
        raise BadInput(f"--out {str(out)!r}: directory {str(out.parent)!r} does not exist.")
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as stream:
            count = write(records(db, span), fmt, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return count
