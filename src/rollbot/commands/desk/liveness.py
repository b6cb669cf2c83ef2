"""Which process did it, and is that process still running: for work claimed in the database
(an incident's run, a webhook page in flight, the risk monitor's lease) that only a dead claimer
may leave to others.

A process is its host, its pid and when it started (boot id, pid namespace and start time from
/proc): a pid alone is reused — a bot restarted in its container is pid 1 again — and a reused
pid would pass for the dead claimer, here or in another process.

Two ways to know a claimer is running:
- on this machine (the same configured host id): /proc says so at once, and a process that
  ended is known dead at once (the boot id and pid namespace in its start tell an earlier life
  of this machine, or of its container, from a running process);
- anywhere else (another host sharing the database): only its heartbeat in the database can say
  so. Every process that claims work renews a lease named after itself (`beat`) every
  `[host] lease_interval_s`; it is alive while that lease has not run out (3 intervals). /proc
  on this host knows nothing about a pid on another one, so it is never asked about it."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

from rollbot.storage.db import Database
from rollbot.storage.leases import Holder, Lease, Leases

log = logging.getLogger("rollbot.liveness")

Beat = Literal["alive", "expired", "unknown"]
BEAT_INTERVALS = 3  # a heartbeat lease runs out after this many missed renewals


@cache
def _machine() -> str | None:
    """This boot of this machine's kernel, and the pid namespace: two containers on one machine
    share a boot id, not their pids."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    try:
        ns = os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]")
    except OSError:
        return boot
    return f"{boot}/{ns}"


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces): [state, ppid, ...]."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def _started_from(stat: list[str] | None) -> str | None:
    machine = _machine()
    if machine is None or stat is None or len(stat) < 20:
        return None
    return f"{machine}:{stat[19]}"  # field 22, the start time in clock ticks since boot


def started(pid: int) -> str | None:
    """When `pid` started, unique on this machine across reboots; None where /proc cannot say."""
    return _started_from(_stat(pid))


ME: dict[str, Any] = {
    "host": socket.gethostname(),
    "pid": os.getpid(),
    "started": started(os.getpid()),
}


def me_on(host: str) -> dict[str, Any]:
    """This process, under the host id of its configuration ([host] id)."""
    return {**ME, "host": host}


def alive(pid: int, since: str | None = None) -> bool:
    """`pid` is running (not a zombie) and, when `since` is given, is the process that started
    then, not a later one given the same pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _stat(pid)
    if stat is None:
        return True  # running, and /proc cannot say more
    if stat[0] == "Z":  # killed, not yet reaped by its parent: it runs nothing
        return False
    now = _started_from(stat)
    return since is None or now is None or now == since


def is_me(claimer: dict[str, Any], me: dict[str, Any] | None = None) -> bool:
    me = me or ME
    return (
        claimer.get("host") == me["host"]
        and claimer.get("pid") == me["pid"]
        and claimer.get("started", me["started"]) == me["started"]
    )


def on_this_machine(claimer: dict[str, Any], me: dict[str, Any] | None = None) -> bool:
    """The claim was made on this machine, so /proc may be asked: the same configured host id
    ([host] id is unique per machine, README "Two hosts"). /proc then tells this process's
    earlier lives (another boot or pid namespace in `started`) from a running claimer."""
    return claimer.get("host") == (me or ME)["host"]


def live_elsewhere(
    claimer: dict[str, Any],
    me: dict[str, Any] | None = None,
    beat: Callable[[dict[str, Any]], Beat] | None = None,
) -> bool:
    """Another process, still running: on this machine by /proc, elsewhere by its heartbeat
    (`beat`, see Heartbeats.of; without it a claimer elsewhere counts as not running)."""
    me = me or ME
    pid = claimer.get("pid")
    if not pid or is_me(claimer, me):
        return False
    if on_this_machine(claimer, me):
        return alive(int(pid), claimer.get("started"))
    return beat is not None and beat(claimer) == "alive"


def heartbeat_name(claimer: dict[str, Any]) -> str:
    return f"process:{claimer.get('host')}:{claimer.get('pid')}:{claimer.get('started') or ''}"


class Heartbeats:
    """Each process's lease on itself: renewed while it runs, read by the other hosts."""

    def __init__(self, db: Database, now: Callable[[], datetime], interval_s: float) -> None:
        self.db = db
        self.now = now
        self.interval_s = interval_s

    @property
    def ttl_s(self) -> float:
        return BEAT_INTERVALS * self.interval_s

    def beat(self, me: dict[str, Any]) -> None:
        holder = Holder(
            id=heartbeat_name(me), host=me["host"], pid=me["pid"], started=me["started"]
        )
        Leases(self.db).hold(heartbeat_name(me), holder, self.now(), self.ttl_s)

    def beating(self, me: dict[str, Any]) -> threading.Event:
        """Beat every interval in a thread of its own until the returned event is set: an event
        loop busy for a moment (a start-up import, a wait on the database's lock) must not let
        another host think this process dead and run its work a second time."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.interval_s):
                try:
                    self.beat(me)
                except Exception:  # the database busy or away: the next beat tries again
                    log.warning("heartbeat: could not renew", exc_info=True)

        threading.Thread(target=loop, name="rollbot-heartbeat", daemon=True).start()
        return stop

    def stop(self, me: dict[str, Any]) -> None:
        """A clean stop: this process claims nothing any more (a run it had was interrupted and
        said so), so nobody need wait out its heartbeat."""
        name = heartbeat_name(me)
        holder = Holder(id=name, host=me["host"], pid=me["pid"], started=me["started"])
        Leases(self.db).release(name, holder)

    def of(self, claimer: dict[str, Any]) -> Beat:
        lease = Leases(self.db).get(heartbeat_name(claimer))
        if lease is None:
            return "unknown"
        return "alive" if lease.expires_at > self.now() else "expired"

    def forget_older_than(self, cutoff: datetime) -> int:
        """Heartbeats of processes that ended long ago: nobody asks about them any more."""
        return Leases(self.db).drop_expired("process:", cutoff)


def holder_gone(
    lease: Lease,
    me: dict[str, Any] | None = None,
    beat: Callable[[dict[str, Any]], Beat] | None = None,
) -> bool:
    """A lease holder known to have ended, so nobody need wait out its lease: on this machine
    by /proc, elsewhere by its heartbeat having run out (a holder with no heartbeat at all is
    not known to have ended: its lease is waited out)."""
    me = me or ME
    claimer = {"host": lease.host, "pid": lease.pid, "started": lease.started}
    if is_me(claimer, me):
        return False
    if on_this_machine(claimer, me):
        return not live_elsewhere(claimer, me)
    return beat is not None and beat(claimer) == "expired"
