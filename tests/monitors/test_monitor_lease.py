"""One risk monitor per desk: `rollbot serve` and `rollbot clock` (or two of either) may run at
once; one holds the monitor's lease and samples, the others stand by and take over when it
stops. Two samplers would double the NAV samples the PSR and drawdown are computed from, and on
IBKR would log in twice with one client id."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from escalation.helpers import make_settings, outbox
from pg_server import BOTH

from rollbot.bot.scheduler import MONITOR_LEASE, Clockwork
from rollbot.clock import ManualClock, SystemClock
from rollbot.commands.desk.context import Rollbot
from rollbot.config import KillSwitchesConfig
from rollbot.storage.leases import Leases
from rollbot.storage.nav import NavSamples

ROLLBOT = str(Path(sys.executable).with_name("rollbot"))


@pytest.fixture(params=BOTH)
def backend(request: pytest.FixtureRequest) -> str:
    """The lease on SQLite and on PostgreSQL."""
    return request.param


def taken_over(app: Rollbot) -> list[str]:
    return [e.reason or "" for e in app.events.list(kinds=["MONITOR_TAKEN_OVER"])]


async def test_one_process_samples_the_other_stands_by_and_takes_over_when_it_stops(
    make_app: Callable[..., Rollbot], clock: ManualClock
) -> None:
    serve = make_app(kill_switches={"interval_s": 10})
    clock_face = make_app(kill_switches={"interval_s": 10})  # same database, same venues
    a, b = Clockwork(serve), Clockwork(clock_face)
    samples = NavSamples(serve.db)

    assert await a.risk_tick() is not None
    assert await b.risk_tick() is None  # a holds the lease: b neither samples nor acts
    assert len(samples.list(venue="paper")) == 1

    clock.advance(10)
    assert await a.risk_tick() is not None  # renewed until 10 + 30 s
    assert await b.risk_tick() is None
    clock.advance(29)
    assert await b.risk_tick() is None  # a missed two ticks: still its lease
    assert len(samples.list(venue="paper")) == 2
    assert taken_over(serve) == []

    clock.advance(2)  # a missed its third tick: b takes over, and says so in the channel
    assert await b.risk_tick() is not None
    assert len(samples.list(venue="paper")) == 3
    [why] = taken_over(serve)
    assert f"taken over by {b.holder.id} from {a.holder.id}" in why
    assert "it has not renewed its lease in 30 s" in why
    assert [m["payload"]["text"] for m in outbox(serve, kind="channel")] == [f"⚠️ {why}"]

    assert await a.risk_tick() is None  # a is back: it stands by now
    assert len(samples.list(venue="paper")) == 3

    b.shutdown()  # a clean stop hands the lease over at once, without an alarm
    assert Leases(serve.db).get(MONITOR_LEASE) is None
    assert await a.risk_tick() is not None
    assert len(samples.list(venue="paper")) == 4
    assert len(taken_over(serve)) == 1


async def spawn(config: Path, log: Path) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        ROLLBOT,
        "--config",
        str(config),
        "clock",
        stdout=asyncio.subprocess.PIPE,
        stderr=log.open("wb"),
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    assert "rollbot clock ready" in line, log.read_text() + line
    return proc


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_two_clock_processes_one_monitor_and_a_sigkill_hands_it_over_at_once(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    settings = make_settings(tmp_path)
    settings.kill_switches = KillSwitchesConfig(interval_s=2)  # the lease: 6 s
    config = write_config(settings)
    rb = Rollbot.open(settings, clock=SystemClock())
    leases = Leases(rb.db)
    first_log, second_log = tmp_path / "clock-1.log", tmp_path / "clock-2.log"
    started: list[asyncio.subprocess.Process] = []
    try:
        first = await spawn(config, first_log)
        started.append(first)
        await wait_for(lambda: leases.get(MONITOR_LEASE) is not None, "the first tick")
        assert leases.get(MONITOR_LEASE).pid == first.pid  # type: ignore[union-attr]

        second = await spawn(config, second_log)
        started.append(second)
        await wait_for(lambda: "stands by" in second_log.read_text(), "the second to stand by")
        assert leases.get(MONITOR_LEASE).pid == first.pid  # type: ignore[union-attr]
        assert "risk monitor: runs here" in first_log.read_text()

        first.send_signal(signal.SIGKILL)
        await first.wait()
        await wait_for(lambda: bool(taken_over(rb)), "the take-over", timeout=20)
        assert leases.get(MONITOR_LEASE).pid == second.pid  # type: ignore[union-attr]
        [why] = taken_over(rb)
        # the holder's process is gone: taken at the next tick, not once its lease ran out
        assert f"pid {first.pid}" in why and "its process has ended" in why, why
        before = len(NavSamples(rb.db).list(venue="paper"))
        await wait_for(
            lambda: len(NavSamples(rb.db).list(venue="paper")) > before, "the second's samples"
        )

        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 10) == 0
        assert leases.get(MONITOR_LEASE) is None  # released on the way out
    finally:
        for proc in started:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        rb.db.close()
