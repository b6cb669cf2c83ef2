"""Two hosts (issue 19): 1,000 randomized trials of retried deliveries, double clicks and
concurrent votes spread by the loopback Slack over two `rollbot serve` processes (separate
working directories and host ids, one database), then the audit (tests/hosts/any_host.py): no
incident, hold, step, vote, execution or order twice; then each host SIGKILLed in turn and
/kill sent to the other. `make test` runs a 150-trial sample of the same code on each backend
(tests/hosts/test_any_host.py); this is the full count, on SQLite (one machine's shared file)
and on PostgreSQL (the store hosts on different machines share: tests/pg_server.py's server,
durable as in figure 11 — fsync and synchronous commit on)."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import _write_config  # tests/: the config writer the tests use
from hosts.any_host import audit, kill_while_each_host_dead, run_trials, summary, two_serves
from pg_server import PgServer

from bench.common import Figure, Sizes
from rollbot.config import DatabaseConfig
from rollbot.storage.backends import open_database


async def on_database(
    sizes: Sizes, root: Path, database: DatabaseConfig, label: str, suffix: str
) -> list[Figure]:
    root.mkdir(parents=True, exist_ok=True)

    def write(settings: object, name: str) -> Path:
        return _write_config(settings, root / name)  # type: ignore[arg-type]

    async with two_serves(root, database, write) as (slack, a, b, rb):
        started = time.perf_counter()
        tally = await run_trials(slack, rb, sizes.host_trials)
        seconds = time.perf_counter() - started
        db = open_database(database)
        try:
            audit(db, tally)
        finally:
            db.close()
        note = f"{label}: {summary(tally, seconds)}"
        if tally.problems:
            raise AssertionError(f"{note}: {tally.problems}")
        dead = await kill_while_each_host_dead(slack, a, b, rb)
    broken = [p for k in dead for p in k.problems]
    if broken:
        raise AssertionError(f"{label}: /kill while a host was dead: {broken}")
    return [
        Figure(
            key=f"two_hosts_trials{suffix}",
            title=f"Two hosts on {label}: randomized retries, double clicks, votes — duplicates",
            unit="duplicates",
            samples=[float(len(tally.problems))],
            note=f"{note} (any duplicate fails this benchmark)",
        ),
        Figure(
            key=f"two_hosts_ack{suffix}",
            title=f"Two hosts on {label}: Socket Mode ack, either host, under the trials",
            unit="s",
            samples=tally.acks,
            target=3.0,
            target_text="< 3 s (Slack's limit)",
        ),
        Figure(
            key=f"two_hosts_dead_ack{suffix}",
            title=f"Two hosts on {label}: /kill to one host while the other is SIGKILLed — ack",
            unit="s",
            samples=[k.ack_s for k in dead],
            target=3.0,
            target_text="< 3 s (Slack's limit)",
            note="; ".join(
                f"{k.alive} with {k.dead} dead: {k.ack_s * 1000:.0f} ms, held and done"
                for k in dead
            ),
        ),
    ]


async def run(sizes: Sizes, tmp: Path) -> list[Figure]:
    root = tmp / "two_hosts"
    lite = DatabaseConfig(path=root / "sqlite" / "shared.db", busy_timeout_ms=10_000)
    out = await on_database(sizes, root / "sqlite", lite, "SQLite", "")
    server = PgServer(durable=True).start()
    try:
        url = server.new_database(migrated=False)  # the hosts migrate it, as on SQLite
        pg = DatabaseConfig(url=url, busy_timeout_ms=10_000)
        label = f"PostgreSQL {server.version()}"
        out += await on_database(sizes, root / "postgresql", pg, label, "_postgresql")
    finally:
        server.stop()
    return out
