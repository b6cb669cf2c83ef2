"""Armed status (issue 17) for an IBKR venue: may this API session trade and cancel, read
without sending an order. A what-if order (Order.whatIf: TWS runs its credit check and answers
with the margin impact, never transmitting the order) passes on a normal gateway; TWS's
"Read-Only API" setting refuses it, and every cancel and order read, with error 321. Shown at
the venue, at the terminal (exit code and table, one ops-channel alert per change) and in a
long-running process whose connection the next /kill shares."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fakes.tws import READ_ONLY_API, FakeTws, start_fake_tws

from rollbot.bot.scheduler import Clockwork
from rollbot.brokers.base import (
    CloseRequest,
    Side,
    TradingRefused,
    VenueError,
    VenueEvent,
    VenueEventKind,
)
from rollbot.brokers.ibkr.mapping import READ_ONLY_ACTION
from rollbot.brokers.ibkr.venue import IbkrVenue
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.desk.liveness import ME
from rollbot.commands.risk import preflight
from rollbot.commands.risk.preflight import MONITOR_LEASE
from rollbot.commands.rollback.engine import Engine
from rollbot.config import IbkrVenueConfig, Settings
from rollbot.storage.events import Actor
from rollbot.storage.leases import Holder, Leases

UNCHECK = "uncheck Global Configuration > API > Settings > Read-Only API"


def only_what_ifs(tws: FakeTws) -> bool:
    """Nothing that reached the gateway could have become a live order."""
    return all(r.what_if for r in tws.received)


@pytest.fixture
async def tws() -> AsyncIterator[FakeTws]:
    fake = FakeTws()
    fake.add_position("AAPL", 100, "190.5")
    fake.add_order("AAPL", "SELL", 100, "STP", aux_price="180", client_id=1)  # the strategy's
    await fake.start()
    yield fake
    await fake.stop()


async def venue_on(tws: FakeTws, **overrides: Any) -> IbkrVenue:
    venue = IbkrVenue(IbkrVenueConfig(port=tws.port, timeout_s=2, **overrides))
    await venue.connect(read_only=True)  # a what-if is allowed on a read-only connection
    return venue


async def test_a_what_if_proves_trading_permission_and_never_becomes_an_order(
    tws: FakeTws,
) -> None:
    venue = await venue_on(tws)
    try:
        orders_before = dict(tws.orders)
        can, why, action = await venue.trading_permission()
        assert can, why
        assert why.startswith("TWS answered a what-if SELL 1 AAPL with its margin impact")
        assert "nothing was transmitted" in why and action == ""
        assert tws.what_ifs == 1 and len(tws.received) == 1 and only_what_ifs(tws)
        assert tws.orders == orders_before and tws.fills == []  # no order entered the book
        assert tws.position("AAPL") == 100
    finally:
        await venue.close()


async def test_a_read_only_api_refuses_the_what_if_then_recovers(tws: FakeTws) -> None:
    venue = await venue_on(tws)
    try:
        tws.read_only_api = True  # someone checks "Read-Only API" in TWS
        can, why, action = await venue.trading_permission()
        assert not can
        assert "TWS refused a what-if SELL 1 AAPL: its API is read-only (error 321" in why
        assert READ_ONLY_API in why and action == READ_ONLY_ACTION and UNCHECK in action
        # order reads are refused too, said at once rather than after the 2 s timeout
        with pytest.raises(TradingRefused, match="API is read-only") as refused:
            await venue.open_orders()
        assert refused.value.action == READ_ONLY_ACTION and refused.value.code == "321"

        tws.read_only_api = False  # unchecked again
        can, why, _ = await venue.trading_permission()
        assert can, why
        assert only_what_ifs(tws) and tws.what_ifs == 1
    finally:
        await venue.close()


async def test_a_kill_through_a_read_only_api_says_so_at_once(tws: FakeTws) -> None:
    venue = IbkrVenue(IbkrVenueConfig(port=tws.port, timeout_s=5))
    await venue.connect()
    try:
        tws.read_only_api = True
        with pytest.raises(TradingRefused, match="API is read-only"):
            await venue.cancel_all()
        assert tws.global_cancels == 0 and len(tws.working_orders()) == 1
    finally:
        await venue.close()
    # and a fresh read-write connect (a terminal kill) is refused at once, not after its timeout
    again = IbkrVenue(IbkrVenueConfig(port=tws.port, timeout_s=5))
    with pytest.raises(TradingRefused, match="connecting to TWS/Gateway"):
        await again.connect()
    await again.close()


async def test_the_fake_tells_a_live_order_from_a_what_if(tws: FakeTws) -> None:
    """The guard above (only what-ifs arrived) would catch a probe sent as a real order."""
    venue = IbkrVenue(IbkrVenueConfig(port=tws.port, timeout_s=2))
    await venue.connect()
    try:
        await venue.trading_permission()
        close = CloseRequest(
            symbol="AAPL", side=Side.SELL, quantity=Decimal(1), client_order_id="rb-close-1"
        )
        await venue.submit_close(close)
        probe, live = tws.received
        assert probe.what_if and not live.what_if and live.transmit
        assert not only_what_ifs(tws)
    finally:
        await venue.close()


async def test_nothing_held_the_what_if_names_the_probe_stock() -> None:
    async with FakeTws() as tws:
        tws.instrument("SPY", 600)  # known to IB, not held
        venue = await venue_on(tws)
        seen: list[VenueEvent] = []
        venue.subscribe(seen.append)
        try:
            can, why, _ = await venue.trading_permission()
            assert can and "what-if BUY 1 SPY" in why, why

            tws.what_if_reject = "YOUR ACCOUNT IS NOT APPROVED FOR TRADING STOCKS"
            can, why, action = await venue.trading_permission()
            assert not can and "error 201" in why and "NOT APPROVED" in why
            assert "permission_probe" in action
            assert only_what_ifs(tws) and tws.orders == {}
            # no order was refused: nothing for the risk monitor's rejection rate to count
            assert [e for e in seen if e.kind is VenueEventKind.REJECT] == []
        finally:
            await venue.close()
        unknown = await venue_on(tws, permission_probe="NOPE")
        try:
            with pytest.raises(VenueError, match="permission_probe 'NOPE'"):
                await unknown.trading_permission()
        finally:
            await unknown.close()


# -- the terminal: `rollbot preflight` -----------------------------------------------------------
def channel_posts(rb: Rollbot) -> list[str]:
    rows = rb.db.query("SELECT payload FROM outbox WHERE kind = 'channel' ORDER BY id")
    return [json.loads(r["payload"]).get("text", "") for r in rows]


def table_rows(stdout: str) -> dict[str, str]:
    """The table's rows by check name, a wrapped row's lines joined."""
    rows: dict[str, str] = {}
    last = ""
    for line in stdout.splitlines():
        cells = line.split("│")
        if len(cells) < 3:
            continue
        name = cells[1].strip()
        if name and name != "check":
            last = name
            rows[name] = ""
        if last:
            rows[last] += " " + " ".join(c.strip() for c in cells[2:])
    return rows


def test_preflight_fails_on_a_read_only_api_until_it_is_unchecked(
    settings: Settings, write_config, rollbot, tmp_path: Path
) -> None:
    # every other check passes, so the exit code is the venue's
    assert rollbot("gates", "disable", "--confirm").returncode == 0
    assert rollbot("drill").returncode == 0
    with start_fake_tws([("AAPL", 100, "190.5")]) as handle:
        ibkr = IbkrVenueConfig(port=handle.port, timeout_s=3)
        armed = settings.model_copy(update={"venues": [*settings.venues, ibkr]})
        rb = Rollbot.open(armed)
        holder = Holder(id="test-monitor", host=ME["host"], pid=ME["pid"], started=ME["started"])
        Leases(rb.db).hold(MONITOR_LEASE, holder, rb.clock.now(), ttl_s=3600)
        cli = type(rollbot)(write_config(armed, "ibkr.toml"), tmp_path)
        try:
            normal = cli("preflight")
            assert normal.returncode == 0, normal.stdout + normal.stderr
            row = table_rows(normal.stdout)["venue:ibkr"]
            assert "PASS" in row and "what-if SELL 1 AAPL" in row, row

            handle.call(lambda t: setattr(t, "read_only_api", True))
            for _ in range(2):  # the same failure twice: one alert
                refused = cli("preflight")
                assert refused.returncode == 1, refused.stdout + refused.stderr
                row = table_rows(refused.stdout)["venue:ibkr"]
                assert "FAIL" in row and "API is read-only" in row and "Read-Only mode" in row
                assert UNCHECK in row, row
                assert "Not armed: 1 of " in refused.stdout
            [stored] = [c for c in preflight.latest(rb) if c.name == "venue:ibkr"]
            assert not stored.ok and stored.action == READ_ONLY_ACTION
            alerts = [p for p in channel_posts(rb) if "venue:ibkr" in p]
            assert len(alerts) == 1 and "venue:ibkr FAILED" in alerts[0], alerts
            assert "What to do: " + READ_ONLY_ACTION in alerts[0]

            handle.call(lambda t: setattr(t, "read_only_api", False))
            fixed = cli("preflight")
            assert fixed.returncode == 0, fixed.stdout + fixed.stderr
            assert "PASS" in table_rows(fixed.stdout)["venue:ibkr"]
            alerts = [p for p in channel_posts(rb) if "venue:ibkr" in p]
            assert alerts[1:] == ["✅ Armed status: venue:ibkr passes again."]
            assert handle.call(only_what_ifs) and handle.call(lambda t: t.orders) == {}
        finally:
            asyncio.run(rb.aclose())


# -- a long-running process: the venue the check reads is the one the next /kill uses ----------
OPERATOR = Actor(id="U0OPERATOR", source="cli", name="ops")


async def test_a_scheduled_preflight_leaves_the_kill_able_to_cancel(
    settings: Settings, tws: FakeTws
) -> None:
    """serve and clock run the checks on their own venues: a read-only reconnect there left the
    next /kill refusing every cancel ("connected read-only")."""
    ibkr = IbkrVenueConfig(port=tws.port, timeout_s=2, reconnect_backoff_s=[0.05])
    rb = Rollbot.open(settings.model_copy(update={"venues": [ibkr]}), clock=ManualClock())
    work = Clockwork(rb)
    try:
        checks = {c.name: c for c in await work.preflight()}
        assert checks["venue:ibkr"].ok, checks["venue:ibkr"]
        outcome = await Engine(rb, OPERATOR).kill("runaway strategy", "global")
        assert outcome.steps[0].venues["ibkr"] == "1 of 1 orders cancelled, none left"
        assert tws.global_cancels == 1 and tws.working_orders() == []
        assert only_what_ifs(tws)
    finally:
        work.shutdown()
        await rb.aclose()


async def test_a_read_only_api_on_a_kept_connection_fails_then_recovers(
    settings: Settings, tws: FakeTws
) -> None:
    ibkr = IbkrVenueConfig(port=tws.port, timeout_s=2, reconnect_backoff_s=[0.05])
    rb = Rollbot.open(settings.model_copy(update={"venues": [ibkr]}), clock=ManualClock())
    work = Clockwork(rb)
    try:
        assert {c.name: c for c in await work.preflight()}["venue:ibkr"].ok
        tws.read_only_api = True  # the setting changes under a session already open
        for _ in range(2):
            check = {c.name: c for c in await work.preflight()}["venue:ibkr"]
            assert not check.ok and check.reason.startswith("refuses to trade or cancel: ")
            assert "open orders: TWS answered that its API is read-only" in check.reason
            assert check.action == READ_ONLY_ACTION
        tws.read_only_api = False
        assert {c.name: c for c in await work.preflight()}["venue:ibkr"].ok
        alerts = [p for p in channel_posts(rb) if "venue:ibkr" in p]
        assert len(alerts) == 2 and "venue:ibkr FAILED: refuses to trade" in alerts[0]
        assert alerts[1] == "✅ Armed status: venue:ibkr passes again."
        assert tws.connections == 1  # the checks never reconnected the shared session
        assert only_what_ifs(tws)
    finally:
        work.shutdown()
        await rb.aclose()
