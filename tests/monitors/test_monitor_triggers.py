"""The monitor against the real paper venue, SQLite and the rollback engine, on a ManualClock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from monitors.support import one_stock_book, risk_alerts, tick_after
from rollbot.brokers.base import AccountSnapshot, VenueEvent, VenueEventKind
from rollbot.brokers.paper.venue import PaperVenue
from rollbot.clock import ManualClock, iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.risk.alerts import acknowledge_alert
from rollbot.commands.risk.monitors import Monitor, MonitorReport, risk_status, status_lines
from rollbot.commands.rollback.engine import Engine
from rollbot.commands.rollback.report import build_log, build_markdown
from rollbot.config import Settings
from rollbot.errors import BadInput, NotFound
from rollbot.storage.events import Actor
from rollbot.storage.incidents import Incident

MakeApp = Callable[..., Rollbot]


def all_incidents(app: Rollbot) -> list[Incident]:
    return app.incidents.list(limit=100)


# -- automatic rollback ---------------------------------------------------------------------------
async def test_pnl_crossing_minus_5_percent_rolls_back_exactly_once(
    make_app: MakeApp, clock: ManualClock
) -> None:
    app = make_app()
    paper = app.venue("paper")
    assert isinstance(paper, PaperVenue)
    # marks 100 -> 99 -> 97 -> 95.5 -> 94 -> 89: NAV 200,000 -> 189,000 (-5.5%)
    paper.seed(one_stock_book(["99", "97", "95.5", "94", "89"]))
    monitor = Monitor(app)

    first = await monitor.tick()
    assert first.samples == {"paper": "200000"}
    fired_at: list[MonitorReport] = []
    while paper.advance_prices() is not None:
        report = await tick_after(monitor, clock)
        if report.fired:
            fired_at.append(report)
    assert len(fired_at) == 1
    report = fired_at[0]
    assert report.samples == {"paper": "189000"}
    (fired,) = report.fired
    assert (fired.trigger, fired.venue, fired.action) == ("pnl", "paper", "auto_rollback")
    assert fired.value is not None and abs(fired.value - -0.055) < 1e-12
    assert fired.threshold == -0.05
    await monitor.settle()

    # repeated ticks after the crossing: still -5.5%, no second rollback
    for _ in range(6):
        later = await tick_after(monitor, clock)
        assert not later.fired
        assert any(s.startswith("pnl@paper: already fired") for s in later.suppressed)
    await monitor.settle()

    (incident,) = all_incidents(app)
    assert incident.kind == "rollback" and incident.opened_by == "clock:monitor"
    assert incident.final_status == "SUCCESS"
    closing = paper.book.order_rows("WHERE reduce_only = 1")
    assert len(closing) == 1  # one set of closing orders: AAPL, once
    assert (closing[0]["symbol"], closing[0]["side"], closing[0]["status"]) == (
        "AAPL",
        "SELL",
        "FILLED",
    )
    assert len(app.db.query("SELECT * FROM order_intents")) == 1
    assert await paper.positions() == []

    log = build_log(app, incident)
    assert log.trigger == "pnl"
    assert log.trigger_value is not None and abs(log.trigger_value - -0.055) < 1e-12
    assert log.trigger_threshold == -0.05
    assert log.final_status == "SUCCESS"
    assert "**Trigger:** pnl (value -0.055" in build_markdown(app, incident)
    holds = app.killswitch.holds.active(["global"])
    assert "monitor:pnl" in {h.source for h in holds}
    assert not risk_alerts(app)  # automatic: no button asking a person

    status = {(m.trigger, m.venue): m for m in risk_status(app)}
    pnl = status[("pnl", "paper")]
    assert pnl.state == "BREACHED"
    assert pnl.firing is not None and pnl.firing.incident_id == incident.id


async def test_closed_incident_rearms_only_once_the_figure_recovers(
    make_app: MakeApp, clock: ManualClock, operator: Actor
) -> None:
    app = make_app()
    paper = app.venue("paper")
    assert isinstance(paper, PaperVenue)
    paper.seed(one_stock_book(["89"]))
    monitor = Monitor(app)
    await monitor.tick()
    paper.advance_prices()
    assert (await tick_after(monitor, clock)).fired
    await monitor.settle()
    (incident,) = all_incidents(app)
    app.incidents.close(incident.id, operator, "post-mortem done")

    # closed, but the day's PnL is still -5.5%: no rollback loop on a flat book
    report = await tick_after(monitor, clock)
    assert not report.fired and not report.rearmed
    # the next UTC day starts a new session: PnL is back to 0, the trigger re-arms
    clock.advance(hours=24)
    report = await tick_after(monitor, clock)
    assert report.rearmed == ["pnl@paper"]
    assert len(all_incidents(app)) == 1


async def test_a_second_auto_trigger_is_covered_by_the_open_rollback(
    make_app: MakeApp, clock: ManualClock
) -> None:
    app = make_app(kill_switches={"psr_min_samples": 3})
    paper = app.venue("paper")
    assert isinstance(paper, PaperVenue)
    # four falling marks: the PSR of 3 losing returns drops below 0.20 first (rollback),
    # then PnL crosses -5% while that rollback is still open
    paper.seed(one_stock_book(["98", "95", "92", "89"]))
    monitor = Monitor(app)
    await monitor.tick()
    fired = []
    while paper.advance_prices() is not None:
        fired += (await tick_after(monitor, clock)).fired
    await monitor.settle()
    by_trigger = {f.trigger: f for f in fired}
    assert set(by_trigger) == {"pnl", "psr"}
    assert not by_trigger["psr"].covered and by_trigger["pnl"].covered
    assert by_trigger["pnl"].incident_id == by_trigger["psr"].incident_id
    (incident,) = all_incidents(app)
    assert (incident.trigger, incident.id) == ("psr", by_trigger["psr"].incident_id)
    assert len(paper.book.order_rows("WHERE reduce_only = 1")) == 1


# -- alerts ---------------------------------------------------------------------------------------
def pacing(app: Rollbot, clock: ManualClock, n: int) -> None:
    """IB error 100 as the venue reports it: a PACING event per violation."""
    app.venue_events.extend(
        VenueEvent(
            venue="paper",
            kind=VenueEventKind.PACING,
            code="100",
            message="Max rate of messages per second has been exceeded",
            at=clock.now(),
        )
        for _ in range(n)
    )


async def test_pacing_burst_alerts_once_and_never_rolls_back(
    make_app: MakeApp, clock: ManualClock, operator: Actor
) -> None:
    app = make_app()
    monitor = Monitor(app)
    pacing(app, clock, 10)  # 10/h is the threshold: not above it
    assert not (await monitor.tick()).fired
    pacing(app, clock, 2)
    report = await tick_after(monitor, clock)
    (fired,) = report.fired
    assert (fired.trigger, fired.action, fired.value, fired.threshold) == (
        "pacing_violations",
        "alert",
        12.0,
        10.0,
    )
    (alert,) = risk_alerts(app)
    assert alert["alert_id"] == fired.alert_id == alert["id"]
    assert (alert["trigger"], alert["venue"], alert["value"], alert["threshold"]) == (
        "pacing_violations",
        "paper",
        12.0,
        10.0,
    )
    assert alert["figures"] == {"pacing_violations_last_hour": 12}
    assert alert["value_text"] == "12/h" and alert["threshold_text"] == "> 10/h"

    pacing(app, clock, 5)  # the burst goes on: the unacknowledged alert is not repeated
    await tick_after(monitor, clock)
    assert len(risk_alerts(app)) == 1
    assert all_incidents(app) == []
    assert app.killswitch.holds.active() == []

    # counts live in SQLite: another process sees the same 17 in the last hour
    other = Rollbot.open(app.settings, clock=clock)
    try:
        seen = {(m.trigger, m.venue): m for m in risk_status(other)}
        assert seen[("pacing_violations", "paper")].value == 17
        assert seen[("pacing_violations", "paper")].firing is not None
    finally:
        other.db.close()

    # acknowledged while still above 10/h: no new alert, no re-arm
    acked = acknowledge_alert(app, fired.alert_id, operator, "IB asked us to slow down")
    assert (acked.status, acked.acked_by) == ("ACKNOWLEDGED", operator.id)
    report = await tick_after(monitor, clock)
    assert not report.fired and not report.rearmed
    # an hour later the count is 0: re-armed, and a new burst alerts again
    report = await tick_after(monitor, clock, 3600)
    assert report.rearmed == ["pacing_violations@paper"]
    pacing(app, clock, 11)
    report = await tick_after(monitor, clock)
    assert [f.trigger for f in report.fired] == ["pacing_violations"]
    assert len(risk_alerts(app)) == 2
    assert all_incidents(app) == []


async def test_acknowledging_refuses_what_is_not_an_open_alert(
    make_app: MakeApp, clock: ManualClock, operator: Actor
) -> None:
    app = make_app()
    paper = app.venue("paper")
    assert isinstance(paper, PaperVenue)
    paper.seed(one_stock_book(["89"]))
    monitor = Monitor(app)
    await monitor.tick()
    paper.advance_prices()
    (fired,) = (await tick_after(monitor, clock)).fired
    await monitor.settle()
    with pytest.raises(BadInput, match="close the incident instead"):
        acknowledge_alert(app, fired.alert_id, operator)
    with pytest.raises(NotFound, match="unknown risk alert 'risk-99'"):
        acknowledge_alert(app, "risk-99", operator)
    with pytest.raises(NotFound):
        acknowledge_alert(app, "pacing", operator)


async def test_rejection_rate_and_latency_spike_alert(
    make_app: MakeApp, clock: ManualClock
) -> None:
    app = make_app()
    monitor = Monitor(app)
    now = clock.now()
    events = [VenueEvent(venue="paper", kind=VenueEventKind.ORDER_SENT, at=now) for _ in range(10)]
    events += [VenueEvent(venue="paper", kind=VenueEventKind.REJECT, at=now) for _ in range(3)]
    # an hour of 10 ms round trips, then 6 of 60 ms in the last minute
    events += [
        VenueEvent(
            venue="paper",
            kind=VenueEventKind.LATENCY,
            value=10.0,
            at=now - timedelta(minutes=50 - 2 * i),
        )
        for i in range(20)
    ]
    events += [
        VenueEvent(venue="paper", kind=VenueEventKind.LATENCY, value=60.0, at=now) for _ in range(6)
    ]
    app.venue_events.extend(events)
    report = await monitor.tick()
    fired = {f.trigger: f for f in report.fired}
    assert set(fired) == {"order_rejections", "latency"}
    assert fired["order_rejections"].value == 0.3
    assert fired["latency"].value == 6.0  # p95 60 ms / median 10 ms
    alerts = {a["trigger"]: a for a in risk_alerts(app)}
    assert alerts["latency"]["figures"]["baseline_source"] == "median of the last hour"
    assert alerts["latency"]["figures"]["p95_ms"] == 60.0
    assert all_incidents(app) == []


async def test_disabled_trigger_is_shown_but_never_fires(
    make_app: MakeApp, clock: ManualClock
) -> None:
    app = make_app(kill_switches={"pacing_violations": {"enabled": False, "threshold": 10}})
    pacing(app, clock, 50)
    report = await Monitor(app).tick()
    assert not report.fired
    (m,) = [m for m in report.metrics if m.trigger == "pacing_violations"]
    assert (m.state, m.value) == ("DISABLED", 50)


# -- fail closed ----------------------------------------------------------------------------------
class BuggyNavVenue(PaperVenue):
    """The real paper venue with a bug in its NAV code: not a VenueError, a plain crash."""

    async def account(self) -> AccountSnapshot:
        raise ZeroDivisionError("division by zero in the NAV code")


def with_buggy(settings: Settings, clock: ManualClock) -> dict[str, PaperVenue]:
    out: dict[str, PaperVenue] = {}
    for cfg in settings.venues:
        cls = BuggyNavVenue if cfg.name == "buggy" else PaperVenue
        out[cfg.name] = cls(cfg, clock=clock)  # type: ignore[arg-type]
    return out


async def test_a_monitor_that_raises_halts_its_venue_and_alerts(
    make_app: MakeApp, clock: ManualClock
) -> None:
    app = make_app(["paper", "buggy"], venue_objects=with_buggy)
    monitor = Monitor(app)
    report = await monitor.tick()  # never raises
    assert report.samples.keys() == {"paper"}  # the other venue stays watched
    (fired,) = report.fired
    assert (fired.trigger, fired.venue, fired.action) == ("fail_closed", "buggy", "halt")
    (hold,) = app.killswitch.holds.active(["venue:buggy"])
    assert (hold.source, hold.state) == ("monitor:fail_closed", "HALTED")
    assert "ZeroDivisionError" in hold.reason
    assert not app.killswitch.check_order("buggy", "AAPL", "BUY", 1).allowed
    assert app.killswitch.check_order("paper", "AAPL", "BUY", 1).allowed
    (alert,) = risk_alerts(app)
    assert (alert["trigger"], alert["venue"]) == ("fail_closed", "buggy")
    assert "HALTED" in alert["note"]

    again = await tick_after(monitor, clock)
    assert not again.fired and "paper" in again.samples
    assert len(risk_alerts(app)) == 1


async def test_a_venue_unreadable_for_n_ticks_is_halted(
    make_app: MakeApp, clock: ManualClock
) -> None:
    app = make_app(disconnect_after_calls=1)
    app.venue("paper").set_reconnect(False)  # after the injected disconnect every read fails
    monitor = Monitor(app)
    assert (await monitor.tick()).samples  # call 1 works
    for n in (1, 2):
        report = await tick_after(monitor, clock)
        assert "paper" in report.unreadable and not report.fired
        assert monitor.failed_reads["paper"] == n
    assert app.killswitch.holds.active() == []
    report = await tick_after(monitor, clock)  # the 3rd consecutive failure
    (fired,) = report.fired
    assert (fired.trigger, fired.value, fired.threshold) == ("fail_closed", 3.0, 3.0)
    (hold,) = app.killswitch.holds.active(["venue:paper"])
    assert hold.source == "monitor:fail_closed"
    # the one DISCONNECT the venue reported is counted, below the 3/h rollback trigger
    status = {(m.trigger, m.venue): m for m in risk_status(app)}
    assert status[("connection_failures", "paper")].value == 1
    assert all_incidents(app) == []


async def test_fail_closed_can_alert_without_halting(make_app: MakeApp) -> None:
    app = make_app(["buggy"], kill_switches={"fail_closed_halt": False}, venue_objects=with_buggy)
    report = await Monitor(app).tick()
    assert [(f.trigger, f.action) for f in report.fired] == [("fail_closed", "alert")]
    assert app.killswitch.holds.active() == []
    assert len(risk_alerts(app)) == 1


# -- kills per day (Live -> Shadow seed) ----------------------------------------------------------
async def test_three_kills_in_24h_recommend_rolling_back_to_shadow(
    make_app: MakeApp, clock: ManualClock, operator: Actor
) -> None:
    app = make_app()
    now = clock.now()
    clock.set(now - timedelta(hours=25))
    await Engine(app, operator).kill("stale quotes")  # 25 h ago: outside the window
    clock.advance(hours=5)
    await Engine(app, operator).kill("runaway strategy")
    clock.advance(hours=10)
    await Engine(app, operator).kill("fat finger")
    clock.set(now)
    monitor = Monitor(app)
    report = await monitor.tick()
    assert not report.fired
    status = {(m.trigger, m.venue): m for m in report.metrics}
    assert status[("kills_per_day", None)].value == 2

    await Engine(app, operator).kill("venue flapping")
    report = await tick_after(monitor, clock)
    (fired,) = report.fired
    assert (fired.trigger, fired.venue, fired.value, fired.threshold) == (
        "kills_per_day",
        None,
        3.0,
        3.0,
    )
    (alert,) = risk_alerts(app)
    assert alert["trigger"] == "kills_per_day" and "venue" not in alert  # desk-wide
    assert "recommend rolling back to shadow" in alert["note"]
    await tick_after(monitor, clock)
    assert len(risk_alerts(app)) == 1
    assert [i.kind for i in all_incidents(app)] == ["kill"] * 4  # no automatic rollback


async def test_a_check_that_raises_halts_its_venue_and_shows_as_error(
    make_app: MakeApp, clock: ManualClock
) -> None:
    app = make_app(["paper", "other"])
    # a NAV sample no check can read (written by something other than NavSamples.add)
    app.db.execute(
        "INSERT INTO nav_samples (venue, at, nav, currency) VALUES ('paper', ?, 'n/a', 'USD')",
        (iso(clock.now()),),
    )
    monitor = Monitor(app)
    report = await monitor.tick()
    assert any("paper: checks raised" in e for e in report.errors)
    (fired,) = report.fired
    assert (fired.trigger, fired.venue, fired.action) == ("fail_closed", "paper", "halt")
    assert app.killswitch.holds.active(["venue:paper"])[0].source == "monitor:fail_closed"
    assert not app.killswitch.holds.active(["venue:other"])
    assert {m.venue for m in report.metrics} >= {"other"}  # the other venue stays watched

    rows = risk_status(app)
    (broken,) = [m for m in rows if m.state == "ERROR"]
    assert broken.venue == "paper" and "InvalidOperation" in broken.detail
    assert any(line.startswith("❗ `paper` Risk checks") for line in status_lines(rows))
