"""The venue drill (issue 17 item 3): `rollbot drill --venue NAME` places a sentinel far from the
market on a paper/testnet venue, kills that venue through the real kill path, reads the cancel
back, times it and clears its own hold; refused (exit 2, nothing placed) anywhere else.

Against the embedded paper venue in process, and as a real CLI process against the OKX v5 fake
in demo-trading mode (OKX's testnet: a demo key is refused without `x-simulated-trading: 1`)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from fakes.exchange import RunningFakeExchange, start_fake_exchange
from fakes.okx import OkxBook

from rollbot.brokers.base import OrderStatus
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.venue_drill import refuse_unless_paper, run_venue_drill
from rollbot.config import CryptoVenueConfig, IbkrVenueConfig, Settings
from rollbot.errors import BadInput
from rollbot.storage.events import Actor

DRILLER = Actor(id="U0OPERATOR", source="cli", name="operator")


async def test_paper_venue_drill_cancels_its_sentinel_times_it_and_clears_its_hold(
    app: Rollbot,
) -> None:
    result = await run_venue_drill(app, DRILLER, "paper")
    assert result.cancelled and result.hold_cleared, result.detail
    assert result.kill_to_cancel_s is not None and result.kill_to_cancel_s >= 0
    assert result.quantity == Decimal(1) and result.price is not None
    book = app.venues()["paper"].book  # type: ignore[attr-defined]
    mark = book.marks()[result.symbol]
    assert result.price <= mark / 2  # far from the market: it could not have filled
    [row] = book.order_rows("WHERE order_id = ?", (result.order_id,))
    assert row["status"] == OrderStatus.CANCELLED.value and row["side"] == "BUY"
    assert app.killswitch.holds.active() == []
    kinds = [e.kind for e in app.events.list()]
    placed, passed = kinds.index("VENUE_DRILL_SENTINEL_PLACED"), kinds.index("VENUE_DRILL_PASSED")
    assert placed < kinds.index("HOLD_SET") < kinds.index("HOLD_CLEARED") < passed
    assert not app.incidents.get(result.incident_id).is_open


async def test_a_venue_already_held_is_refused_before_anything_is_placed(app: Rollbot) -> None:
    app.killswitch.trigger("venue:paper", "someone's real hold", DRILLER)
    with pytest.raises(BadInput, match=r"already held .*Nothing was placed"):
        await run_venue_drill(app, DRILLER, "paper")
    assert [h.reason for h in app.killswitch.holds.active()] == ["someone's real hold"]
    assert not app.events.list(kinds=["VENUE_DRILL_SENTINEL_PLACED"])


def test_only_venues_marked_paper_or_testnet_may_drill(settings: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    venues = [
        CryptoVenueConfig(name="live-okx", exchange="okx", sandbox=False),
        CryptoVenueConfig(name="test-okx", exchange="okx", sandbox=True),
        IbkrVenueConfig(name="ib-live", account="U1234567"),
        IbkrVenueConfig(name="ib-du", account="DU1234567"),
        IbkrVenueConfig(name="ib-marked", account="F1234", paper=True),
    ]
    rb = Rollbot.open(settings.model_copy(update={"venues": [*settings.venues, *venues]}))
    try:
        for name in ("live-okx", "ib-live"):
            with pytest.raises(BadInput, match=f"venue '{name}' is not marked paper/testnet"):
                refuse_unless_paper(rb, name)
        assert refuse_unless_paper(rb, "test-okx") == "okx in sandbox (testnet) mode"
        assert refuse_unless_paper(rb, "ib-du") == "IB paper account DU1234567"
        assert refuse_unless_paper(rb, "ib-marked") == "marked `paper = true`"
        assert refuse_unless_paper(rb, "paper") == "the embedded paper venue"
        assert rb._venues is None  # refused before any venue was built
    finally:
        rb.db.close()


# -- the CLI against the OKX demo-trading fake ----------------------------------------------------
@pytest.fixture
def okx_demo() -> Iterator[RunningFakeExchange]:
    fake = start_fake_exchange("okx", demo=True)
    try:
        yield fake
    finally:
        fake.stop()


def okx_cli(settings, fake, write_config, rollbot, **overrides):  # type: ignore[no-untyped-def]
    venue = CryptoVenueConfig(**fake.venue_config("okx", rate_limit_ms=1, **overrides))
    cfg = write_config(settings.model_copy(update={"venues": [venue]}), "okx.toml")
    return type(rollbot)(cfg, rollbot.cwd)


def test_drill_venue_on_the_okx_testnet_cancels_the_sentinel_and_reports_the_time(
    settings: Settings, okx_demo: RunningFakeExchange, write_config, rollbot
) -> None:
    book = okx_demo.book
    assert isinstance(book, OkxBook)
    book.add("BTC-USDT", "sell", "0.1", "limit", px="90000")  # the strategy's own order
    cli = okx_cli(settings, okx_demo, write_config, rollbot)
    done = cli("drill", "--venue", "okx", env=okx_demo.env("okx"), timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    [sentinel] = [o for o in book.okx_orders if o.cl_ord_id.startswith("rbdrill")]
    # half of the 60000 last price, OKX's smallest size of BTC-USDT, a BUY limit
    assert (sentinel.side, sentinel.ord_type, sentinel.px) == ("buy", "limit", Decimal(30000))
    assert sentinel.sz == Decimal("0.00000001") and sentinel.state == "canceled"
    assert book.live() == []  # the kill scoped to the venue cancelled everything there
    assert "Sentinel: BUY 0.00000001 BTC/USDT limit 30000 (order " in done.stdout
    assert "Kill INC-0001 scoped to venue:okx: SUCCESS" in done.stdout
    assert "Cancelled at the venue" in done.stdout and "s after the kill" in done.stdout
    assert "Drill hold cleared." in done.stdout
    # every private call carried the demo header (else the fake answers 50101)
    assert all(r.status == 200 for r in book.requests), [
        (r.path, r.status) for r in book.requests if r.status != 200
    ]
    rb = Rollbot.open(settings)  # the same database file
    try:
        assert rb.killswitch.holds.active() == []
        [cleared] = rb.events.list(kinds=["HOLD_CLEARED"])
        assert cleared.scope == "venue:okx" and cleared.reason == "venue drill finished"
        [passed] = rb.events.list(kinds=["VENUE_DRILL_PASSED"])
        assert passed.data["kill_to_cancel_s"] > 0
    finally:
        rb.db.close()


def test_drill_venue_on_a_live_venue_exits_2_and_places_nothing(
    settings: Settings, okx_demo: RunningFakeExchange, write_config, rollbot
) -> None:
    cli = okx_cli(settings, okx_demo, write_config, rollbot, sandbox=False)
    done = cli("drill", "--venue", "okx", env=okx_demo.env("okx"), timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "venue 'okx' is not marked paper/testnet" in done.stderr
    assert "Nothing was placed" in done.stderr and "Traceback" not in done.stderr
    assert okx_demo.book.requests == [] and okx_demo.book.order_requests == []


async def test_a_sentinel_not_confirmed_cancelled_fails_the_drill_and_keeps_the_hold(
    app: Rollbot,
) -> None:
    venue = app.venue("paper")
    venue.disconnect_in(2)  # type: ignore[attr-defined]  # the sentinel goes out, the kill's
    venue.stay_down(True)  # type: ignore[attr-defined]  # cancel finds the gateway gone
    result = await run_venue_drill(app, DRILLER, "paper", read_back_s=0.2)
    assert not result.cancelled and result.kill_to_cancel_s is None and not result.hold_cleared
    assert "left in place" in result.detail
    assert [h.scope for h in app.killswitch.holds.active()] == ["venue:paper"]
    assert app.events.list(kinds=["VENUE_DRILL_FAILED"])
    assert not app.events.list(kinds=["HOLD_CLEARED"])


async def test_an_ib_paper_account_drill_cancels_its_sentinel_at_the_fake_tws(
    settings: Settings,
) -> None:
    from fakes.tws import FakeTws

    async with FakeTws() as tws:  # account DU1234567: an IB paper account
        tws.add_position("AAPL", 100, "190.5")
        ib = IbkrVenueConfig(name="ib", account="DU1234567", port=tws.port, timeout_s=2)
        rb = Rollbot.open(settings.model_copy(update={"venues": [ib]}))
        try:
            result = await run_venue_drill(rb, DRILLER, "ib")
            assert rb.killswitch.holds.active() == []
        finally:
            await rb.aclose()
    assert result.cancelled and result.hold_cleared, result.detail
    [sent] = [o for o in tws.received if o.order_ref.startswith("rbdrill")]
    # BUY 1 share, limit at half the 190.5 mark on the tick
    assert (sent.action, sent.quantity, sent.order_type) == ("BUY", Decimal(1), "LMT")
    assert sent.lmt_price == Decimal("95.25") and sent.account == "DU1234567"
    assert tws.working_orders() == []
    assert result.kill_to_cancel_s is not None


def test_drill_venue_on_a_live_ib_account_exits_2_and_touches_nothing(
    settings: Settings, write_config, rollbot
) -> None:
    """An IB account that is not a paper one ('U…', not marked `paper = true`): refused before
    TWS is even connected, no hold stored, no event written."""
    from fakes.tws import start_fake_tws

    with start_fake_tws([("AAPL", 100, "190.5")], account="U1234567") as tws:
        ib = IbkrVenueConfig(name="ib", account="U1234567", port=tws.port, timeout_s=2)
        cfg = settings.model_copy(update={"venues": [ib]})
        cli = type(rollbot)(write_config(cfg, "ib.toml"), rollbot.cwd)
        done = cli("drill", "--venue", "ib", timeout=60)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "venue 'ib' is not marked paper/testnet" in done.stderr
        assert "`paper = true` (IBKR)" in done.stderr and "starts with 'DU'" in done.stderr
        assert "Nothing was placed" in done.stderr and "Traceback" not in done.stderr
        assert tws.call(lambda t: (t.connections, t.received)) == (0, [])
    rb = Rollbot.open(cfg)
    try:
        assert rb.killswitch.holds.active(["venue:ib"]) == []
        assert rb.events.list(kinds=["VENUE_DRILL_SENTINEL_PLACED"]) == []
    finally:
        rb.db.close()
