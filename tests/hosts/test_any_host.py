"""Any host takes any command or click (point 2 of issue 19): randomized trials over two
`rollbot serve` processes (tests/hosts/any_host.py) — retried deliveries, double clicks and
concurrent votes, spread by Slack over both hosts' connections — give no duplicate incident,
hold, step, vote, execution or order. `make test` runs a sample (TRIALS) on each backend; the
1,000-trial run is `python -m bench.run --only two_hosts` (bench/two_hosts.py). Then each host in
turn is SIGKILLed and /kill sent to the other: acked within Slack's 3 s, and it holds."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from hosts.any_host import (
    audit,
    kill_while_each_host_dead,
    run_trials,
    summary,
    two_serves,
)
from hosts.desk import FIGURES, backend_of
from rollbot.config import DatabaseConfig
from rollbot.storage.backends import open_database

TRIALS = int(os.environ.get("ROLLBOT_HOST_TRIALS", "150"))


async def test_retries_clicks_and_votes_across_two_hosts_happen_once_and_kill_holds_when_one_dies(
    tmp_path: Path, shared_db: Callable[[str], DatabaseConfig], write_config: Callable[..., Path]
) -> None:
    database = shared_db("any-host")
    on = backend_of(database)
    async with two_serves(tmp_path, database, write_config) as (slack, a, b, rb):
        started = time.perf_counter()
        tally = await run_trials(slack, rb, TRIALS)
        seconds = time.perf_counter() - started
        db = open_database(database)
        try:
            audit(db, tally)
        finally:
            db.close()
        FIGURES.append(f"{on}: {summary(tally, seconds)}")
        assert not tally.problems, tally.problems

        # each host dead in turn: /kill to the other is acked in time and holds
        for k in await kill_while_each_host_dead(slack, a, b, rb):
            FIGURES.append(
                f"{on}: /kill to {k.alive} with {k.dead} SIGKILLed: acked in"
                f" {k.ack_s * 1000:.0f} ms"
            )
            assert not k.problems, k.problems
