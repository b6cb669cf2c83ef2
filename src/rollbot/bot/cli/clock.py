"""`rollbot clock`: the clock process on its own — escalation deadlines, checklist reminders,
webhook pages and the auditor — until SIGTERM. (`rollbot serve` runs the same Clockwork.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from rollbot.bot.cli.shared import LogJson, LogLevel, guarded, settings, slack_probe_for


def clock(log_level: LogLevel = None, log_json: LogJson = False) -> None:
    """Fire escalation deadlines, checklist reminders and webhook pages until SIGTERM."""
    from rollbot.bot import logs

    guarded(lambda: logs.configure(log_level, log_json))
    guarded(lambda: asyncio.run(_run()))


async def _run() -> None:
    from rollbot.bot.scheduler import Clockwork
    from rollbot.commands.desk.context import Rollbot

    rb = Rollbot.open(settings())
    clockwork = Clockwork(rb, slack_probe=slack_probe_for(rb))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await clockwork.start()
        ready = (
            f"rollbot clock ready: {clockwork.pending_count()} pending deadline(s), auditor every "
            f"{rb.settings.escalation.auditor_interval_s:g} s, database {rb.db.path}"
        )
        print(ready, flush=True)
        logging.getLogger("rollbot.clock").info(ready)  # the log's first line says who started
        for note in clockwork.dead_mans_switch_notes:
            print(note, flush=True)
        await stop.wait()
        print("rollbot clock stopping…", file=sys.stderr, flush=True)
        for note in await clockwork.disarm_dead_mans_switch("rollbot clock stopped by a signal"):
            print(note, file=sys.stderr, flush=True)
    finally:
        clockwork.shutdown()
        await rb.aclose()
