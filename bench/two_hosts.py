"""Two hosts (issue 19): 1,000 randomized trials of retried deliveries, double clicks and
concurrent votes spread by the loopback Slack over two `rollbot serve` processes (separate
working directories and host ids, one database), then the audit (tests/hosts/any_host.py): no
incident, hold, step, vote, execution or order twice. `make test` runs a 150-trial sample of the
same code (tests/hosts/test_any_host.py); this is the full count."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import _write_config  # tests/: the config writer the tests use
from hosts.any_host import audit, run_trials, summary, two_serves

from bench.common import Figure, Sizes
from rollbot.storage.db import Database


async def run(sizes: Sizes, tmp: Path) -> list[Figure]:
    root = tmp / "two_hosts"
    root.mkdir(parents=True, exist_ok=True)
    db_path = root / "shared.db"

    def write(settings: object, name: str) -> Path:
        return _write_config(settings, root / name)  # type: ignore[arg-type]

    async with two_serves(root, db_path, write) as (slack, _a, _b, rb):
        started = time.perf_counter()
        tally = await run_trials(slack, rb, sizes.host_trials)
        seconds = time.perf_counter() - started
    db = Database(db_path)
    try:
        audit(db, tally)
    finally:
        db.close()
    note = summary(tally, seconds)
    if tally.problems:
        raise AssertionError(f"{note}: {tally.problems}")
    return [
        Figure(
            key="two_hosts_trials",
            title="Two hosts: randomized retries, double clicks, votes — duplicates found",
            unit="duplicates",
            samples=[float(len(tally.problems))],
            note=f"{note} (any duplicate fails this benchmark)",
        ),
        Figure(
            key="two_hosts_ack",
            title="Two hosts: Socket Mode ack, either host, under the trials",
            unit="s",
            samples=tally.acks,
            target=3.0,
            target_text="< 3 s (Slack's limit)",
        ),
    ]
