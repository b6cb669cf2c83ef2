"""Secrets from the environment (or .env): never in the TOML, never logged, never stored.
Apart from config.py because pydantic-settings is slow to import and a kill stores its hold
without it (`from rollbot.config import Secrets` still works).

One loader, `secret(NAME)`, for every secret rollbot reads (the Slack tokens, each venue's
keys, the guard's token, PagerDuty routing keys): a variable exported in the process's
environment wins; otherwise the line `NAME=...` of `.env` in the working directory. The file is
read, never written, and its values are never echoed: an error names the variable only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DOTENV = ".env"


def dotenv_values(path: Path | None = None) -> dict[str, str]:
    """The `NAME=value` lines of `.env` (cwd), literally: a secret may hold `$` or `${`, so
    nothing is interpolated. Missing or unreadable: nothing."""
    from dotenv import dotenv_values as parse

    path = path or Path(DOTENV)
    try:
        if not path.is_file():
            return {}
        return {k: v for k, v in parse(path, interpolate=False, encoding="utf-8").items() if v}
    except (OSError, UnicodeDecodeError):
        return {}


def secret(name: str) -> str | None:
    """The secret in variable `name`: the environment's (even empty: an exported variable is
    never overridden), else `.env`'s, else None."""
    if not name:
        return None
    if name in os.environ:
        return os.environ[name]
    return dotenv_values().get(name)


class _OneLoader(PydanticBaseSettingsSource):
    """Secrets' fields by their upper-case names through `secret`, like every other secret."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return secret(field_name.upper()), field_name, False

    def __call__(self) -> dict[str, Any]:
        found = {}
        for name, field in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(field, name)
            if value is not None:
                found[name] = value
        return found


class Secrets(BaseSettings):
    """Read from the environment (or .env); never logged, never stored."""

    model_config = SettingsConfigDict(extra="ignore")

    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _OneLoader(settings_cls))

    def venue_secret(self, env_name: str) -> str | None:
        return secret(env_name)
