"""Once per desk, not once per host (point 2 of issue 19): two `rollbot clock` processes with
their own host ids and working directories on one database. The risk monitor, the clock's
sweeps and the outbox run on one host at a time; when that host is SIGKILLed they move to the
other within their bound, and every deadline — pending on both hosts' alarms — fires once."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from escalation.helpers import contacts, operator

from hosts.desk import FIGURES, LEASE_S, Db, backend_of, events, ready, two_hosts, wait_until
from rollbot.clock import SystemClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.paging.escalation import start_escalation
from rollbot.config import DatabaseConfig, EscalationConfig, KillSwitchesConfig
from rollbot.storage.backends import open_database

TICK_S = 0.5  # [kill_switches] interval_s: the monitor's lease runs 3 ticks
# stated bounds: the monitor, one tick after the holder's heartbeat ran out (3 lease
# intervals); the clock's lease, one lease interval after that
MONITOR_BOUND_S = 3 * LEASE_S + TICK_S
CLOCK_BOUND_S = 4 * LEASE_S
SLACK_S = 3.0  # process scheduling on a loaded 2-core machine, not design
INCIDENTS = 8


def holders(db: Db) -> dict[str, str]:
    return {r["name"]: r["host"] for r in db.query("SELECT name, host FROM leases")}


def test_the_monitor_and_the_sweeps_move_hosts_and_each_deadline_fires_once(
    tmp_path: Path, shared_db: Callable[[str], DatabaseConfig], write_config: Callable[..., Path]
) -> None:
    a, b = two_hosts(
        tmp_path,
        shared_db("singletons"),
        write_config,
        latency_ms=0,
        kill_switches=KillSwitchesConfig(interval_s=TICK_S),
        escalation=EscalationConfig(wait_minutes=0.05, repeat=0, auditor_interval_s=0.5),
        contacts=contacts(),
    )
    db = open_database(a.settings.database)
    rb = Rollbot.open(a.settings, clock=SystemClock())
    clock_a = a.start("clock")
    ready(clock_a)
    clock_b = b.start("clock")
    try:
        ready(clock_b)
        wait_until(
            "host a to hold the monitor and the clock",
            lambda: {holders(db).get("risk_monitor"), holders(db).get("clock")} == {"host-a"},
            20,
            (clock_a, clock_b),
        )
        time.sleep(3 * TICK_S)  # b stands by: a keeps both, tick after tick
        assert holders(db)["risk_monitor"] == holders(db)["clock"] == "host-a"
        assert events(db, "MONITOR_TAKEN_OVER") == []

        # deadlines due in 3 s (tier 1 -> tier 2), then 6 s (exhausted): both hosts' alarms
        incidents = []
        for _ in range(INCIDENTS):
            incident, _ = rb.incidents.open(kind="alert", reason="PnL -6%", actor=operator())
            start_escalation(rb, incident.id, operator())
            incidents.append(incident.id)
        time.sleep(0.5)  # both clocks have read the deadlines and set their alarms

        clock_a.send_signal(signal.SIGKILL)
        clock_a.communicate(timeout=10)
        killed = time.monotonic()
        wait_until(
            "host b to take the monitor",
            lambda: holders(db).get("risk_monitor") == "host-b",
            30,
            (clock_b,),
        )
        monitor_s = time.monotonic() - killed
        wait_until(
            "host b to take the clock", lambda: holders(db).get("clock") == "host-b", 30, (clock_b,)
        )
        clock_s = time.monotonic() - killed
        wait_until(
            "every escalation to run out",
            lambda: len(events(db, "ESCALATION_EXHAUSTED")) == INCIDENTS,
            60,
            (clock_b,),
        )
        time.sleep(1.0)  # room for a duplicate to show up, were there one

        [moved] = events(db, "MONITOR_TAKEN_OVER")
        assert "host-b" in moved["data"]["holder"] and "host-a" in moved["data"]["from"]
        assert [e["data"]["from_host"] for e in events(db, "CLOCK_TAKEN_OVER")] == ["host-a"]
        fired = Counter(e["data"]["timer_id"] for e in events(db, "TIMER_FIRED"))
        assert len(fired) == 2 * INCIDENTS and set(fired.values()) == {1}, fired
        pinged = Counter(
            (e["incident_id"], e["data"]["tier"]) for e in events(db, "ESCALATION_PINGED")
        )
        assert set(pinged) == {(i, t) for i in incidents for t in (1, 2)}
        assert set(pinged.values()) == {1}, pinged
        on = backend_of(a.settings.database)
        FIGURES.append(
            f"{on}: monitor moved hosts {monitor_s:.2f} s after SIGKILL"
            f" (bound {MONITOR_BOUND_S} s),"
            f" the clock's sweeps {clock_s:.2f} s (bound {CLOCK_BOUND_S} s);"
            f" {2 * INCIDENTS} deadlines fired once each",
        )
        assert monitor_s < MONITOR_BOUND_S + SLACK_S
        assert clock_s < CLOCK_BOUND_S + SLACK_S
    finally:
        for p in (clock_a, clock_b):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.communicate(timeout=15)
        db.close()
        rb.db.close()
