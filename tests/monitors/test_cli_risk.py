"""`rollbot risk status` and `rollbot risk ack` as a person runs them: a real subprocess reading
the SQLite file the monitor wrote (it never calls a venue)."""

from __future__ import annotations

import json
from typing import Any

from rollbot.brokers.base import VenueEvent, VenueEventKind
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.risk.monitors import Monitor
from rollbot.config import Settings


async def test_risk_status_shows_each_metric_threshold_and_state(
    settings: Settings, rollbot: Any
) -> None:
    rb = Rollbot.open(settings)  # the system clock, like the CLI that reads it afterwards
    try:
        now = rb.clock.now()
        rb.venue_events.extend(
            VenueEvent(venue="paper", kind=VenueEventKind.PACING, code="100", at=now)
            for _ in range(11)
        )
        report = await Monitor(rb).tick()
    finally:
        await rb.aclose()
    (fired,) = report.fired
    assert fired.trigger == "pacing_violations"

    result = rollbot("risk", "status", "--json")
    assert result.returncode == 0, result.stderr
    rows = {(r["trigger"], r["venue"]): r for r in json.loads(result.stdout)}
    pnl = rows[("pnl", "paper")]
    assert (pnl["state"], pnl["value"], pnl["threshold_text"]) == ("OK", 0.0, "< -5.00%")
    assert pnl["action"] == "auto_rollback"
    psr = rows[("psr", "paper")]
    assert psr["state"] == "NO_DATA" and psr["detail"] == "0 of 30 returns needed"
    pacing = rows[("pacing_violations", "paper")]
    assert (pacing["state"], pacing["value"], pacing["threshold"]) == ("BREACHED", 11.0, 10.0)
    assert pacing["firing"]["alert_id"] == fired.alert_id
    assert pacing["firing"]["status"] == "ALERTED"
    assert rows[("kills_per_day", None)]["state"] == "OK"
    assert rows[("fail_closed", "paper")]["state"] == "OK"  # sampled just now
    assert {t for t, _ in rows} == {
        "fail_closed",
        "pnl",
        "drawdown",
        "psr",
        "connection_failures",
        "pacing_violations",
        "order_rejections",
        "latency",
        "kills_per_day",
    }

    table = rollbot("risk", "status")
    assert table.returncode == 0, table.stderr
    line = next(ln for ln in table.stdout.splitlines() if "pacing_violations" in ln)
    assert "11/h" in line and "> 10/h" in line and "BREACHED" in line and fired.alert_id in line

    ack = rollbot("risk", "ack", fired.alert_id, "--reason", "throttled the strategy")
    assert ack.returncode == 0, ack.stderr
    assert f"{fired.alert_id} (pacing_violations) acknowledged" in ack.stdout
    after = {
        (r["trigger"], r["venue"]): r
        for r in json.loads(rollbot("risk", "status", "--json").stdout)
    }
    assert after[("pacing_violations", "paper")]["firing"]["status"] == "ACKNOWLEDGED"

    unknown = rollbot("risk", "ack", "risk-99")
    assert unknown.returncode == 2
    assert "unknown risk alert 'risk-99'" in unknown.stderr
