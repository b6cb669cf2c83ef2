"""Armed status (issue 17) for a crypto venue: its key's permission to trade, read without
sending an order (a cancel of an order id that cannot exist), and the venue going down. Each is
shown failing and recovering at the terminal (exit code and table), in the stored check and as
one ops-channel alert per change."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.exchange import FakeExchange, RunningFakeExchange, fast_venue, start_fake_exchange

from rollbot.bot.scheduler import Clockwork
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.desk.liveness import ME
from rollbot.commands.risk import preflight
from rollbot.commands.risk.preflight import MONITOR_LEASE
from rollbot.commands.rollback.engine import Engine
from rollbot.config import CryptoVenueConfig, Settings
from rollbot.storage.events import Actor
from rollbot.storage.leases import Holder, Leases

KEY_REFUSED = "Invalid API-key, IP, or permissions for action."


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


def with_binance(settings: Settings, fake: RunningFakeExchange | FakeExchange) -> Settings:
    venue = CryptoVenueConfig(**fake.venue_config("binance", market="derivatives", rate_limit_ms=1))
    return settings.model_copy(update={"venues": [*settings.venues, venue]})


@pytest.fixture
def binance() -> Iterator[RunningFakeExchange]:
    with start_fake_exchange("binance") as fake:
        yield fake


def test_a_read_only_key_fails_preflight_until_it_may_trade(
    settings: Settings, binance: RunningFakeExchange, write_config, rollbot, tmp_path: Path
) -> None:
    # every other check passes, so the exit code is the venue's: gates safe, a drill passed,
    # and this (live) test process holds the risk monitor's lease
    assert rollbot("gates", "disable", "--confirm").returncode == 0
    assert rollbot("drill").returncode == 0
    armed = with_binance(settings, binance)
    rb = Rollbot.open(armed)
    holder = Holder(id="test-monitor", host=ME["host"], pid=ME["pid"], started=ME["started"])
    Leases(rb.db).hold(MONITOR_LEASE, holder, rb.clock.now(), ttl_s=3600)
    cli = type(rollbot)(write_config(armed, "binance.toml"), tmp_path)
    env = binance.env("binance")

    binance.book.trade_permission = False  # "Enable Reading" only
    for _ in range(2):  # the same failure twice: one alert
        refused = cli("preflight", env=env)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        row = table_rows(refused.stdout)["venue:binance"]
        assert "FAIL" in row and "-2015" in row and KEY_REFUSED in row, row
        assert "give binance's API key permission to trade and cancel" in row
        assert "Not armed: 1 of " in refused.stdout
    [stored] = [c for c in preflight.latest(rb) if c.name == "venue:binance"]
    assert not stored.ok and KEY_REFUSED in stored.reason
    alerts = [p for p in channel_posts(rb) if "venue:binance" in p]
    assert len(alerts) == 1 and "venue:binance FAILED" in alerts[0] and "-2015" in alerts[0]
    # the probe sent no order, only cancels (refused)
    assert binance.book.order_requests == [] and binance.book.live_futures() == []

    binance.book.trade_permission = True  # the key is given trading permission
    allowed = cli("preflight", env=env)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    row = table_rows(allowed.stdout)["venue:binance"]
    assert "PASS" in row and "looked up a cancel on BTC/USDT:USDT" in row, row
    assert "Armed: every check passes." in allowed.stdout
    [stored] = [c for c in preflight.latest(rb) if c.name == "venue:binance"]
    assert stored.ok
    alerts = [p for p in channel_posts(rb) if "venue:binance" in p]
    assert alerts[1:] == ["✅ Armed status: venue:binance passes again."]
    asyncio.run(rb.aclose())


@pytest.mark.parametrize("market", ["spot", "derivatives"])
async def test_trading_permission_reads_the_exchange_answer(market: str) -> None:
    """On spot, ccxt takes -2015 after a successful read for a temporary ban (DDoSProtection);
    it is still a key that may not trade now."""
    async with FakeExchange("binance") as fake:
        venue = fast_venue(fake, "binance", 1, market=market)
        try:
            await venue.connect(read_only=True)
            await venue.positions()  # a private read first, as the preflight does
            can, why = await venue.trading_permission()
            assert can and "looked up a cancel" in why
            fake.book.trade_permission = False
            can, why = await venue.trading_permission()
            assert not can and "refused this key a cancel" in why and KEY_REFUSED in why
        finally:
            await venue.close()
        assert fake.book.order_requests == []
        assert fake.book.unknown == []


async def test_a_venue_that_stops_answering_fails_then_recovers(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = await FakeExchange("binance").start()
    for key, value in fake.env("binance").items():
        monkeypatch.setenv(key, value)
    port = fake.port
    rb = Rollbot.open(with_binance(settings, fake))
    try:
        first = {c.name: c for c in await preflight.preflight(rb)}
        assert first["venue:binance"].ok

        await fake.stop()  # the venue is down: nothing listens on its port
        for _ in range(2):
            down = {c.name: c for c in await preflight.preflight(rb)}["venue:binance"]
            assert not down.ok and down.reason.startswith("unreachable: binance:"), down
            assert down.action == "check that binance is up and reachable from this host"
        [stored] = [c for c in preflight.latest(rb) if c.name == "venue:binance"]
        assert not stored.ok and stored.reason == down.reason  # the latest answer is kept
        alerts = [p for p in channel_posts(rb) if "venue:binance" in p]
        assert len(alerts) == 1, alerts  # down twice: announced once
        assert alerts[0].startswith("🔴 Armed status: venue:binance FAILED: unreachable")
        assert alerts[0].endswith("What to do: " + down.action + ".")

        await fake.start(port)  # back, on the same address
        up = {c.name: c for c in await preflight.preflight(rb)}["venue:binance"]
        assert up.ok, up
        alerts = [p for p in channel_posts(rb) if "venue:binance" in p]
        assert alerts[1:] == ["✅ Armed status: venue:binance passes again."]
    finally:
        await rb.aclose()
        await fake.stop()


async def test_a_scheduled_preflight_leaves_the_kill_able_to_cancel(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve and clock check the venue the next /kill cancels through: the check connected it
    read-only, and the kill then refused to cancel ("connected read-only")."""
    async with FakeExchange("binance") as fake:
        for key, value in fake.env("binance").items():
            monkeypatch.setenv(key, value)
        resting = fake.book.add_order("BTCUSDT", "BUY", "0.01", "20000")
        spot = CryptoVenueConfig(**fake.venue_config("binance", market="spot", rate_limit_ms=1))
        rb = Rollbot.open(settings.model_copy(update={"venues": [spot]}), clock=ManualClock())
        work = Clockwork(rb)
        try:
            assert {c.name: c for c in await work.preflight()}["venue:binance"].ok
            operator = Actor(id="U0OPERATOR", source="cli", name="ops")
            outcome = await Engine(rb, operator).kill("runaway strategy", "global")
            assert outcome.steps[0].venues["binance"] == "1 of 1 orders cancelled, none left"
            assert resting.status == "CANCELLED" and fake.book.open_orders() == []
        finally:
            work.shutdown()
            await rb.aclose()
