"""Figure 10 — the same kill figures with the shared state on PostgreSQL: ack p99 (bench 1),
/kill to every order cancelled and to the hold stored (bench 2), and `rollbot kill trigger`
exec to hold stored (bench 2b), each desk on a database of its own on one local server.

The server is tests/pg_server.py's (the pgserver wheel's binaries, a Unix socket) but durable:
fsync and synchronous commit on, PostgreSQL's defaults, so each commit waits for its WAL flush;
SQLite's figures beside them run WAL with synchronous=NORMAL (no flush per commit). What these
add to SQLite's is PostgreSQL's cost on one machine: a client/server round trip per statement
and the writers' advisory lock (storage/postgres.py), not a network between hosts.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from pg_server import PgServer

from bench import ack_latency, kill_latency, kill_startup
from bench.common import PG, Figure, Sizes, pg_forget

# the break-glass figure without its full-CLI comparison: that one measures imports, not storage
BENCHES = (
    ("ack_latency", ack_latency.run),
    ("kill_latency", kill_latency.run),
    ("kill_startup", partial(kill_startup.run, full_cli=False)),
)


async def run(sizes: Sizes, root: Path) -> list[Figure]:
    server = PgServer(durable=True).start()
    PG["server"] = server
    out: list[Figure] = []
    try:
        for name, bench in BENCHES:
            for figure in await bench(sizes, root / name):
                out.append(
                    figure.model_copy(
                        update={
                            "key": f"{figure.key}_postgresql",
                            "title": f"PostgreSQL: {figure.title}",
                            "note": f"{figure.note}; the database on PostgreSQL"
                            f" {server.version()} (fsync on)".lstrip("; "),
                        }
                    )
                )
    finally:
        pg_forget()
        server.stop()
    return out
