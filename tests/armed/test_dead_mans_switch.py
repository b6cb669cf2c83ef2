"""The exchange-armed dead-man's switch (issue 17 item 1) against the loopback OKX v5 fake
(tests/fakes/okx.py: POST /api/v5/trade/cancel-all-after with OKX's signing, its 0 or 10-120 s
range, and a countdown that cancels the account's book orders when it lapses).

In process on a manual clock: armed at start, refreshed every third of the countdown, a refused
refresh alerts once and recovers once, the armed-status check fails and recovers. As real
`rollbot clock` processes: SIGKILL leaves the countdown to lapse and the fake cancels the
orders; SIGTERM disarms and records it; a countdown outside OKX's range exits 2, nothing armed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fakes.exchange import FakeExchange, RunningFakeExchange, _Refusal, start_fake_exchange
from fakes.okx import OkxBook

from rollbot.bot.scheduler import Clockwork
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.risk import preflight
from rollbot.config import CryptoVenueConfig, Settings

SECONDS = 30  # OKX takes 0 or 10-120


def channel_posts(rb: Rollbot) -> list[str]:
    rows = rb.db.query("SELECT payload FROM outbox WHERE kind = 'channel' ORDER BY id")
    return [json.loads(r["payload"]).get("text", "") for r in rows]


def okx_book(fake: FakeExchange | RunningFakeExchange) -> OkxBook:
    assert isinstance(fake.book, OkxBook)
    return fake.book


def with_okx(
    settings: Settings, fake: FakeExchange | RunningFakeExchange, seconds: int
) -> Settings:
    venue = CryptoVenueConfig(
        **fake.venue_config("okx", dead_mans_switch_s=seconds, rate_limit_ms=1)
    )
    return settings.model_copy(update={"venues": [*settings.venues, venue]})


@pytest.fixture
async def okx(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeExchange]:
    async with FakeExchange("okx") as fake:
        for key, value in fake.env("okx").items():
            monkeypatch.setenv(key, value)
        okx_book(fake).add("BTC-USDT-SWAP", "buy", "1", "limit", px="30000")
        yield fake
        assert fake.book.unknown == []


@pytest.fixture
async def work(settings: Settings, okx: FakeExchange) -> AsyncIterator[Clockwork]:
    # the exchange answers its own (real) time: the manual clock starts there
    rb = Rollbot.open(with_okx(settings, okx, SECONDS), clock=ManualClock(datetime.now(UTC)))
    try:
        yield Clockwork(rb)
    finally:
        okx_book(okx).countdown.stop()
        await rb.aclose()


def dms_check(checks: list[preflight.Check]) -> preflight.Check:
    return next(c for c in checks if c.name == "dead_mans_switch:okx")


async def test_armed_at_start_and_refreshed_every_third_of_the_countdown(
    work: Clockwork, okx: FakeExchange
) -> None:
    rb, book = work.app, okx_book(okx)
    assert work._intervals["dead_mans_switch"][0] == SECONDS / 3
    before = dms_check(await preflight.run_checks(rb))
    assert not before.ok and "never armed" in before.reason

    await work.start()
    try:
        assert book.countdown.calls == [SECONDS] and book.countdown.armed
        assert any("okx: armed, 30 s countdown" in n for n in work.dead_mans_switch_notes)
        armed = rb.events.list(kinds=["DEAD_MANS_SWITCH_ARMED"])
        assert [e.data["venue"] for e in armed] == ["okx"]
        check = dms_check(await preflight.run_checks(rb))
        assert check.ok and "the exchange cancels at" in check.reason
        for _ in range(3):  # the rhythm: each tick of the job re-arms the full countdown
            await work.dead_mans_switch.refresh()
        assert book.countdown.calls == [SECONDS] * 4
        signed = book.requests_to("/api/v5/trade/cancel-all-after")
        assert [r.status for r in signed] == [200] * 4  # OKX's signature checked on each
        assert [o.state for o in book.live()] == ["live"]  # refreshed: nothing cancelled
    finally:
        work.shutdown()


async def test_a_refused_refresh_alerts_once_and_once_when_it_recovers(
    work: Clockwork, okx: FakeExchange
) -> None:
    rb, book = work.app, okx_book(okx)
    clock = rb.clock
    assert isinstance(clock, ManualClock)
    await work._arm_dead_mans_switch()
    await work.preflight()
    book.refuse_countdown = _Refusal(50001, "Service temporarily unavailable", 503)
    await work.dead_mans_switch.refresh()
    assert not [p for p in channel_posts(rb) if "Dead-man's switch" in p]  # one miss: quiet
    for _ in range(3):
        await work.dead_mans_switch.refresh()
    alerts = [p for p in channel_posts(rb) if "Dead-man's switch on okx" in p]
    assert len(alerts) == 1 and "2 refreshes in a row failed" in alerts[0], alerts
    assert "Service temporarily unavailable" in alerts[0]

    # the countdown the exchange last answered has run out: the armed status fails, once
    clock.advance(seconds=SECONDS + 1)
    assert not dms_check(await work.preflight()).ok
    await work.preflight()
    failed = [p for p in channel_posts(rb) if "dead_mans_switch:okx FAILED" in p]
    assert len(failed) == 1 and "countdown ran out" in failed[0]

    book.refuse_countdown = None
    clock.set(datetime.now(UTC))
    await work.dead_mans_switch.refresh()
    await work.dead_mans_switch.refresh()
    recovered = [p for p in channel_posts(rb) if "Dead-man's switch on okx refreshed" in p]
    assert len(recovered) == 1
    assert dms_check(await work.preflight()).ok
    assert sum("dead_mans_switch:okx passes again" in p for p in channel_posts(rb)) == 1
    kinds = [e.kind for e in rb.events.list() if e.kind.startswith("DEAD_MANS_SWITCH")]
    assert kinds == [
        "DEAD_MANS_SWITCH_ARMED",
        "DEAD_MANS_SWITCH_REFRESH_FAILED",
        "DEAD_MANS_SWITCH_RECOVERED",
    ]


async def test_a_venue_whose_countdown_cannot_be_armed_says_so_at_start(
    settings: Settings, okx: FakeExchange
) -> None:
    okx_book(okx).refuse_countdown = _Refusal(50120, "API key doesn't have trade permission")
    rb = Rollbot.open(with_okx(settings, okx, SECONDS), clock=ManualClock(datetime.now(UTC)))
    work = Clockwork(rb)
    try:
        await work._arm_dead_mans_switch()
        [note] = work.dead_mans_switch_notes
        assert note.startswith("dead-man's switch on okx: CANNOT be armed: ")
        assert "API key doesn't have trade permission" in note and "retried every 10 s" in note
        assert sum("CANNOT be armed" in p for p in channel_posts(rb)) == 1
        check = dms_check(await preflight.run_checks(rb))
        assert not check.ok and "cannot be armed" in check.reason
        # the key gets its permission back: the next refresh arms it, the check passes
        await work.dead_mans_switch.refresh()  # still refused: announced once, not again
        assert not [p for p in channel_posts(rb) if "refreshes in a row failed" in p]
        okx_book(okx).refuse_countdown = None
        await work.dead_mans_switch.refresh()
        assert dms_check(await preflight.run_checks(rb)).ok
        assert sum("Dead-man's switch on okx refreshed again" in p for p in channel_posts(rb)) == 1
        assert okx_book(okx).countdown.calls == [SECONDS]
    finally:
        await rb.aclose()


# -- as real processes ----------------------------------------------------------------------------
@pytest.fixture
def okx_thread() -> Iterator[RunningFakeExchange]:
    fake = start_fake_exchange("okx")
    okx_book(fake).add("BTC-USDT-SWAP", "buy", "1", "limit", px="30000")
    okx_book(fake).add("BTC-USDT", "buy", "0.01", "limit", px="30000")
    try:
        yield fake
    finally:
        okx_book(fake).countdown.stop()
        fake.stop()


@pytest.fixture
def clock_cli(settings, okx_thread, write_config, rollbot, tmp_path):  # type: ignore[no-untyped-def]
    """The CLI fixture pointed at a config with the OKX fake's venue at `seconds`."""

    def make(seconds: int):  # type: ignore[no-untyped-def]
        cfg = write_config(with_okx(settings, okx_thread, seconds), "okx.toml")
        return type(rollbot)(cfg, tmp_path)

    return make


def wait_for(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigkilled_clock_leaves_the_countdown_to_lapse_and_the_exchange_cancels(
    settings: Settings, okx_thread: RunningFakeExchange, clock_cli
) -> None:
    # OKX's smallest countdown (10 s) on the fake's timer at half speed: it lapses 5 s after
    # the last refresh, while the clock refreshes every 10/3 s of real time
    book = okx_book(okx_thread)
    book.countdown.scale = 0.5
    cli = clock_cli(10)
    proc = cli.popen("clock", env=okx_thread.env("okx"))
    try:
        wait_for(lambda: len(book.countdown.calls) >= 2, 12)  # armed, then refreshed
        assert [o.state for o in book.live()] == ["live", "live"]  # kept alive by refreshes
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        assert book.countdown.lapsed.wait(8), "the countdown did not lapse"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert book.countdown.calls == [10] * len(book.countdown.calls)  # never disarmed
    assert book.live() == [] and all(o.state == "canceled" for o in book.okx_orders)


def test_a_clean_stop_disarms_and_records_it(
    settings: Settings, okx_thread: RunningFakeExchange, clock_cli
) -> None:
    book = okx_book(okx_thread)
    cli = clock_cli(60)
    proc = cli.popen("clock", env=okx_thread.env("okx"))
    try:
        wait_for(lambda: len(book.countdown.calls) >= 1, 12)
        wait_for(lambda: proc.stdout is not None and "ready" in proc.stdout.readline(), 5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert book.countdown.calls == [60, 0] and not book.countdown.armed
    assert "dead-man's switch on okx: disarmed: rollbot clock stopped by a signal" in err
    assert [o.state for o in book.live()] == ["live", "live"]
    rb = Rollbot.open(with_okx(settings, okx_thread, 60))
    try:
        events = rb.events.list(kinds=["DEAD_MANS_SWITCH_DISARMED"])
        assert [e.data["venue"] for e in events] == ["okx"]
        check = dms_check(await_checks(rb))
        assert not check.ok and "disarmed" in check.reason
    finally:
        asyncio.run(rb.aclose())


def await_checks(rb: Rollbot) -> list[preflight.Check]:
    return asyncio.run(preflight.run_checks(rb))


def test_a_countdown_outside_okx_range_exits_2_naming_it_and_arms_nothing(
    okx_thread: RunningFakeExchange, clock_cli
) -> None:
    for command, seconds in (("clock", 5), ("preflight", 121)):
        cli = clock_cli(10)  # then written as a person would: the model refuses it
        text = cli.config.read_text()
        assert "dead_mans_switch_s = 10" in text
        cli.config.write_text(
            text.replace("dead_mans_switch_s = 10", f"dead_mans_switch_s = {seconds}")
        )
        done = cli(command, env=okx_thread.env("okx"), timeout=30)
        assert done.returncode == 2, done.stdout + done.stderr
        assert (
            f"venue 'okx': dead_mans_switch_s = {seconds} is outside what okx allows:"
            " 10 to 120 seconds"
        ) in done.stderr
        assert "Traceback" not in done.stderr
    assert okx_book(okx_thread).countdown.calls == []
    assert okx_book(okx_thread).requests == []  # nothing reached the exchange


def test_a_drill_schedule_that_does_not_parse_exits_2_and_arms_nothing(
    okx_thread: RunningFakeExchange, clock_cli
) -> None:
    """The schedule is read with the rest of the config, before anything starts: the clock
    that would arm the countdown (and serve) exits 2 naming the key and the allowed form."""
    for command in ("clock", "serve"):
        cli = clock_cli(SECONDS)
        text = cli.config.read_text()
        assert 'schedule = "0 6 1 * *"' in text  # then edited as a person would
        bad = 'schedule = "first monday of the month"'
        cli.config.write_text(text.replace('schedule = "0 6 1 * *"', bad))
        done = cli(command, env=okx_thread.env("okx"), timeout=30)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "drills.schedule" in done.stderr
        assert "'first monday of the month' is not a cron expression" in done.stderr
        assert "(minute hour day month weekday, e.g. '0 6 1 * *')" in done.stderr
        assert "Traceback" not in done.stderr
    assert okx_book(okx_thread).countdown.calls == []
    assert okx_book(okx_thread).requests == []  # nothing reached the exchange


# -- Binance USDⓈ-M: one countdown per symbol (tests/fakes/binance_usdm.py) -----------------------
async def test_binance_usdm_arms_each_symbol_and_a_lapse_cancels_that_symbols_orders(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakes.binance_usdm import BinanceUsdmBook

    async with FakeExchange("binance") as fake:
        book = fake.book
        assert isinstance(book, BinanceUsdmBook)
        for key, value in fake.env("binance").items():
            monkeypatch.setenv(key, value)
        btc = book.add_futures_order("BTCUSDT", "BUY", "0.01", price="30000")
        eth = book.add_futures_order("ETHUSDT", "BUY", "0.1", price="1500")
        venue = CryptoVenueConfig(
            **fake.venue_config(
                "binance",
                market="derivatives",
                symbols=["BTC/USDT:USDT"],  # the countdown covers the named symbols only
                dead_mans_switch_s=30,
                rate_limit_ms=1,
            )
        )
        rb = Rollbot.open(
            settings.model_copy(update={"venues": [venue]}), clock=ManualClock(datetime.now(UTC))
        )
        work = Clockwork(rb)
        try:
            await work._arm_dead_mans_switch()
            await work.dead_mans_switch.refresh()
            assert book.countdown_calls == [("BTCUSDT", 30000)] * 2
            check = dms_check_of(await preflight.run_checks(rb), "binance")
            assert check.ok, check.reason
            # rollbot is gone: the fake's timer at 1/100 speed lapses 0.3 s after the refresh
            book.countdown_scale = 0.01
            await work.dead_mans_switch.refresh()
            lapsed = book.countdowns["BTCUSDT"].lapsed
            for _ in range(100):
                if lapsed.is_set():
                    break
                await asyncio.sleep(0.02)
            assert lapsed.is_set()
            assert (btc.status, eth.status) == ("CANCELED", "NEW")  # its symbol only
        finally:
            book.stop_countdowns()
            await rb.aclose()


def dms_check_of(checks: list[preflight.Check], venue: str) -> preflight.Check:
    return next(c for c in checks if c.name == f"dead_mans_switch:{venue}")


# -- Kraken and Gate spot: one countdown for the account (tests/fakes/kraken.py, gate.py) ---------
@pytest.mark.parametrize("kind", ["kraken", "gate"])
async def test_kraken_and_gate_arm_refresh_lapse_and_disarm(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    async with FakeExchange(kind) as fake:  # type: ignore[arg-type]
        book: Any = fake.book
        for key, value in fake.env(kind).items():
            monkeypatch.setenv(key, value)
        if kind == "kraken":
            order = book.add("XBTUSDT", "buy", "0.01", "limit", price="30000")
        else:
            order = book.add("BTC_USDT", "buy", "0.01", "30000")
        venue = CryptoVenueConfig(**fake.venue_config(kind, dead_mans_switch_s=30, rate_limit_ms=1))
        rb = Rollbot.open(
            settings.model_copy(update={"venues": [venue]}), clock=ManualClock(datetime.now(UTC))
        )
        work = Clockwork(rb)
        try:
            await work._arm_dead_mans_switch()
            await work.dead_mans_switch.refresh()
            assert book.countdown.calls == [30, 30]
            check = dms_check_of(await preflight.run_checks(rb), kind)
            assert check.ok, check.reason
            book.countdown.scale = 0.01  # rollbot goes quiet: the lapse comes 0.3 s later
            await work.dead_mans_switch.refresh()
            for _ in range(100):
                if book.countdown.lapsed.is_set():
                    break
                await asyncio.sleep(0.02)
            assert book.countdown.lapsed.is_set() and order.status in ("canceled", "cancelled")
            await work.disarm_dead_mans_switch("test stop")
            assert book.countdown.calls == [30, 30, 30, 0] and not book.countdown.armed
        finally:
            book.countdown.stop()
            await rb.aclose()
        assert book.unknown == []


async def test_serve_arms_at_start_and_a_sigterm_disarms(
    tmp_path, okx: FakeExchange, write_config, rollbot
) -> None:  # type: ignore[no-untyped-def]
    from fakes.rollbot_harness import bot_settings
    from fakes.slack import FakeSlack

    book = okx_book(okx)
    config = write_config(with_okx(bot_settings(tmp_path), okx, 60), "serve.toml")
    cli = type(rollbot)(config, tmp_path)
    async with FakeSlack() as slack:
        env = {
            **okx.env("okx"),
            "SLACK_API_URL": slack.api_url,
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_APP_TOKEN": slack.app_token,
        }
        proc = await asyncio.create_subprocess_exec(
            *cli.argv(("serve",)),
            cwd=tmp_path,
            env=cli.env(env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await slack.wait_until(lambda: book.countdown.calls == [60], timeout=20)
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert book.countdown.calls == [60, 0] and not book.countdown.armed
    assert "dead-man's switch on okx: disarmed: rollbot serve stopped by a signal" in err.decode()


async def test_an_exchange_without_a_countdown_says_so_at_start_and_is_not_retried(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeExchange("bybit") as fake:
        for key, value in fake.env("bybit").items():
            monkeypatch.setenv(key, value)
        venue = CryptoVenueConfig(**fake.venue_config("bybit", dead_mans_switch_s=30))
        rb = Rollbot.open(
            settings.model_copy(update={"venues": [venue]}), clock=ManualClock(datetime.now(UTC))
        )
        work = Clockwork(rb)
        try:
            await work._arm_dead_mans_switch()
            assert work.dead_mans_switch_notes == [
                "dead-man's switch on bybit: CANNOT be armed: Bybit's countdown (DCP) fires when"
                " its private websocket drops, and rollbot speaks REST only"
            ]
            await work.dead_mans_switch.refresh()
            await work.dead_mans_switch.refresh()
            assert not [p for p in channel_posts(rb) if "refreshes in a row failed" in p]
            check = dms_check_of(await preflight.run_checks(rb), "bybit")
            assert not check.ok and "DCP" in check.reason
            assert fake.book.unknown == []
        finally:
            await rb.aclose()
