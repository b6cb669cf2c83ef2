"""Figure 7 — scale (issue 18): every figure on an empty database and on a history database
(10,000 closed incidents, ~1,000,000 events: bench/history.py), side by side.

- Acks while the clock's periodic work runs: the real bot in this process with its clock, the
  auditor (sweeps, lost pages, overdue deadlines) every second instead of every 30 s, and signed
  /positions requests one after another meanwhile. Target p99 <= 100 ms and max <= 500 ms.
- The event loop's lag meanwhile (bot/loop_lag.py's probe on the bot's loop): p99 <= 20 ms.
- `rollbot serve` from exec to its first ack (the clock's start-up sweep runs before it).
- A /kill over 50,000 resting orders on 10 paper venues at 25 ms a round trip, until every
  order is cancelled in the books and step 1 has read them back: <= 0.5 s; the floor is two
  round trips (the cancel, the read-back).
- A full rollback of 2,000 positions beside one of 500: the exponent of its growth (1 is
  linear); the floor of each is a bare SQLite commit per close.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from fakes.rollbot_harness import secrets_for
from fakes.slack import FakeSlack

from bench import full_rollback, history
from bench.common import (
    OPERATOR,
    OPS,
    BookWatcher,
    Figure,
    Sizes,
    paper_venues,
    seed_books,
    settings_for,
)
from bench.loopback import settle
from bench.serve_process import serve_process
from rollbot.bot.loop_lag import LoopLagProbe
from rollbot.bot.slack.server import Server
from rollbot.clock import iso
from rollbot.config import Settings

DBS = ("empty", "history")


@dataclass
class ScaleSizes:
    history_incidents: int = 10_000
    history_events: int = 1_000_000
    periodic_s: float = 4.0  # requests sent while the auditor runs every second
    request_gap_s: float = 0.02
    start_runs: int = 2
    kill_runs: int = 3
    kill_orders: int = 50_000
    kill_venues: int = 10
    rollback_small: int = 500
    rollback_large: int = 2_000
    rollback_runs: int = 1

    @classmethod
    def of(cls, sizes: Sizes) -> ScaleSizes:
        if sizes == Sizes.tiny():
            return cls(
                history_incidents=40,
                history_events=800,
                periodic_s=1.2,
                request_gap_s=0.05,
                start_runs=1,
                kill_runs=1,
                kill_orders=300,
                kill_venues=3,
                rollback_small=10,
                rollback_large=40,
            )
        return cls()


def prepare(root: Path, db: str, scale: ScaleSizes) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if db == "history":
        history.place(root, scale.history_incidents, scale.history_events)


def floor_note(value: float, floor: float, what: str) -> str:
    shown = f"{floor * 1000:.1f} ms" if floor >= 0.001 else f"{floor * 1e6:.0f} µs"
    return f"floor {shown} ({what}): {value / floor:.1f} x the floor"


def bare_commit_s(root: Path, runs: int = 50) -> float:
    """One INSERT + COMMIT in WAL mode on this disk: the least a durable step can cost."""
    conn = sqlite3.connect(root / "floor.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
    samples = []
    for i in range(runs):
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?)", (i,))
        conn.execute("COMMIT")
        samples.append(time.perf_counter() - t0)
    conn.close()
    return statistics.median(samples)


# -- acks and loop lag while the clock's periodic work runs ---------------------------------------
async def periodic(scale: ScaleSizes, sizes: Sizes, root: Path, db: str) -> dict[str, list[float]]:
    venues = paper_venues(root, 3, latency_ms=sizes.latency_ms)
    prepare(root, db, scale)
    seed_books(venues, positions=30, orders=30)
    base = settings_for(root, venues)
    settings: Settings = base.model_copy(
        update={"escalation": base.escalation.model_copy(update={"auditor_interval_s": 1.0})}
    )
    probe = LoopLagProbe(interval_s=0.005, window=100_000)
    stop = asyncio.Event()
    lag_task = asyncio.create_task(probe.run(stop))
    acks: list[float] = []
    async with FakeSlack() as slack:
        server = Server(settings, secrets_for(slack), http=True, port=0, start_clock=True)
        await server.start()
        try:
            url = f"http://127.0.0.1:{server.bound_port}/slack/events"
            ends = time.perf_counter() + scale.periodic_s
            while time.perf_counter() < ends:
                resp = await slack.http_slash_command(
                    url, "/positions", "", user_id=OPERATOR, channel_id=OPS
                )
                if resp.status != 200:
                    raise RuntimeError(f"/positions got HTTP {resp.status}")
                acks.append(resp.latency * 1000)
                await asyncio.sleep(scale.request_gap_s)
            await settle(server)
        finally:
            stop.set()
            await lag_task
            await server.stop()
    return {"acks": acks, "lag": [x * 1000 for x in probe.recent]}


async def serve_start(sizes: Sizes, root: Path, db: str, scale: ScaleSizes) -> float:
    venues = paper_venues(root, 3, latency_ms=sizes.latency_ms)
    prepare(root, db, scale)
    seed_books(venues, positions=30, orders=30)
    async with FakeSlack() as slack, serve_process(root, slack, venues) as bot:
        resp = await slack.http_slash_command(
            bot.url, "/positions", "", user_id=OPERATOR, channel_id=OPS
        )
        if resp.status != 200:
            raise RuntimeError(f"/positions after start got HTTP {resp.status}")
        started = time.perf_counter() - bot.started
        await slack.wait_until(lambda: bool(slack.responses()), timeout=30)  # its reply too
        return started


# -- the big kill ---------------------------------------------------------------------------------
async def big_kill(sizes: Sizes, root: Path, db: str, scale: ScaleSizes) -> dict[str, float]:
    venues = paper_venues(root, scale.kill_venues, latency_ms=sizes.latency_ms)
    prepare(root, db, scale)
    seed_books(venues, positions=scale.kill_venues * 10, orders=scale.kill_orders, seed=18)
    probe = LoopLagProbe(interval_s=0.005, window=100_000)
    stop = asyncio.Event()
    async with FakeSlack() as slack:
        server = Server(settings_for(root, venues), secrets_for(slack), http=True, port=0)
        server.start_clock = False
        await server.start()
        try:
            assert server.rb is not None
            server.rb.venues()  # the books are opened before the clock starts, as in serve
            url = f"http://127.0.0.1:{server.bound_port}/slack/events"
            books = BookWatcher(venues)
            lag_task = asyncio.create_task(probe.run(stop))
            since = iso(server.rb.clock.now())
            started = time.perf_counter()
            request = asyncio.create_task(
                slack.http_slash_command(
                    url, "/kill", "bench: 50,000 orders", user_id=OPERATOR, channel_id=OPS
                )
            )
            done_at = None
            # the watcher shares the bot's loop: a persistent connection, the new incident's
            # step reports by index, and the books counted only once step 1 has ended
            ledger = sqlite3.connect(root / "rollbot.db", timeout=5)
            incident = None
            while done_at is None:
                if time.perf_counter() - started > 60:
                    raise TimeoutError("kill: orders still open after 60 s")
                if incident is None:
                    row = ledger.execute(
                        "SELECT id FROM incidents WHERE opened_at >= ? ORDER BY seq DESC LIMIT 1",
                        (since,),
                    ).fetchone()
                    incident = row[0] if row else None
                step1 = (
                    incident
                    and ledger.execute(
                        "SELECT 1 FROM events WHERE incident_id = ? AND kind = 'STEP_ENDED'"
                        " AND json_extract(data, '$.step') = 1",
                        (incident,),
                    ).fetchone()
                )
                if step1 and books.open_orders() == 0:
                    done_at = time.perf_counter()
                await asyncio.sleep(0.005)
            ledger.close()
            stop.set()
            await lag_task
            books.close()
            ack = await request
            if ack.status != 200:
                raise RuntimeError(f"/kill got HTTP {ack.status}")
            await settle(server, timeout=60)
        finally:
            stop.set()
            await server.stop()
    return {"kill": done_at - started, "lag_max": max(probe.recent, default=0) * 1000}


# -- the big rollback -----------------------------------------------------------------------------
async def rollback(sizes: Sizes, root: Path, db: str, positions: int, scale: ScaleSizes) -> float:
    prepare(root, db, scale)
    run_sizes = replace(sizes, rollback_positions=positions, rollback_orders=positions // 4)
    return (await full_rollback.one_run(run_sizes, root))["total"]


async def run(sizes: Sizes, root: Path) -> list[Figure]:
    scale = ScaleSizes.of(sizes)
    history.cached(scale.history_incidents, scale.history_events)  # built once, outside timing
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        commit_s = bare_commit_s(Path(tmp))
    rtt_s = sizes.latency_ms / 1000
    figures: list[Figure] = []
    where = (
        f"history = {scale.history_incidents:,} closed incidents, {scale.history_events:,} events"
    )
    for db in DBS:
        p = await periodic(scale, sizes, root / f"periodic-{db}", db)
        figures += [
            Figure(
                key=f"scale_ack_periodic_{db}",
                title=f"Ack during the clock's periodic work ({db} DB)",
                unit="ms",
                samples=p["acks"],
                target=100,
                target_text="p99 <= 100 ms",
                note=f"{len(p['acks'])} /positions one after another for {scale.periodic_s:g} s"
                f" while the auditor sweeps every 1 s, bot in process; {where}",
            ),
            Figure(
                key=f"scale_ack_periodic_max_{db}",
                title=f"Ack during the periodic work, max ({db} DB)",
                unit="ms",
                samples=[max(p["acks"])],
                target=500,
                target_text="max <= 500 ms",
            ),
            Figure(
                key=f"scale_loop_lag_{db}",
                title=f"Event loop lag during the periodic work ({db} DB)",
                unit="ms",
                samples=p["lag"] or [0.0],
                target=20,
                target_text="p99 <= 20 ms",
                note=f"a 5 ms sleeper on the bot's loop; max {max(p['lag'], default=0):.0f} ms",
            ),
        ]
        starts = [
            await serve_start(sizes, root / f"start-{db}-{i}", db, scale)
            for i in range(scale.start_runs)
        ]
        figures.append(
            Figure(
                key=f"scale_serve_start_{db}",
                title=f"`rollbot serve`: exec to first ack ({db} DB)",
                unit="s",
                samples=starts,
                note="the clock's start-up sweep runs meanwhile",
            )
        )
        kills = [
            await big_kill(sizes, root / f"kill-{db}-{i}", db, scale)
            for i in range(scale.kill_runs)
        ]
        worst = max(k["kill"] for k in kills)
        figures += [
            Figure(
                key=f"scale_kill_{db}",
                title=f"/kill: {scale.kill_orders:,} orders cancelled and read back ({db} DB)",
                unit="s",
                samples=[k["kill"] for k in kills],
                target=0.5,
                target_text="<= 0.5 s",
                bound=2 * rtt_s,
                note=f"{scale.kill_orders:,} resting orders over {scale.kill_venues} paper"
                f" venues at {sizes.latency_ms:g} ms; {scale.kill_runs} runs; "
                + floor_note(worst, 2 * rtt_s, "two round trips: cancel, read-back"),
            ),
            Figure(
                key=f"scale_kill_loop_max_{db}",
                title=f"/kill: longest event loop stall meanwhile ({db} DB)",
                unit="ms",
                samples=[k["lag_max"] for k in kills],
                note="a 5 ms sleeper on the bot's loop",
            ),
        ]
        small = [
            await rollback(sizes, root / f"rb-{db}-s{i}", db, scale.rollback_small, scale)
            for i in range(scale.rollback_runs)
        ]
        large = [
            await rollback(sizes, root / f"rb-{db}-l{i}", db, scale.rollback_large, scale)
            for i in range(scale.rollback_runs)
        ]
        ratio = statistics.median(large) / statistics.median(small)
        # below 0 only when noise beats the work (tiny sizes): read as "no growth"
        exponent = max(0.0, math.log(ratio) / math.log(scale.rollback_large / scale.rollback_small))
        per_close = statistics.median(large) / scale.rollback_large
        figures += [
            Figure(
                key=f"scale_rollback_{db}",
                title=f"Full rollback of {scale.rollback_large:,} positions ({db} DB)",
                unit="s",
                samples=large,
                bound=scale.rollback_large * commit_s,
                note=f"3 paper venues at {sizes.latency_ms:g} ms; {scale.rollback_small:,}"
                f" positions took {statistics.median(small):.2f} s; per close"
                f" {per_close * 1000:.2f} ms; "
                + floor_note(per_close, commit_s, "a bare SQLite commit per close"),
            ),
            Figure(
                key=f"scale_rollback_growth_{db}",
                title=f"Rollback growth exponent, {scale.rollback_small:,} ->"
                f" {scale.rollback_large:,} positions ({db} DB)",
                unit="",
                samples=[exponent],
                target=1.15,
                target_text="<= 1.15 (1 = linear)",
                note="log(time ratio) / log(position ratio)",
            ),
        ]
    return figures
