"""The risk figures behind the automatic kill switches (IBKR seed, "Rollback Trigger
Conditions"), computed from SQLite alone so the monitor, `rollbot risk status` and the App Home
show the same numbers in any process.

What each figure is measured against:
- Session: the current UTC day. Its start NAV is the venue's first NAV sample of the day, and
  drawdown and PSR use the day's samples. Not "since the monitor started": a restart must never
  reset a kill switch. (The rollback engine's VERIFY step uses the day's first sample too.)
- PnL: last NAV / session start NAV - 1. Drawdown: the largest fall from the session's running
  peak. PSR: probabilistic_sharpe_ratio of the simple returns between consecutive samples, only
  once there are `psr_min_samples` returns.
- Rates: venue events in the trailing hour (DISCONNECT -> connection failures, PACING -> pacing
  violations; REJECT / ORDER_SENT -> the rejection rate, from MIN_ORDERS_FOR_RATE orders up).
  Events reach us through app.venue_events; record_venue_events moves them into SQLite, so the
  counts survive restarts and every process sees the same numbers.
- Latency: p95 of the round trips of the last LATENCY_WINDOW against a baseline: the configured
  latency_baseline_ms, else the median of the last hour.
- kills_per_day (Live -> Shadow seed): kill switch triggers (requests to hold HALTED, one per
  incident) in the last 24 h.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from rollbot.brokers.base import VenueEvent, VenueEventKind
from rollbot.clock import iso, parse_iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.risk.metrics import (
    kurtosis,
    max_drawdown,
    median,
    p95,
    pnl_fraction,
    probabilistic_sharpe_ratio,
    psr_defined,
    sharpe_ratio,
    simple_returns,
    skewness,
)
from rollbot.config import TriggerConfig
from rollbot.storage.nav import NavSamples
from rollbot.storage.risk import DESK, Firings, RiskVenueEvents, StoredVenueEvent

HOUR = timedelta(hours=1)
DAY = timedelta(hours=24)
LATENCY_WINDOW = timedelta(minutes=5)
MIN_LATENCY_SAMPLES = 5  # in the window, for a p95
MIN_BASELINE_SAMPLES = 10  # in the hour, for a median baseline
MIN_ORDERS_FOR_RATE = 5  # orders sent in the hour before a rejection rate means anything
STORED_KINDS = {
    VenueEventKind.DISCONNECT,
    VenueEventKind.PACING,
    VenueEventKind.REJECT,
    VenueEventKind.ORDER_SENT,
    VenueEventKind.LATENCY,
}
FAIL_CLOSED = "fail_closed"

Comparison = Literal["<", ">", ">="]
State = Literal["OK", "BREACHED", "NO_DATA", "DISABLED", "ERROR"]
Unit = Literal["fraction", "probability", "per_hour", "ratio", "count", "seconds"]


@dataclass(frozen=True)
class Spec:
    name: str  # the key under [kill_switches]
    label: str
    comparison: Comparison
    unit: Unit
    desk_wide: bool = False


# The seed's table compares strictly; connection failures and kills count "3 or more" (the
# seed's test 2: "rollback after 3 failures"; Live -> Shadow: "3+ times in 24 hours").
SPECS: tuple[Spec, ...] = (
    Spec("pnl", "PnL vs session start", "<", "fraction"),
    Spec("drawdown", "Max drawdown from peak", ">", "fraction"),
    Spec("psr", "Probabilistic Sharpe ratio", "<", "probability"),
    Spec("connection_failures", "Connection failures", ">=", "per_hour"),
    Spec("pacing_violations", "Pacing violations", ">", "per_hour"),
    Spec("order_rejections", "Order rejection rate", ">", "fraction"),
    Spec("latency", "p95 latency vs baseline", ">", "ratio"),
    Spec("kills_per_day", "Kill switch triggers in 24 h", ">=", "count", desk_wide=True),
)
SPEC_BY_NAME = {s.name: s for s in SPECS}


def breached(comparison: Comparison, value: float, threshold: float) -> bool:
    if comparison == "<":
        return value < threshold
    if comparison == ">":
        return value > threshold
    return value >= threshold


def fmt(unit: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "fraction":
        return f"{value:+.2%}" if value < 0 else f"{value:.2%}"
    if unit == "probability":
        return f"{value:.3f}"
    if unit == "per_hour":
        return f"{value:g}/h"
    if unit == "ratio":
        return f"{value:.2f}x"
    if unit == "seconds":
        return f"{value:.0f} s"
    return f"{value:g}"


class FiringInfo(BaseModel):
    alert_id: str
    status: str
    fired_at: datetime
    value: float | None = None
    incident_id: str | None = None
    acked_by: str | None = None


class MetricStatus(BaseModel):
    """One figure for one venue (or the whole desk), its threshold and its state."""

    trigger: str
    label: str
    venue: str | None  # None: desk-wide
    value: float | None
    threshold: float
    comparison: Comparison
    unit: Unit
    action: str  # auto_rollback | alert | halt
    enabled: bool
    state: State
    detail: str = ""
    figures: dict[str, Any] = Field(default_factory=dict)
    firing: FiringInfo | None = None

    @property
    def value_text(self) -> str:
        return fmt(self.unit, self.value)

    @property
    def threshold_text(self) -> str:
        return f"{self.comparison} {fmt(self.unit, self.threshold)}"

    @property
    def line(self) -> str:
        """One line for the App Home."""
        mark = {"OK": "✅", "BREACHED": "🔴", "NO_DATA": "⚪", "DISABLED": "⏸️", "ERROR": "❗"}[
            self.state
        ]
        where = self.venue or "desk"
        text = (
            f"{mark} `{where}` {self.label}: {self.value_text}"
            f" (trigger {self.threshold_text}, {self.action}) {self.state}"
        )
        if self.firing:
            text += f" — fired {self.firing.alert_id} {self.firing.status}"
            if self.firing.incident_id:
                text += f" {self.firing.incident_id}"
        return text


def session_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _metric(
    app: Rollbot,
    spec: Spec,
    venue: str | None,
    value: float | None,
    figures: dict[str, Any],
    detail: str = "",
) -> MetricStatus:
    cfg: TriggerConfig = getattr(app.settings.kill_switches, spec.name)
    if value is not None and isinstance(value, float) and math.isnan(value):
        value = None
    if not cfg.enabled:
        state: State = "DISABLED"
    elif value is None:
        state = "NO_DATA"
    elif breached(spec.comparison, value, cfg.threshold):
        state = "BREACHED"
    else:
        state = "OK"
    return MetricStatus(
        trigger=spec.name,
        label=spec.label,
        venue=venue,
        value=value,
        threshold=cfg.threshold,
        comparison=spec.comparison,
        unit=spec.unit,
        action=cfg.action,
        enabled=cfg.enabled,
        state=state,
        detail=detail,
        figures=figures,
    )


def _nav_metrics(app: Rollbot, venue: str, now: datetime) -> list[MetricStatus]:
    start = session_start(now)
    samples = NavSamples(app.db).list(venue=venue, since=start, until=now)
    navs = [float(s.nav) for s in samples]
    out: list[MetricStatus] = []
    if not navs:
        none = "no NAV sample yet this session"
        return [
            _metric(app, SPEC_BY_NAME[n], venue, None, {}, none) for n in ("pnl", "drawdown")
        ] + [_metric(app, SPEC_BY_NAME["psr"], venue, None, {}, none)]
    session = {
        "session_start": samples[0].at.isoformat(),
        "start_nav": str(samples[0].nav),
        "nav": str(samples[-1].nav),
        "currency": samples[-1].currency,
    }
    if navs[0] > 0:
        pnl = pnl_fraction(navs)
        out.append(_metric(app, SPEC_BY_NAME["pnl"], venue, pnl, session))
    else:
        out.append(_metric(app, SPEC_BY_NAME["pnl"], venue, None, session, "start NAV is not > 0"))
    peak = max(navs)
    dd = max_drawdown(navs)
    out.append(
        _metric(
            app,
            SPEC_BY_NAME["drawdown"],
            venue,
            dd,
            {"peak_nav": f"{peak:.2f}", "nav": session["nav"], "samples": len(navs)},
        )
    )
    need = app.settings.kill_switches.psr_min_samples
    returns = simple_returns(navs) if all(x > 0 for x in navs) else []
    if len(returns) < need:
        out.append(
            _metric(
                app,
                SPEC_BY_NAME["psr"],
                venue,
                None,
                {"returns": len(returns)},
                f"{len(returns)} of {need} returns needed",
            )
        )
    elif not psr_defined(returns):
        out.append(
            _metric(
                app,
                SPEC_BY_NAME["psr"],
                venue,
                None,
                {"returns": len(returns)},
                "NAV has not moved: the Sharpe ratio is undefined",
            )
        )
    else:
        figures = {
            "returns": len(returns),
            "sharpe_per_sample": round(sharpe_ratio(returns), 6),
            "skewness": round(skewness(returns), 6),
            "kurtosis": round(kurtosis(returns), 6),
        }
        out.append(
            _metric(
                app,
                SPEC_BY_NAME["psr"],
                venue,
                probabilistic_sharpe_ratio(returns),
                figures,
            )
        )
    return out


def _event_metrics(app: Rollbot, venue: str, now: datetime) -> list[MetricStatus]:
    store = RiskVenueEvents(app.db)
    since = now - HOUR
    rows = store.list(
        venue,
        [k.value for k in STORED_KINDS],
        since,
    )
    rows = [r for r in rows if r.at <= now]
    by_kind: dict[str, list[StoredVenueEvent]] = {}
    for r in rows:
        by_kind.setdefault(r.kind, []).append(r)
    disconnects = len(by_kind.get("DISCONNECT", []))
    pacing = len(by_kind.get("PACING", []))
    rejected = len(by_kind.get("REJECT", []))
    sent = len(by_kind.get("ORDER_SENT", []))
    out = [
        _metric(
            app,
            SPEC_BY_NAME["connection_failures"],
            venue,
            float(disconnects),
            {"disconnects_last_hour": disconnects},
        ),
        _metric(
            app,
            SPEC_BY_NAME["pacing_violations"],
            venue,
            float(pacing),
            {"pacing_violations_last_hour": pacing},
        ),
    ]
    orders = max(sent, rejected)  # a refusal raised before the send still counts as an order
    if orders >= MIN_ORDERS_FOR_RATE:
        out.append(
            _metric(
                app,
                SPEC_BY_NAME["order_rejections"],
                venue,
                rejected / orders,
                {"rejected_last_hour": rejected, "orders_last_hour": orders},
            )
        )
    else:
        out.append(
            _metric(
                app,
                SPEC_BY_NAME["order_rejections"],
                venue,
                None,
                {"rejected_last_hour": rejected, "orders_last_hour": orders},
                f"{orders} orders in the last hour (a rate needs {MIN_ORDERS_FOR_RATE})",
            )
        )
    latencies = [(r.at, r.value) for r in by_kind.get("LATENCY", []) if r.value is not None]
    recent = [v for at, v in latencies if at > now - LATENCY_WINDOW]
    configured = app.settings.kill_switches.latency_baseline_ms
    hour = [v for _, v in latencies]
    figures: dict[str, Any] = {"samples_5min": len(recent), "samples_hour": len(hour)}
    if configured is not None and configured > 0:
        baseline: float | None = configured
        figures["baseline_source"] = "configured"
    elif len(hour) >= MIN_BASELINE_SAMPLES:
        baseline = median(hour)
        figures["baseline_source"] = "median of the last hour"
    else:
        baseline = None
    if baseline is None or baseline <= 0:
        out.append(
            _metric(
                app,
                SPEC_BY_NAME["latency"],
                venue,
                None,
                figures,
                f"no baseline yet ({len(hour)} of {MIN_BASELINE_SAMPLES} samples this hour)",
            )
        )
    elif len(recent) < MIN_LATENCY_SAMPLES:
        figures["baseline_ms"] = round(baseline, 3)
        out.append(
            _metric(
                app,
                SPEC_BY_NAME["latency"],
                venue,
                None,
                figures,
                f"{len(recent)} round trips in the last 5 min (a p95 needs {MIN_LATENCY_SAMPLES})",
            )
        )
    else:
        tail = p95(recent)
        figures.update({"p95_ms": round(tail, 3), "baseline_ms": round(baseline, 3)})
        out.append(_metric(app, SPEC_BY_NAME["latency"], venue, tail / baseline, figures))
    return out


def count_kills(app: Rollbot, now: datetime) -> tuple[int, list[str]]:
    """Kill switch triggers in the 24 h before `now`: every request to hold HALTED (a new hold,
    or one repeated on a scope already held), one per incident — a rollback holds several
    scopes for one incident — and one per request made outside an incident."""
    seen: list[str] = []
    kinds = ["HOLD_SET", "HOLD_REPEATED", "HOLD_TIGHTENED"]
    for e in app.events.list(kinds=kinds, since=now - DAY):
        if e.at > now or e.data.get("state") != "HALTED":
            continue
        key = e.incident_id or f"{e.kind} #{e.id} on {e.scope}"
        if key not in seen:
            seen.append(key)
    return len(seen), seen


def desk_metrics(app: Rollbot, now: datetime) -> list[MetricStatus]:
    kills, which = count_kills(app, now)
    return [
        _metric(
            app,
            SPEC_BY_NAME["kills_per_day"],
            None,
            float(kills),
            {"kills_24h": kills, "episodes": ", ".join(which[-10:])},
        )
    ]


def _sample_age(app: Rollbot, venue: str, now: datetime) -> MetricStatus:
    """How fresh the monitor's view of a venue is: the status anyone can read, any process."""
    ks = app.settings.kill_switches
    row = app.db.one(
        "SELECT MAX(at) AS at FROM nav_samples WHERE venue = ? AND at <= ?", (venue, iso(now))
    )
    limit = ks.fail_closed_after * ks.interval_s
    age = (now - parse_iso(row["at"])).total_seconds() if row and row["at"] else None
    state: State = "NO_DATA" if age is None else "BREACHED" if age > limit else "OK"
    return MetricStatus(
        trigger=FAIL_CLOSED,
        label="Last NAV sample age",
        venue=venue,
        value=age,
        threshold=limit,
        comparison=">",
        unit="seconds",
        action="halt" if ks.fail_closed_halt else "alert",
        enabled=True,
        state=state,
        detail="" if age is not None else "never sampled",
    )


def venue_metrics(app: Rollbot, venue: str, now: datetime) -> list[MetricStatus]:
    return _nav_metrics(app, venue, now) + _event_metrics(app, venue, now)


def _with_firings(app: Rollbot, metrics: list[MetricStatus]) -> list[MetricStatus]:
    active = {(f.trigger, f.venue): f for f in Firings(app.db).active()}
    for m in metrics:
        f = active.get((m.trigger, m.venue or DESK))
        if f:
            m.firing = FiringInfo(
                alert_id=f.alert_id,
                status=f.status,
                fired_at=f.fired_at,
                value=f.value,
                incident_id=f.incident_id,
                acked_by=f.acked_by,
            )
    return metrics


def _broken(venue: str | None, exc: Exception) -> MetricStatus:
    """A check that raised is shown as such, never as a missing row."""
    return MetricStatus(
        trigger="checks",
        label="Risk checks",
        venue=venue,
        value=None,
        threshold=0,
        comparison=">",
        unit="count",
        action="halt",
        enabled=True,
        state="ERROR",
        detail=f"the checks raised {exc!r}",
    )


def risk_status(app: Rollbot) -> list[MetricStatus]:
    """Each metric, its threshold and its state, with any active firing; for the CLI and the
    App Home. Reads SQLite only, never a venue; a check that raises becomes an ERROR row."""
    now = app.clock.now()
    metrics: list[MetricStatus] = []
    for venue in app.venue_names:
        try:
            metrics.append(_sample_age(app, venue, now))
            metrics += venue_metrics(app, venue, now)
        except Exception as exc:
            metrics.append(_broken(venue, exc))
    try:
        metrics += desk_metrics(app, now)
    except Exception as exc:
        metrics.append(_broken(None, exc))
    return _with_firings(app, metrics)


def status_lines(metrics: list[MetricStatus]) -> list[str]:
    return [m.line for m in metrics]


def scope_of(venue: str | None) -> str:
    return "global" if venue in (None, DESK) else f"venue:{venue}"


def record_venue_events(app: Rollbot) -> int:
    """Move the venue events this process collected (app.venue_events) into SQLite. The list is
    drained so it does not grow for the life of the bot."""
    batch: list[VenueEvent] = list(app.venue_events)
    del app.venue_events[: len(batch)]
    rows = [
        StoredVenueEvent(venue=e.venue, kind=e.kind.value, at=e.at, code=e.code, value=e.value)
        for e in batch
        if e.kind in STORED_KINDS
    ]
    try:
        RiskVenueEvents(app.db).add_many(rows)
    except Exception:
        app.venue_events[:0] = batch  # keep them for the next tick
        raise
    return len(rows)
