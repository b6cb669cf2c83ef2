"""Build venues from config. Real venue libraries are imported only when configured:
ccxt alone takes about a second to import, and the kill path must not pay for it."""

from __future__ import annotations

from rollbot.brokers.base import Venue
from rollbot.clock import Clock, SystemClock
from rollbot.config import (
    CryptoVenueConfig,
    IbkrVenueConfig,
    PaperVenueConfig,
    Secrets,
    Settings,
    VenueConfig,
)
from rollbot.errors import ConfigError


def build_venue(
    cfg: VenueConfig, secrets: Secrets | None = None, clock: Clock | None = None
) -> Venue:
    clock = clock or SystemClock()
    if isinstance(cfg, PaperVenueConfig):
        from rollbot.brokers.paper.venue import PaperVenue

        return PaperVenue(cfg, clock=clock)
    if isinstance(cfg, IbkrVenueConfig):
        from rollbot.brokers.ibkr.venue import IbkrVenue

        return IbkrVenue(cfg)
    if isinstance(cfg, CryptoVenueConfig):
        from rollbot.brokers.crypto.venue import CryptoVenue

        secrets = secrets or Secrets()
        found: dict[str, str | None] = {}
        for what, env_name in (
            ("api key", cfg.api_key_env),
            ("secret", cfg.secret_env),
            ("password", cfg.password_env),
            ("uid", cfg.uid_env),
        ):
            found[what] = secrets.venue_secret(env_name)
            if env_name and not found[what]:
                raise ConfigError(
                    f"venue {cfg.name!r}: environment variable {env_name} ({what}) is not set"
                    " (export it, or put it in .env in the working directory)"
                )
        return CryptoVenue(
            cfg,
            api_key=found["api key"],
            secret=found["secret"],
            password=found["password"],
            uid=found["uid"],
            rate_limit_ms=cfg.rate_limit_ms,
        )
    raise ConfigError(f"unknown venue kind {cfg!r}")


def build_venues(
    settings: Settings, secrets: Secrets | None = None, clock: Clock | None = None
) -> dict[str, Venue]:
    return {cfg.name: build_venue(cfg, secrets, clock) for cfg in settings.venues}
