"""`rollbot positions` and `rollbot rollback --confirm` against two loopback exchanges at once
(Bybit linear perpetuals, Binance spot), with nothing but rollbot.toml and the environment
variables it names: the CLI runs in its own process, the exchanges in threads of this one.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from fakes.exchange import RunningFakeExchange, start_fake_exchange

from rollbot.config import CryptoVenueConfig, FlattenConfig, Settings

D = Decimal
Run = Callable[..., CompletedProcess[str]]
# ccxt's limiter stays on, at a millisecond; market closes whatever the book is worth
FAST = {"rate_limit_ms": 1}
AT_MARKET = FlattenConfig(recheck_interval_s=0.05, market_exposure_threshold=D(10**9))


@pytest.fixture
def bybit() -> Iterator[RunningFakeExchange]:
    secret = f"bybit-secret-{uuid.uuid4().hex}"
    positions = {"BTCUSDT": "0.5", "ETHUSDT": "-2"}  # a long and a short perpetual
    with start_fake_exchange("bybit", positions=positions, secret=secret) as fake:
        fake.book.add_order("BTCUSDT", "SELL", "0.5", trigger_price="50000")  # the stop-loss
        yield fake
    assert fake.book.unknown == [], "ccxt asked for routes the fake does not serve"


@pytest.fixture
def binance() -> Iterator[RunningFakeExchange]:
    secret = f"binance-secret-{uuid.uuid4().hex}"
    # DOGE is dust: 5 x 0.1 = 0.5 USDT, under the configured 1 USDT
    balances = {"BTC": "0.25", "ETH": "1.5", "DOGE": "5", "USDT": "100"}
    with start_fake_exchange("binance", balances=balances, secret=secret) as fake:
        fake.book.add_order("BTCUSDT", "SELL", "0.25", "55000", trigger_price="56000")  # stop-limit
        yield fake
    assert fake.book.unknown == [], "ccxt asked for routes the fake does not serve"


@pytest.fixture
def run(
    bybit: RunningFakeExchange,
    binance: RunningFakeExchange,
    integration: Callable[..., Settings],
    cli: Callable[[Settings], Run],
) -> Run:
    venues = [
        CryptoVenueConfig(**bybit.venue_config("bybit", **FAST)),
        CryptoVenueConfig(**binance.venue_config("spot", **FAST)),
    ]
    return cli(integration(venues=venues, flatten=AT_MARKET))


def table_rows(text: str) -> dict[str, Decimal]:
    """Symbol -> quantity from the positions tables."""
    pattern = r"│ (?P<symbol>[A-Z]+/[A-Z]+(?::[A-Z]+)?)\s+│\s+(?P<qty>-?[\d.]+)\s+│"
    return {m["symbol"]: D(m["qty"]) for m in re.finditer(pattern, text)}


def test_positions_then_rollback_closes_perpetuals_reduce_only_and_sells_spot_to_usdt(
    bybit: RunningFakeExchange, binance: RunningFakeExchange, run: Run, tmp_path: Path
) -> None:
    env = {**bybit.env("bybit"), **binance.env("spot")}
    outputs: list[CompletedProcess[str]] = []

    # -- the credentials come from the environment or not at all
    bare = run("positions")
    outputs.append(bare)
    assert bare.returncode == 2
    assert "environment variable ROLLBOT_FAKE_BYBIT_KEY (api key) is not set" in bare.stderr
    assert bybit.book.requests == [] and binance.book.requests == []

    # -- rollbot positions
    shown = run("positions", env=env)
    outputs.append(shown)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert table_rows(shown.stdout) == {
        "BTC/USDT:USDT": D("0.5"),
        "ETH/USDT:USDT": D(-2),
        "BTC/USDT": D("0.25"),
        "ETH/USDT": D("1.5"),
    }  # and no DOGE: dust
    assert "bybit: 1 open orders" in shown.stdout and "spot: 1 open orders" in shown.stdout
    assert re.search(r"SELL 0\.5 BTC/USDT:USDT STOP 50000\b", shown.stdout)
    assert re.search(r"SELL 0\.25 BTC/USDT STOP_LIMIT 55000\b", shown.stdout)
    assert bybit.book.order_requests == [] and binance.book.order_requests == []

    # -- rollbot rollback --confirm, both venues at once
    rolled = run("rollback", "--reason", "exchange incident", "--confirm", env=env)
    outputs.append(rolled)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    out = " ".join(rolled.stdout.split())
    assert "INC-0001 rollback: SUCCESS" in out
    assert "bybit: 1 of 1 orders cancelled, none left" in out
    assert "spot: 1 of 1 orders cancelled, none left" in out

    # Bybit: the stop cancelled; each perpetual closed by one reduce-only market order
    assert [(o.trigger_price, o.status) for o in bybit.book.orders if not o.reduce_only] == [
        (D(50000), "CANCELLED")
    ]
    assert sorted(
        (r["symbol"], r["side"], r["qty"], r["orderType"], r["reduceOnly"], r["category"])
        for r in bybit.book.order_requests
    ) == [
        ("BTCUSDT", "Sell", "0.5", "Market", True, "linear"),
        ("ETHUSDT", "Buy", "2", "Market", True, "linear"),
    ]
    assert (bybit.book.position("BTCUSDT"), bybit.book.position("ETHUSDT")) == (0, 0)
    # Binance: the stop-limit cancelled; the holdings sold at market into USDT, dust left alone
    assert [o.status for o in binance.book.orders if o.trigger_price is not None] == ["CANCELLED"]
    assert sorted(
        (r["symbol"], r["side"], r["quantity"], r["type"]) for r in binance.book.order_requests
    ) == [("BTCUSDT", "SELL", "0.25", "MARKET"), ("ETHUSDT", "SELL", "1.5", "MARKET")]
    held = {a: binance.book.balance(a) for a in ("BTC", "ETH", "DOGE", "USDT")}
    assert held == {
        "BTC": 0,
        "ETH": 0,
        "DOGE": 5,
        "USDT": 100 + D("0.25") * 60000 + D("1.5") * 3000,
    }

    # -- the JSON report lists the four closes
    report = run("report", "INC-0001", "--format", "json")
    outputs.append(report)
    assert report.returncode == 0, report.stderr
    log = json.loads(report.stdout)
    assert log["final_status"] == "SUCCESS"
    assert sorted(
        (o["venue"], o["symbol"], o["direction"], o["quantity"], o["type"], o["status"])
        for o in log["steps"][3]["orders"]
    ) == [
        ("bybit", "BTC/USDT:USDT", "SELL", 0.5, "MARKET", "FILLED"),
        ("bybit", "ETH/USDT:USDT", "BUY", 2.0, "MARKET", "FILLED"),
        ("spot", "BTC/USDT", "SELL", 0.25, "MARKET", "FILLED"),
        ("spot", "ETH/USDT", "SELL", 1.5, "MARKET", "FILLED"),
    ]

    # -- the secrets were used (the fakes check every signature) and stored or printed nowhere
    secrets = [bybit.secret.encode(), binance.secret.encode()]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "rollbot.db" for p in files)
    for path in files:
        data = path.read_bytes()
        assert not any(s in data for s in secrets), f"a secret was written to {path}"
    for done in outputs:
        assert not any(s.decode() in done.stdout + done.stderr for s in secrets)


def test_crypto_venue_config_errors_exit_2_and_positions_names_what_it_did_not_check(
    integration: Callable[..., Settings], cli: Callable[[Settings], Run]
) -> None:
    """A missing passphrase variable and a market the exchange lacks: exit 2 naming venue,
    key and problem, before any venue is touched. Then OKX read for derivatives only while
    its balance holds coins: `positions` names them NOT CHECKED and exits 1."""
    with start_fake_exchange("okx", balances={"USDT": "100", "BTC": "0.5"}) as okx:
        wrong = CryptoVenueConfig(**okx.venue_config("okx", market="derivatives", **FAST))
        run = cli(integration(venues=[wrong]))
        env = okx.env("okx")

        unset = run("positions", env={k: v for k, v in env.items() if "PASSPHRASE" not in k})
        assert unset.returncode == 2, unset.stdout + unset.stderr
        assert (
            "venue 'okx': environment variable ROLLBOT_FAKE_OKX_PASSPHRASE (password) is not set"
            in unset.stderr
        )
        assert okx.book.requests == []

        shown = run("positions", env=env)
        assert shown.returncode == 1, shown.stdout + shown.stderr
        out = " ".join(shown.stdout.split())
        assert "okx: no positions" in out
        assert 'NOT CHECKED: spot holdings (market "spot" not configured; the balance shows' in out
        assert "BTC/USDT 0.5" in out

    kraken = CryptoVenueConfig(
        kind="crypto", name="k", exchange="kraken", market="derivatives", sandbox=False
    )
    refused = cli(integration(venues=[kraken]))("positions")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "venue 'k': market: kraken has no derivatives market in ccxt (it offers: spot)" in (
        refused.stderr
    )
    assert "Traceback" not in refused.stderr


def test_cancel_all_on_okx_cancels_the_algo_stops_it_used_to_leave(
    integration: Callable[..., Settings], cli: Callable[[Settings], Run]
) -> None:
    """Issue 15: "2 of 2 cancelled; 0 remain" while a stop-loss stayed live. Now every algo
    kind is counted, cancelled and read back, by the CLI in its own process."""
    with start_fake_exchange("okx", balances={"USDT": "10000"}) as okx:
        okx.book.set_position("BTC-USDT-SWAP", "50")
        okx.book.add("BTC-USDT-SWAP", "sell", "10", "limit", px="70000")
        okx.book.add("BTC-USDT-SWAP", "buy", "10", "limit", px="50000")
        okx.book.add("BTC-USDT-SWAP", "sell", "50", "conditional", trigger_px="55000")
        okx.book.add("BTC-USDT-SWAP", "sell", "50", "oco", trigger_px="54000")
        okx.book.add("BTC-USDT-SWAP", "sell", "50", "move_order_stop", trigger_px="58000")
        run = cli(integration(venues=[CryptoVenueConfig(**okx.venue_config("okx", **FAST))]))

        done = run("cancel-all", env=okx.env("okx"))

        assert done.returncode == 0, done.stdout + done.stderr
        assert "okx: 5 of 5 cancelled; 0 remain" in done.stdout
        assert okx.book.live() == []
        assert okx.book.unknown == []
