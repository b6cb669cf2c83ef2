"""Any host takes any command or click (point 2 of issue 19): randomized trials over two
`rollbot serve` processes (tests/hosts/any_host.py) — retried deliveries, double clicks and
concurrent votes, spread by Slack over both hosts' connections — give no duplicate incident,
hold, step, vote, execution or order. `make test` runs a sample (TRIALS, ~N s); the 1,000-trial
run is `python -m bench.run --only two_hosts` (bench/two_hosts.py). Then each host in turn is
SIGKILLed and /kill sent to the other: acked within Slack's 3 s, and it holds."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from hosts.any_host import ACK_LIMIT_S, audit, run_trials, summary, two_serves
from hosts.desk import FIGURES
from rollbot.storage.db import Database

TRIALS = int(os.environ.get("ROLLBOT_HOST_TRIALS", "150"))


async def test_retries_clicks_and_votes_across_two_hosts_happen_once_and_kill_holds_when_one_dies(
    tmp_path: Path, shared_db: Callable[[str], Path], write_config: Callable[..., Path]
) -> None:
    db_path = shared_db("any-host")
    async with two_serves(tmp_path, db_path, write_config) as (slack, a, b, rb):
        started = time.perf_counter()
        tally = await run_trials(slack, rb, TRIALS)
        seconds = time.perf_counter() - started
        db = Database(db_path)
        try:
            audit(db, tally)
        finally:
            db.close()
        FIGURES.append(summary(tally, seconds))
        assert not tally.problems, tally.problems

        # each host dead in turn: /kill to the other is acked in time and holds
        for dead, alive, scope in (
            (a, b, "strategy:while-a-dead"),
            (b, a, "strategy:while-b-dead"),
        ):
            await dead.kill()
            await slack.wait_until(lambda: len(slack.active_connections()) == 1, timeout=10)
            d = await slack.deliver_slash_command(
                "/kill", f"{scope} one host is down", user_id="U0OP1", channel_id=OPS_CHANNEL
            )
            ack = await slack.wait_for_ack(d.envelope_id, timeout=ACK_LIMIT_S)
            took = f"{ack.latency * 1000:.0f} ms"
            FIGURES.append(f"/kill to {alive.name} with {dead.name} SIGKILLed: acked in {took}")
            assert ack.latency < ACK_LIMIT_S
            await slack.wait_until(
                lambda scope=scope: rb.db.one(
                    "SELECT 1 FROM holds WHERE scope = ? AND cleared_at IS NULL", (scope,)
                ),
                timeout=5,
            )
            await slack.wait_until(
                lambda scope=scope: rb.db.one(
                    "SELECT 1 FROM incidents WHERE scope = ? AND phase = 'DONE'", (scope,)
                ),
                timeout=15,
            )
            await dead.start()  # back before the other host goes
            await slack.wait_until(lambda: len(slack.active_connections()) == 2, timeout=20)


OPS_CHANNEL = "C0OPS"
