"""Two `rollbot serve` processes (hosts a and b) on one database, both connected to the
loopback Slack over Socket Mode; Slack spreads the envelopes over both connections. Randomized
trials of retried deliveries, double clicks and concurrent votes, the processes reused across
trials; then the audit: nothing happened twice, nothing was lost; then each host SIGKILLed in
turn and /kill sent to the other. Used by the `make test` sample (test_any_host.py) and the
1,000-trial run (`python -m bench.run --only two_hosts`), on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fakes.slack import FakeSlack
from reliability.support import OPERATORS, settings_for, write_book

from rollbot.clock import SystemClock
from rollbot.commands.approvals.two_person import Approvals
from rollbot.commands.desk.context import Rollbot
from rollbot.config import (
    ApprovalRule,
    DatabaseConfig,
    HostConfig,
    KillSwitchesConfig,
    Settings,
    SlackConfig,
)
from rollbot.storage.db import Database
from rollbot.storage.events import Actor
from rollbot.storage.postgres import PostgresDatabase

OPS = "C0OPS"
RISKS = ["U0RISK1", "U0RISK2", "U0RISK3"]  # clear_hold needs two of them
SEED = 20261201
LEASE_S = 0.5
ACK_LIMIT_S = 3.0  # Slack's: an envelope not acked within 3 s is retried, the user told


@dataclass
class Tally:
    kills: int = 0
    votes: int = 0
    retried: int = 0  # redeliveries of one envelope (Slack's retries)
    double_clicks: int = 0  # a second click by one person (a new trigger id)
    concurrent_votes: int = 0  # votes on one request sent at once
    per_host: Counter[int] = field(default_factory=Counter)  # deliveries per connection
    acks: list[float] = field(default_factory=list)
    connections: int = 0  # Socket Mode connections opened (the clients refresh them)
    rerouted: int = 0  # envelopes Slack sent again over another connection
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < 30:
            self.problems.append(text)


def host_settings(root: Path, db: DatabaseConfig, name: str) -> Settings:
    s = settings_for(root, write_book(root), rollback_needs_approval=True)
    approvals = s.approvals.model_copy(
        update={"clear_hold": ApprovalRule(quorum=2, roles=["risk_officer"])}
    )
    home = root / name
    home.mkdir(parents=True, exist_ok=True)
    return s.model_copy(
        update={
            "database": db,
            "host": HostConfig(id=name, lease_interval_s=LEASE_S),
            "roles": {"operator": list(OPERATORS), "risk_officer": list(RISKS)},
            "approvals": approvals,
            "slack": SlackConfig(ops_channel=OPS),
            "kill_switches": KillSwitchesConfig(interval_s=3600),
            "paths": s.paths.model_copy(update={"reports_dir": home / "reports"}),
        }
    )


class Serve:
    def __init__(self, name: str, config: Path, cwd: Path, slack: FakeSlack) -> None:
        self.name, self.config, self.cwd, self.slack = name, config, cwd, slack
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
        env.update(
            ROLLBOT_CONFIG=str(self.config),
            PYTHONUNBUFFERED="1",
            NO_COLOR="1",
            SLACK_API_URL=self.slack.api_url,
            SLACK_BOT_TOKEN=self.slack.bot_token,
            SLACK_APP_TOKEN=self.slack.app_token,
        )
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rollbot.bot.cli",
            "serve",
            cwd=self.cwd,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=(self.cwd / f"{self.name}.log").open("ab"),
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        assert b"rollbot ready" in line, (self.cwd / f"{self.name}.log").read_text()

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@asynccontextmanager
async def two_serves(
    root: Path, db: DatabaseConfig, write_config: Callable[..., Path]
) -> AsyncIterator[tuple[FakeSlack, Serve, Serve, Rollbot]]:
    async with FakeSlack() as slack:
        serves = []
        for name in ("host-a", "host-b"):
            settings = host_settings(root, db, name)
            serves.append(Serve(name, write_config(settings, f"{name}.toml"), root / name, slack))
        rb = Rollbot.open(host_settings(root, db, "test-desk"), clock=SystemClock())
        try:
            await serves[0].start()
            await serves[1].start()
            await slack.wait_until(lambda: len(slack.active_connections()) == 2, timeout=20)
            yield slack, serves[0], serves[1], rb
        finally:
            for s in serves:
                await s.stop()
            rb.db.close()
            keep = os.environ.get("ROLLBOT_KEEP_LOGS")
            if keep:  # the hosts' logs, for a failed soak
                for s in serves:
                    log = s.cwd / f"{s.name}.log"
                    if log.exists():
                        Path(keep, log.name).write_bytes(log.read_bytes())


async def _ack(slack: FakeSlack, envelope_id: str, tally: Tally) -> None:
    ack = await slack.wait_for_ack(envelope_id, timeout=10)
    tally.acks.append(ack.latency)


async def kill_trial(slack: FakeSlack, rng: random.Random, n: int, tally: Tally) -> None:
    """/kill of one strategy, its envelope retried 0-3 times, some at once, some after the ack
    (Slack retries on any connection)."""
    d = await slack.deliver_slash_command(
        "/kill", f"strategy:t{n} trial {n}", user_id=rng.choice(OPERATORS), channel_id=OPS
    )
    tally.kills += 1
    for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
        if rng.random() < 0.5:
            await asyncio.sleep(rng.random() * 0.05)
        await slack.redeliver(d.envelope_id)
        tally.retried += 1
    await _ack(slack, d.envelope_id, tally)


async def vote_trial(slack: FakeSlack, rng: random.Random, approval_id: str, tally: Tally) -> None:
    """Two or three risk officers approve one request at once; some click twice (a new trigger
    id), some deliveries are retried (the same envelope)."""
    voters = rng.sample(RISKS, rng.choice((2, 3)))
    tally.votes += 1
    tally.concurrent_votes += len(voters)
    sends = []
    for voter in voters:
        clicks = 2 if rng.random() < 0.4 else 1
        tally.double_clicks += clicks - 1
        for _ in range(clicks):
            payload = slack.block_action_payload(
                "approval_approve", approval_id, user_id=voter, channel_id=OPS
            )
            sends.append(slack.deliver_block_action(payload))
    delivered = await asyncio.gather(*sends)
    for d in delivered:
        if rng.random() < 0.3:
            await slack.redeliver(d.envelope_id)
            tally.retried += 1
    await asyncio.gather(*(_ack(slack, d.envelope_id, tally) for d in delivered))


async def run_trials(
    slack: FakeSlack, rb: Rollbot, trials: int, seed: int = SEED, batch: int = 10
) -> Tally:
    """About two kill trials for each vote trial; each vote clears one earlier kill's hold."""
    rng = random.Random(seed)
    tally = Tally()
    slack.route = lambda conns: rng.choice(conns)
    kills = trials * 2 // 3
    for start in range(0, kills, batch):
        await asyncio.gather(
            *(kill_trial(slack, rng, n, tally) for n in range(start, min(kills, start + batch)))
        )
    await settle(rb, kills)
    held = rb.db.query(
        "SELECT id, scope FROM holds WHERE cleared_at IS NULL AND scope LIKE 'strategy:t%'"
    )
    rng.shuffle(held)
    requester = Actor(id=OPERATORS[0], source="slack")

    async def ask() -> list[str]:
        # in a thread with its own loop and connection: this loop serves the fake Slack, and
        # a write waiting on the hosts' lock here would stall its websockets (pings unanswered)
        desk = Rollbot.open(rb.settings, clock=SystemClock())
        try:
            out = []
            for hold in held[: trials - kills]:
                req = await Approvals(desk).request(
                    "clear_hold",
                    {"scope": hold["scope"], "hold_ids": [hold["id"]]},
                    requester,
                    f"trial: clear {hold['scope']}",
                )
                out.append(req.id)
            return out
        finally:
            desk.db.close()

    asked = await asyncio.to_thread(lambda: asyncio.run(ask()))
    for start in range(0, len(asked), batch):
        await asyncio.gather(
            *(vote_trial(slack, rng, a, tally) for a in asked[start : start + batch])
        )
    deadline = time.monotonic() + 60
    while rb.db.one("SELECT 1 FROM approvals WHERE status IN ('PENDING', 'EXECUTING')"):
        assert time.monotonic() < deadline, "approvals still undecided after 60 s"
        await asyncio.sleep(0.05)
    for d in slack.deliveries():
        tally.per_host[d.connection_id] += 1
    tally.connections, tally.rerouted = len(slack.connections()), slack.rerouted
    slack.route = None
    return tally


async def settle(rb: Rollbot, incidents: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        row = rb.db.one(
            "SELECT COUNT(*) AS n, SUM(CASE WHEN phase = 'DONE' THEN 1 ELSE 0 END) AS done"
            " FROM incidents WHERE kind = 'kill'"
        )
        if row and row["n"] >= incidents and row["done"] == row["n"]:
            return
        assert time.monotonic() < deadline, f"kills not all done after {timeout} s: {row}"
        await asyncio.sleep(0.05)


def audit(db: Database | PostgresDatabase, tally: Tally) -> None:
    """Each kill trial: one incident, one hold, each step ended once; each vote trial: one
    execution clearing its one hold once, two votes counted; no order at the venue twice."""
    incidents = db.query("SELECT id, dedupe_key, scope FROM incidents WHERE kind = 'kill'")
    scopes = Counter(r["scope"] for r in incidents if r["scope"].startswith("strategy:t"))
    if len(scopes) != tally.kills or set(scopes.values()) != {1}:
        tally.problem(f"{len(scopes)} strategies killed for {tally.kills} kill trials: {scopes}")
    holds = Counter(
        r["scope"] for r in db.query("SELECT scope FROM holds WHERE scope LIKE 'strategy:t%'")
    )
    if set(holds.values()) != {1} or len(holds) != tally.kills:
        tally.problem(f"holds per killed strategy: {sorted(set(holds.values()))}")
    ended: Counter[tuple[str, int]] = Counter()
    for r in db.query("SELECT incident_id, data FROM events WHERE kind = 'STEP_ENDED'"):
        ended[(r["incident_id"], json.loads(r["data"])["step"])] += 1
    twice = {k: v for k, v in ended.items() if v != 1}
    if twice or len(ended) != 2 * len(incidents):
        tally.problem(
            f"steps ended twice {twice} or missing ({len(ended)} of {2 * len(incidents)})"
        )
    for r in db.query("SELECT id, status, result FROM approvals"):
        if r["status"] != "EXECUTED":
            tally.problem(f"{r['id']} ended {r['status']}: {r['result']}")
        votes = db.query(
            "SELECT voter FROM votes WHERE approval_id = ? AND vote = 'approve'", (r["id"],)
        )
        if len(votes) != 2:
            tally.problem(f"{r['id']}: {len(votes)} approvals counted, not 2 (quorum)")
    cleared = Counter(
        json.loads(r["data"])["hold_id"]
        for r in db.query("SELECT data FROM events WHERE kind = 'HOLD_CLEARED'")
    )
    executed = db.query("SELECT COUNT(*) AS n FROM events WHERE kind = 'APPROVAL_EXECUTED'")
    n = executed[0]["n"] if executed else 0
    if n != tally.votes:
        tally.problem(f"{n} APPROVAL_EXECUTED events for {tally.votes} requests")
    if any(v != 1 for v in cleared.values()) or len(cleared) != tally.votes:
        tally.problem(f"a hold cleared twice: {cleared}")
    orders = Counter(
        r["client_order_id"] for r in db.query("SELECT client_order_id FROM order_intents")
    )
    if any(v != 1 for v in orders.values()):
        tally.problem(f"an order twice: {orders}")
    slow = [a for a in tally.acks if a > ACK_LIMIT_S]
    if slow:
        tally.problem(f"{len(slow)} acks slower than {ACK_LIMIT_S} s (max {max(slow):.2f})")
    if len({c for c, n in tally.per_host.items() if n}) < 2:
        tally.problem(f"deliveries reached only {dict(tally.per_host)}: not spread over hosts")


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")


def summary(tally: Tally, seconds: float) -> str:
    return (
        f"{tally.kills + tally.votes} trials ({tally.kills} kills, {tally.votes} approvals) over"
        f" 2 serve processes in {seconds:.1f} s: {tally.retried} retried deliveries,"
        f" {tally.double_clicks} double clicks, {tally.concurrent_votes} concurrent votes;"
        f" deliveries per connection {sorted(tally.per_host.values())}"
        f" ({tally.connections} connections opened, {tally.rerouted} envelopes rerouted);"
        f" ack p99 {p99(tally.acks) * 1000:.0f} ms, max {max(tally.acks, default=0) * 1000:.0f} ms;"
        f" {len(tally.problems)} problems"
    )


@dataclass
class DeadHostKill:
    dead: str
    alive: str
    ack_s: float
    problems: list[str]


async def kill_while_each_host_dead(
    slack: FakeSlack, a: Serve, b: Serve, rb: Rollbot
) -> list[DeadHostKill]:
    """Each host SIGKILLed in turn, /kill sent to the other: its ack time, and whether the hold
    was stored and the kill ran to DONE; the dead host is started again before the other goes."""
    out = []
    for dead, alive in ((a, b), (b, a)):
        scope = f"strategy:while-{dead.name}-dead"
        await dead.kill()
        await slack.wait_until(lambda: len(slack.active_connections()) == 1, timeout=10)
        d = await slack.deliver_slash_command(
            "/kill", f"{scope} one host is down", user_id=OPERATORS[0], channel_id=OPS
        )
        ack = await slack.wait_for_ack(d.envelope_id, timeout=10)
        problems = []
        if ack.latency >= ACK_LIMIT_S:
            problems.append(f"acked in {ack.latency:.2f} s, over Slack's {ACK_LIMIT_S} s")
        for what, sql, timeout in (
            ("held", "SELECT 1 FROM holds WHERE scope = ? AND cleared_at IS NULL", 5),
            ("done", "SELECT 1 FROM incidents WHERE scope = ? AND phase = 'DONE'", 15),
        ):
            try:
                await slack.wait_until(
                    lambda sql=sql, scope=scope: rb.db.one(sql, (scope,)), timeout=timeout
                )
            except TimeoutError as exc:
                problems.append(f"/kill {scope} on {alive.name} not {what}: {exc}")
        out.append(DeadHostKill(dead.name, alive.name, ack.latency, problems))
        await dead.start()  # back before the other host goes
        await slack.wait_until(lambda: len(slack.active_connections()) == 2, timeout=20)
    return out
