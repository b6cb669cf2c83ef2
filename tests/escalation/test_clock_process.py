"""The clock process for real: `rollbot clock` subprocesses on one SQLite file. SIGKILLed while a
deadline is pending, then restarted (twice at once) after the deadline passed: the escalation
fires exactly once — not twice, not never — and carries on."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from escalation.helpers import (
    CTO,
    DESK,
    DEVOPS,
    RISK,
    dm_targets,
    events,
    make_settings,
    open_incident,
    operator,
    thread_texts,
)
from rollbot.clock import SystemClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.paging.escalation import start_escalation
from rollbot.config import KillSwitchesConfig, load_settings
from rollbot.storage.timers import Timers

ROLLBOT = str(Path(sys.executable).with_name("rollbot"))


class ClockProcess:
    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    async def ready(self, timeout: float = 60) -> str:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        text = line.decode()
        assert "rollbot clock ready" in text, self.log.read_text() + text
        return text


@asynccontextmanager
async def clock_processes(config: Path, tmp_path: Path) -> AsyncIterator[Callable]:  # type: ignore[type-arg]
    started: list[ClockProcess] = []

    async def spawn(name: str) -> ClockProcess:
        log = tmp_path / f"{name}.log"
        proc = await asyncio.create_subprocess_exec(
            ROLLBOT,
            "--config",
            str(config),
            "clock",
            stdout=asyncio.subprocess.PIPE,
            stderr=log.open("wb"),
        )
        started.append(ClockProcess(proc, log))
        return started[-1]

    try:
        yield spawn
    finally:
        for p in started:
            if p.proc.returncode is None:
                p.proc.kill()
                await p.proc.wait()


async def wait_for(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_sigkill_with_a_pending_deadline_then_restart_fires_it_exactly_once(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    settings = make_settings(tmp_path, wait_minutes=0.03, repeat=0)  # 1.8 s a tier
    # the clock also runs the risk monitor; keep its first tick out of this test's few seconds
    settings.kill_switches = KillSwitchesConfig(interval_s=3600)
    config = write_config(settings)
    rb = Rollbot.open(load_settings(config), clock=SystemClock())
    try:
        async with clock_processes(config, tmp_path) as spawn:
            first = await spawn("clock-1")
            await first.ready()

            inc = open_incident(rb)
            start_escalation(rb, inc, operator())
            [deadline] = Timers(rb.db, rb.clock).pending(kind="escalation")
            await asyncio.sleep(0.3)  # the clock has read the deadline and set its alarm
            assert Timers(rb.db, rb.clock).get(deadline.id).pending  # type: ignore[union-attr]
            first.proc.send_signal(signal.SIGKILL)
            assert await first.proc.wait() == -signal.SIGKILL
            assert sorted(dm_targets(rb)) == sorted([RISK, DESK])

            # the deadline passes while no clock runs
            while rb.clock.now() <= deadline.due_at:
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.3)
            assert sorted(dm_targets(rb)) == sorted([RISK, DESK])  # never fired while down

            # two clocks come back at once: one fires the overdue deadline, the other sees it
            # fired; both then keep alarms for the next deadline, which fires once too
            second, third = await spawn("clock-2"), await spawn("clock-3")
            await asyncio.gather(second.ready(), third.ready())
            await wait_for(lambda: any(e.kind == "ESCALATION_EXHAUSTED" for e in rb.events.list()))
            await asyncio.sleep(1.5)  # room for a duplicate to show up, were there one

            assert sorted(dm_targets(rb)) == sorted([RISK, DESK, CTO, DEVOPS])
            pinged = [(e.data["tier"], e.data["round"]) for e in events(rb, "ESCALATION_PINGED")]
            assert pinged == [(1, 1), (2, 1)]
            fired = [e.data for e in events(rb, "TIMER_FIRED")]
            assert fired[0]["timer_id"] == deadline.id
            assert len(fired) == 2 and len({f["timer_id"] for f in fired}) == 2
            restart_fire = fired[0]
            assert restart_fire["via"] == "startup" and restart_fire["lag_s"] > 0.3
            # an alarm in whichever clock, or the start of the slower one: once either way
            assert fired[1]["via"] in ("scheduler", "startup") and fired[1]["lag_s"] >= 0
            exhausted = [t for t in thread_texts(rb, inc) if "is exhausted" in t]
            assert len(exhausted) == 1
            assert len(events(rb, "ESCALATION_EXHAUSTED")) == 1

            for p in (second, third):
                p.proc.send_signal(signal.SIGTERM)
            codes = await asyncio.gather(second.proc.wait(), third.proc.wait())
            assert codes == [0, 0], [p.log.read_text() for p in (second, third)]
    finally:
        rb.db.close()
