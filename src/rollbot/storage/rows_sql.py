"""One INSERT for many rows: a burst's rows written in one statement, one round trip, where a
statement per row was one each (PostgreSQL pays every round trip before a kill's ack)."""

from __future__ import annotations

from functools import lru_cache

# rows per statement: far inside SQLite's 32,766 parameters and PostgreSQL's 65,535 for every
# table here (the widest, events, has 12 columns)
MAX_ROWS = 500


@lru_cache(maxsize=256)
def rows_sql(one_row: str, rows: int) -> str:
    """`INSERT ... VALUES (?, ...) [tail]` for one row, made one for `rows` rows: the VALUES
    group repeated, whatever follows it (ON CONFLICT, RETURNING) kept once, at the end."""
    head, sep, rest = one_row.partition(" VALUES ")
    if not sep or not rest.startswith("("):
        raise ValueError(f"not a one-row INSERT ... VALUES (...): {one_row[:60]!r}")
    group, tail = rest[: rest.index(")") + 1], rest[rest.index(")") + 1 :]
    if rows < 1 or "(" in group[1:]:
        raise ValueError(f"cannot repeat the VALUES group of {one_row[:60]!r} {rows} times")
    return f"{head} VALUES " + ", ".join([group] * rows) + tail
