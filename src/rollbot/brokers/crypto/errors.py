"""ccxt exceptions -> rollbot's venue errors and the event each one is worth.

The order of the checks matters: in ccxt, RateLimitExceeded and DDoSProtection are
NetworkErrors and OrderNotFound is an InvalidOrder, so the narrow classes go first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from rollbot.brokers.base import (
    OrderRejected,
    RateLimited,
    UnsupportedOperation,
    VenueError,
    VenueEventKind,
    VenueUnavailable,
)


class OrderNotFound(VenueError):
    """The venue does not know this order (never placed, or gone from its books)."""


class KeyRefused(VenueError):
    """The exchange refused this API key the action (no permission, bad key, account
    suspended): ccxt's PermissionDenied, AuthenticationError, AccountSuspended."""


class ArgumentsMissing(UnsupportedOperation):
    """ccxt refused locally because this exchange needs an argument (usually a symbol) that
    was not given: callers retry per symbol. Nothing reached the venue."""


@dataclass(frozen=True)
class Mapped:
    error: VenueError
    event: VenueEventKind | None  # what to tell listeners, if anything


# the venue's own error code inside the body ccxt quotes: bybit retCode, binance/okx code
_CODE = re.compile(r'"(?:retCode|ret_code|code)"\s*:\s*"?(-?\d+)')
# a signed query string in a quoted URL is a replayable credential for recvWindow
_SIGNATURE = re.compile(r"(signature|sign)=[0-9A-Za-z%+/=_-]+", re.IGNORECASE)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _SIGNATURE.sub(r"\1=***", text)


def venue_code(message: str, fallback: str) -> str:
    found = _CODE.search(message)
    return found.group(1) if found else fallback


def _transport_failed(exc: BaseException) -> bool:
    import aiohttp

    cause = exc.__cause__
    return isinstance(cause, OSError | aiohttp.ClientConnectionError | TimeoutError)


def map_ccxt_error(venue: str, exc: BaseException, secrets: Iterable[str] = ()) -> Mapped:
    import ccxt

    message = redact(str(exc) or type(exc).__name__, secrets)
    code = venue_code(message, type(exc).__name__)
    if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
        return Mapped(RateLimited(venue, message, code), VenueEventKind.PACING)
    if isinstance(exc, ccxt.OrderNotFound):
        return Mapped(OrderNotFound(venue, message, code), None)
    if isinstance(exc, ccxt.InsufficientFunds | ccxt.InvalidOrder):
        return Mapped(OrderRejected(venue, message, code), VenueEventKind.REJECT)
    if isinstance(exc, ccxt.NetworkError):
        # ccxt raises ExchangeNotAvailable both for a venue that answered "cannot serve"
        # (maintenance, 5xx: up but unusable) and for a connection that failed (down)
        answered = isinstance(exc, ccxt.ExchangeNotAvailable) and not _transport_failed(exc)
        kind = VenueEventKind.ERROR if answered else VenueEventKind.DISCONNECT
        return Mapped(VenueUnavailable(venue, message, code), kind)
    if isinstance(exc, ccxt.PermissionDenied | ccxt.AuthenticationError | ccxt.AccountSuspended):
        return Mapped(KeyRefused(venue, message, code), VenueEventKind.ERROR)
    if isinstance(exc, ccxt.ArgumentsRequired):
        return Mapped(ArgumentsMissing(venue, message, code), None)
    if isinstance(exc, ccxt.NotSupported):
        return Mapped(UnsupportedOperation(venue, message, code), None)
    return Mapped(VenueError(venue, message, code), VenueEventKind.ERROR)
