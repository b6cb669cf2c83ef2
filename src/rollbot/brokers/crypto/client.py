"""Build and tune the ccxt client for one configured venue.

ccxt is imported here, inside the function, never at module import: it takes about a
second and the kill path only pays for it when a crypto venue is configured.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from rollbot.config import CryptoVenueConfig
from rollbot.errors import ConfigError

# Market-type names ccxt uses in options["fetchMarkets"] for what rollbot trades. Loading
# only these keeps a cold start to one or two requests instead of a dozen (bybit otherwise
# loads spot, linear, inverse and several option chains before the first order).
_SPOT_TYPES = ("spot",)
_DERIVATIVE_TYPES = ("linear", "swap", "future")

# ccxt logs every request and response at DEBUG with its headers: api keys and signed urls.
# Its own logger stays at INFO whatever the root level, so a debug session leaks nothing.
CCXT_LOG = logging.getLogger("rollbot.brokers.crypto.ccxt")
CCXT_LOG.setLevel(logging.INFO)


def build_exchange(
    cfg: CryptoVenueConfig,
    api_key: str | None,
    secret: str | None,
    rate_limit_ms: float | None = None,
    password: str | None = None,
    uid: str | None = None,
) -> Any:
    """A ccxt.async_support exchange: credentials, ccxt's rate limiter on, timeout, sandbox
    (before the URL overrides, since sandbox mode swaps the whole url table), then overrides.

    `rate_limit_ms` replaces ccxt's per-exchange request spacing (bybit 20 ms per unit of
    cost, so one cancel-all a second); None keeps ccxt's, which is what production wants."""
    import ccxt.async_support as ccxt_async

    exchange_class = getattr(ccxt_async, cfg.exchange, None)
    if cfg.exchange not in ccxt_async.exchanges or exchange_class is None:
        raise ConfigError(
            f"venue {cfg.name!r}: exchange: {cfg.exchange!r} is not a ccxt exchange id"
        )
    params: dict[str, Any] = {
        "enableRateLimit": True,
        "timeout": int(cfg.timeout_s * 1000),
        "logger": CCXT_LOG,
    }
    if rate_limit_ms is not None:
        params["rateLimit"] = rate_limit_ms
    if api_key:
        params["apiKey"] = api_key
    if secret:
        params["secret"] = secret
    if password:
        params["password"] = password
    if uid:
        params["uid"] = uid
    exchange = exchange_class(params)
    check_markets(exchange, cfg)
    if cfg.sandbox:
        try:
            exchange.set_sandbox_mode(True)
        except Exception as exc:  # ccxt.NotSupported: no testnet for this exchange
            raise ConfigError(f"venue {cfg.name!r}: {cfg.exchange} has no sandbox: {exc}") from None
    if cfg.urls:
        override_urls(exchange.urls, cfg.urls, where=f"venue {cfg.name!r}")
    tune_options(exchange, cfg)
    return exchange


def override_urls(urls: dict[str, Any], overrides: Mapping[str, str], where: str = "") -> None:
    """Point ccxt's api urls elsewhere.

    A key names an entry of urls["api"] ("public", "private", "sapi", ...) and replaces it
    whole. The key "*" moves every entry onto another scheme://host[:port] but keeps each
    entry's own path, so one setting serves exchanges whose entries carry a path (binance:
    .../api/v3, .../sapi/v1) and those that do not (bybit)."""
    api = urls.get("api")
    base = overrides.get("*")
    if isinstance(api, str):
        for key in overrides:
            if key not in ("*", "api"):
                raise ConfigError(f"{where}: urls.{key}: this exchange has a single api url")
        urls["api"] = overrides.get("api") or (_rebase(api, base) if base else api)
        return
    if not isinstance(api, dict):
        raise ConfigError(f"{where}: this exchange's api urls cannot be overridden")
    if base:
        _rebase_all(api, base)
    for key, value in overrides.items():
        if key == "*":
            continue
        if key not in api:
            known = ", ".join(sorted(api))
            raise ConfigError(
                f"{where}: urls.{key} is not one of this exchange's api urls: {known}"
            )
        api[key] = value


def _rebase_all(api: dict[str, Any], base: str) -> None:
    for key, value in api.items():
        if isinstance(value, str):
            api[key] = _rebase(value, base)
        elif isinstance(value, dict):
            _rebase_all(value, base)


def _rebase(url: str, base: str) -> str:
    old, new = urlsplit(url), urlsplit(base)
    path = new.path.rstrip("/") + old.path
    return urlunsplit((new.scheme, new.netloc, path, old.query, old.fragment))


# ccxt's `has` flag that says an exchange offers each configurable market at all
_MARKET_FLAGS = {"spot": ("spot",), "derivatives": ("swap", "future")}


def check_markets(exchange: Any, cfg: CryptoVenueConfig) -> None:
    """Refuse, before any request, a market this exchange does not have (kraken has no
    derivatives in ccxt: they are krakenfutures); the rest is checked on the loaded markets."""
    for market in cfg.markets:
        if not any(exchange.has.get(flag) for flag in _MARKET_FLAGS[market]):
            offered = [
                m for m, flags in _MARKET_FLAGS.items() if any(exchange.has.get(f) for f in flags)
            ]
            raise ConfigError(
                f"venue {cfg.name!r}: market: {cfg.exchange} has no {market} market in ccxt"
                f" (it offers: {', '.join(offered) or 'nothing rollbot trades'})"
            )


def market_params(market: str) -> dict[str, Any]:
    """ccxt's unified type parameters that point one request at one market."""
    return {"type": "spot"} if market == "spot" else {"type": "swap", "subType": "linear"}


def tune_options(exchange: Any, cfg: CryptoVenueConfig) -> None:
    """Options that are right in production as well as against the loopback fake."""
    spot = "derivatives" not in cfg.markets
    options = exchange.options
    options["defaultType"] = "spot" if spot else "swap"
    if not spot:
        options["defaultSettle"] = cfg.quote  # positions / open orders settled in the quote
    if cfg.markets == ("derivatives",):
        # with spot beside it, every derivatives request says so itself (market_params):
        # binance reads a default sub-type as "futures" even for type=spot
        options["defaultSubType"] = "linear"
    # spot markets are loaded even where spot is not configured: coins the balance shows
    # there are priced and named as not checked, never silently ignored
    wanted = _SPOT_TYPES + (_DERIVATIVE_TYPES if "derivatives" in cfg.markets else ())
    fetch_markets = options.get("fetchMarkets")
    if isinstance(fetch_markets, dict) and isinstance(fetch_markets.get("types"), list):
        kept = [t for t in fetch_markets["types"] if t in wanted]
        if kept:
            fetch_markets["types"] = kept
    elif isinstance(fetch_markets, list):
        kept = [t for t in fetch_markets if t in wanted]
        if kept:
            options["fetchMarkets"] = kept
    # Currencies only matter for deposits and withdrawals; on several venues the endpoint is
    # private and needs wallet permissions a trading key should not have.
    exchange.has["fetchCurrencies"] = False
    # Seeing every open order matters more to a kill switch than the heavier request weight.
    options["warnOnFetchOpenOrdersWithoutSymbol"] = False
    if isinstance(options.get("fetchOpenOrders"), dict):
        options["fetchOpenOrders"]["warnWithoutSymbol"] = False


def feature(exchange: Any, spot: bool, method: str, key: str) -> Any:
    """ccxt's per-market `features` table: e.g. whether fetchOpenOrders takes a trigger flag
    (trigger orders are listed apart) or needs a symbol. None when ccxt does not say."""
    features = getattr(exchange, "features", None) or {}
    node = features.get("spot") if spot else (features.get("swap") or {}).get("linear")
    if not isinstance(node, dict):
        return None
    entry = node.get(method)
    return entry.get(key) if isinstance(entry, dict) else None
