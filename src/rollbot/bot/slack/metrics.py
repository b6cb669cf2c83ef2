"""Prometheus metrics for /metrics: what a desk's dashboard watches while the bot runs."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.trading_state import TradingState
from rollbot.commands.risk import preflight

STATE_VALUE = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


class _StateCollector(Collector):
    """Read at scrape time from SQLite, so the CLI's and the clock's changes show too."""

    def __init__(self, app: Rollbot) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            "rollbot_trading_state", "0 ACTIVE, 1 REDUCING, 2 HALTED", labels=["scope"]
        )
        for row in self.app.killswitch.status(self.app.venue_names):
            state.add_metric([row.scope], STATE_VALUE[row.state])
        yield state
        armed = GaugeMetricFamily(
            "rollbot_armed_check",
            "1 when the armed-status check passes, 0 when not",
            labels=["check"],
        )
        for check in preflight.latest(self.app):
            armed.add_metric([check.name], 1.0 if check.ok else 0.0)
        yield armed
        for name, sql, doc in (
            (
                "rollbot_open_incidents",
                "SELECT COUNT(*) AS n FROM incidents WHERE status='OPEN'",
                "Incidents not closed",
            ),
            (
                "rollbot_pending_approvals",
                "SELECT COUNT(*) AS n FROM approvals WHERE status='PENDING'",
                "Requests waiting",
            ),
            (
                "rollbot_active_escalations",
                "SELECT COUNT(*) AS n FROM escalations WHERE status='ACTIVE'",
                "Escalations running",
            ),
            (
                "rollbot_outbox_set_aside",
                "SELECT COUNT(*) AS n FROM outbox WHERE delivered_at IS NOT NULL"
                " AND json_extract(result, '$.set_aside') = 1",
                "Messages Slack refused (e.g. not_in_channel), kept to be retried",
            ),
            (
                "rollbot_outbox_pending",
                "SELECT COUNT(*) AS n FROM outbox WHERE delivered_at IS NULL",
                "Messages not yet delivered to Slack",
            ),
        ):
            row = self.app.db.one(sql)
            yield GaugeMetricFamily(name, doc, value=float(row["n"] if row else 0))


class Metrics:
    def __init__(self, app: Rollbot) -> None:
        self.registry = CollectorRegistry()
        self.commands = Counter(
            "rollbot_commands",
            "Slash commands and actions handled",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.ack_latency = Histogram(
            "rollbot_ack_latency_seconds",
            "From request to ack",
            ["command"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 3),
            registry=self.registry,
        )
        self.unverified = Counter(
            "rollbot_unverified_requests",
            "Slack requests refused for a bad or stale signature",
            ["code"],
            registry=self.registry,
        )
        self.undeliverable = Counter(
            "rollbot_slack_undeliverable",
            "Messages set aside because Slack refused them, by Slack's error",
            ["error"],
            registry=self.registry,
        )
        self.registry.register(_StateCollector(app))

    def render(self) -> bytes:
        return generate_latest(self.registry)
