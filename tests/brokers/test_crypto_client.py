"""CryptoVenue plumbing that needs no venue: client construction, url overrides, options,
capability checks and the ccxt error mapping."""

from __future__ import annotations

import logging
import subprocess
import sys
from decimal import Decimal

import ccxt
import pytest

from rollbot.brokers.base import (
    OrderRejected,
    RateLimited,
    UnsupportedOperation,
    VenueError,
    VenueEventKind,
    VenueUnavailable,
)
from rollbot.brokers.crypto.client import CCXT_LOG, build_exchange, override_urls
from rollbot.brokers.crypto.convert import dec, order_from_ccxt
from rollbot.brokers.crypto.errors import KeyRefused, OrderNotFound, map_ccxt_error, redact
from rollbot.brokers.crypto.venue import CryptoVenue
from rollbot.brokers.registry import build_venue
from rollbot.config import CryptoVenueConfig, Secrets
from rollbot.errors import ConfigError

LOCAL = "http://127.0.0.1:5555"


def cfg(**overrides: object) -> CryptoVenueConfig:
    base: dict[str, object] = {"name": "x", "exchange": "bybit"}
    base.update(overrides)
    return CryptoVenueConfig.model_validate(base)


async def test_sandbox_first_then_every_url_moved_keeping_paths() -> None:
    binance = build_exchange(cfg(exchange="binance", market="spot", urls={"*": LOCAL}), "k", "s")
    bybit = build_exchange(cfg(urls={"*": LOCAL}), "k", "s")
    try:
        assert binance.isSandboxModeEnabled and bybit.isSandboxModeEnabled
        assert binance.urls["api"]["public"] == f"{LOCAL}/api/v3"  # the testnet's path kept
        assert binance.urls["api"]["fapiPublic"] == f"{LOCAL}/fapi/v1"
        assert set(bybit.urls["api"].values()) == {LOCAL}
        assert binance.enableRateLimit and bybit.enableRateLimit
        assert bybit.timeout == 10_000
    finally:
        await binance.close()
        await bybit.close()


async def test_ccxt_request_dumps_never_reach_the_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exchange = build_exchange(cfg(), "key-abc", "secret-xyz")
    try:
        with caplog.at_level(logging.DEBUG):
            exchange.logger.debug("GET /x, Request: %s", {"X-BAPI-API-KEY": "key-abc"})
        assert "key-abc" not in caplog.text
        assert exchange.logger is CCXT_LOG
    finally:
        await exchange.close()


def test_a_named_url_replaces_that_entry_only() -> None:
    urls = {"api": {"public": "https://a.example/api", "private": "https://a.example/api"}}
    override_urls(urls, {"*": LOCAL, "private": "http://proxy:8080/p"})
    assert urls["api"] == {"public": f"{LOCAL}/api", "private": "http://proxy:8080/p"}
    with pytest.raises(ConfigError, match=r"urls\.nope is not one of"):
        override_urls(urls, {"nope": LOCAL}, where="venue 'x'")


def test_single_string_api_url() -> None:
    urls: dict[str, object] = {"api": "https://one.example/v2"}
    override_urls(urls, {"*": LOCAL})
    assert urls["api"] == f"{LOCAL}/v2"


async def test_only_the_configured_market_types_and_spot_are_loaded() -> None:
    """Spot markets are loaded on a derivatives venue too: coins its balance shows there are
    priced and reported as not checked (issue 15), never ignored as unknown symbols."""
    derivatives = build_exchange(cfg(), None, None)
    spot = build_exchange(cfg(market="spot"), None, None)
    try:
        assert derivatives.options["fetchMarkets"]["types"] == ["spot", "linear"]
        assert derivatives.options["defaultSettle"] == "USDT"
        assert spot.options["fetchMarkets"]["types"] == ["spot"]
        assert derivatives.has["fetchCurrencies"] is False
    finally:
        await derivatives.close()
        await spot.close()


def test_unknown_exchange_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^venue 'x': exchange: 'nosuchexchange' is not a ccxt"):
        CryptoVenue(cfg(exchange="nosuchexchange"))


async def test_missing_capability_is_unsupported_without_touching_the_network() -> None:
    venue = CryptoVenue(cfg(exchange="gemini", sandbox=False, urls={"*": "http://127.0.0.1:9"}))
    try:
        with pytest.raises(UnsupportedOperation, match="gemini does not support fetchPositions"):
            await venue.positions()
    finally:
        await venue.close()


def test_registry_builds_it_with_secrets_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RB_TEST_KEY", "key-123")
    monkeypatch.setenv("RB_TEST_SECRET", "secret-456")
    venue = build_venue(cfg(api_key_env="RB_TEST_KEY", secret_env="RB_TEST_SECRET"), Secrets())
    assert isinstance(venue, CryptoVenue)
    assert venue.exchange.apiKey == "key-123"
    assert "secret-456" not in repr(venue.__dict__.get("cfg"))


def test_ccxt_is_not_imported_until_a_venue_is_built() -> None:
    code = (
        "import sys, rollbot.brokers.crypto.venue, rollbot.brokers.registry;"
        "assert 'ccxt' not in sys.modules, 'ccxt imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=20)


@pytest.mark.parametrize(
    ("exc", "error", "event"),
    [
        (ccxt.RateLimitExceeded('bybit {"retCode":10006}'), RateLimited, VenueEventKind.PACING),
        (ccxt.DDoSProtection("binance 429 {}"), RateLimited, VenueEventKind.PACING),
        (ccxt.InsufficientFunds("no money"), OrderRejected, VenueEventKind.REJECT),
        (ccxt.InvalidOrder("bad qty"), OrderRejected, VenueEventKind.REJECT),
        (ccxt.OrderNotFound("gone"), OrderNotFound, None),
        (ccxt.RequestTimeout("slow"), VenueUnavailable, VenueEventKind.DISCONNECT),
        (ccxt.ExchangeNotAvailable("maintenance"), VenueUnavailable, VenueEventKind.ERROR),
        (ccxt.NetworkError("reset"), VenueUnavailable, VenueEventKind.DISCONNECT),
        (ccxt.NotSupported("no"), UnsupportedOperation, None),
        (ccxt.AuthenticationError("bad key"), KeyRefused, VenueEventKind.ERROR),
        (ccxt.PermissionDenied("read-only key"), KeyRefused, VenueEventKind.ERROR),
        (ccxt.AccountSuspended("suspended"), KeyRefused, VenueEventKind.ERROR),
        (ccxt.ExchangeError("odd"), VenueError, VenueEventKind.ERROR),
    ],
)
def test_ccxt_errors_map_to_venue_errors(
    exc: Exception, error: type[VenueError], event: VenueEventKind | None
) -> None:
    mapped = map_ccxt_error("v", exc)
    assert type(mapped.error) is error
    assert mapped.event is event


def test_a_refused_connection_is_a_disconnect() -> None:
    exc = ccxt.ExchangeNotAvailable("GET http://127.0.0.1:9 refused")
    exc.__cause__ = ConnectionRefusedError()
    assert map_ccxt_error("v", exc).event is VenueEventKind.DISCONNECT


def test_venue_code_and_redaction() -> None:
    exc = ccxt.ExchangeError(
        'binance GET https://x/api/v3/account?timestamp=1&signature=abcdef0123 key-1 {"code":-1022}'
    )
    mapped = map_ccxt_error("v", exc, secrets=["key-1"])
    assert mapped.error.code == "-1022"
    assert "abcdef0123" not in str(mapped.error) and "key-1" not in str(mapped.error)
    assert redact("sign=deadbeef&x=1") == "sign=***&x=1"


def test_floats_become_the_decimals_the_venue_sent() -> None:
    assert dec(0.1) == Decimal("0.1") and str(dec(60000.0)) == "60000"
    order = order_from_ccxt(
        "v",
        {
            "id": "1",
            "symbol": "BTC/USDT",
            "side": "sell",
            "type": "limit",
            "amount": 0.3,
            "filled": 0.1,
            "price": 70000.0,
            "status": "open",
        },
    )
    assert order.remaining == Decimal("0.2") and order.status.value == "PARTIALLY_FILLED"


def test_an_exchange_outside_the_matrix_starts_with_a_warning_naming_what_is_unverified(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="rollbot.brokers.crypto.venue"):
        venue = CryptoVenue(cfg(exchange="gemini", sandbox=False))
    (warning,) = [r.getMessage() for r in caplog.records if "support matrix" in r.getMessage()]
    assert warning.startswith("x: gemini is not in rollbot's tested support matrix")
    for unverified in ("order kinds", "NAV", "hedge-mode"):
        assert unverified in warning
    assert venue.unverified() and CryptoVenue(cfg(market="spot")).unverified() == []


def test_passphrase_and_uid_come_from_the_variables_the_venue_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rollbot.brokers.registry import build_venue
    from rollbot.config import Secrets

    venue_cfg = cfg(
        exchange="okx", password_env="T_OKX_PASS", uid_env="T_OKX_UID", market="derivatives"
    )
    monkeypatch.setenv("T_OKX_PASS", "pass-phrase")
    with pytest.raises(ConfigError, match=r"^venue 'x': environment variable T_OKX_UID \(uid\)"):
        build_venue(venue_cfg, Secrets())
    monkeypatch.setenv("T_OKX_UID", "12345")
    venue = build_venue(venue_cfg, Secrets())
    assert (venue.exchange.password, venue.exchange.uid) == ("pass-phrase", "12345")  # type: ignore[attr-defined]
