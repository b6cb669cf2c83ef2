"""What a rollbot database holds, read from the database itself: its tables, their columns in
order, and its named indexes, the same shape on both backends. The SQLite side reads through
sqlite-utils (its introspection is the part of it that serves here); PostgreSQL's through
information_schema and pg_indexes. Used to prove both backends' migrations build one schema, and
by tools that move rows between them (columns to copy, in order)."""

from __future__ import annotations

from typing import Any

# the backends' own bookkeeping, not rollbot's schema
INTERNAL_TABLES = {"schema_version", "sqlite_sequence", "sqlite_stat1"}
# columns PostgreSQL adds where SQLite has an implicit one (pg_migrations.py: rowid)
IMPLICIT_COLUMNS = {"rowid"}


def describe(db: Any) -> dict[str, Any]:
    """{"tables": {name: [column, ...]}, "indexes": {name: table}}."""
    if db.dialect == "sqlite":
        utils = db.utils
        tables = {
            t.name: [c.name for c in t.columns]
            for t in utils.tables
            if t.name not in INTERNAL_TABLES
        }
        indexes = {
            i.name: t.name
            for t in utils.tables
            for i in t.indexes
            if not i.name.startswith("sqlite_autoindex_")
        }
        return {"tables": tables, "indexes": indexes}
    cols = db.query(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
    )
    tables: dict[str, list[str]] = {}
    for r in cols:
        if r["table_name"] in INTERNAL_TABLES or r["column_name"] in IMPLICIT_COLUMNS:
            continue
        tables.setdefault(r["table_name"], []).append(r["column_name"])
    constraint_indexes = {
        r["conname"]
        for r in db.query(
            "SELECT conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
            " WHERE n.nspname = current_schema() AND c.contype IN ('p', 'u')"
        )
    }
    indexes = {
        r["indexname"]: r["tablename"]
        for r in db.query(
            "SELECT indexname, tablename FROM pg_indexes WHERE schemaname = current_schema()"
        )
        if r["indexname"] not in constraint_indexes and r["tablename"] not in INTERNAL_TABLES
    }
    return {"tables": tables, "indexes": indexes}
