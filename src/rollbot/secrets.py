"""Secrets from the environment (or .env): never in the TOML, never logged, never stored.
Apart from config.py because pydantic-settings is slow to import and a kill stores its hold
without it (`from rollbot.config import Secrets` still works)."""

from __future__ import annotations

import os

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Secrets(BaseSettings):
    """Read from the environment (or .env); never logged, never stored."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str | None = None

    def venue_secret(self, env_name: str) -> str | None:
        if not env_name:
            return None
        return os.environ.get(env_name)
