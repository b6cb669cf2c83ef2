"""Helpers for the monitor tests: a one-stock paper book and what the ops channel would show."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from rollbot.brokers.paper.scenario import Scenario, ScenarioAccount, ScenarioPosition
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.risk.monitors import Monitor, MonitorReport


def one_stock_book(path: list[str]) -> Scenario:
    """NAV = 100,000 cash + 1,000 AAPL: 200,000 at a mark of 100; each path step moves the mark."""
    return Scenario(
        name="one stock",
        account=ScenarioAccount(cash=Decimal(100000)),
        positions=[
            ScenarioPosition(
                symbol="AAPL", quantity=Decimal(1000), avg_price=Decimal(100), mark=Decimal(100)
            )
        ],
        price_path=[{"AAPL": Decimal(p)} for p in path],
    )


def risk_alerts(app: Rollbot) -> list[dict[str, Any]]:
    """The `risk_alert` messages queued for the ops channel (delivered or not), oldest first."""
    out = []
    for r in app.db.query("SELECT kind, payload FROM outbox ORDER BY id"):
        payload = json.loads(r["payload"])
        if r["kind"] == "channel" and payload.get("view") == "risk_alert":
            out.append(payload["data"])
    return out


async def tick_after(monitor: Monitor, clock: ManualClock, seconds: float = 10) -> MonitorReport:
    clock.advance(seconds)
    report = await monitor.tick()
    assert not report.errors, report.errors
    return report
