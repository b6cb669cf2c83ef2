"""rollbot.toml, validated. Secrets never live here: they come from the environment (or .env).

A config error names the file, the key and what is wrong, and is raised before anything
touches a venue.
"""

from __future__ import annotations

import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rollbot.errors import ConfigError

if TYPE_CHECKING:
    from rollbot.secrets import Secrets as Secrets

ROLES = ("operator", "risk_officer", "trading_desk_manager", "cto", "devops")
Role = Literal["operator", "risk_officer", "trading_desk_manager", "cto", "devops"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseConfig(_Section):
    path: Path = Path("var/rollbot.db")
    busy_timeout_ms: int = Field(5000, ge=0)


class PathsConfig(_Section):
    reports_dir: Path = Path("var/reports")
    live_environment: Path = Path("var/config/live_environment.toml")
    shadow_config: Path = Path("var/config/shadow_config.toml")


class PaperVenueConfig(_Section):
    kind: Literal["paper"] = "paper"
    name: str = "paper"
    book_path: Path = Path("var/paper.db")
    scenario: Path | None = None
    latency_ms: float = Field(0, ge=0)
    fill: Literal["full", "partial", "none"] = "full"
    partial_ratio: Decimal = Field(Decimal("0.5"), gt=0, le=1)
    reject_rate: float = Field(0, ge=0, le=1)
    max_msgs_per_sec: float = Field(0, ge=0)  # 0 = no pacing limit
    disconnect_after_calls: int | None = Field(None, ge=1)  # injected disconnect
    late_fill: bool = False  # a cancelled order's fill still arrives after the cancel
    seed: int = 7


class IbkrVenueConfig(_Section):
    kind: Literal["ibkr"] = "ibkr"
    name: str = "ibkr"
    host: str = "127.0.0.1"
    port: int = Field(7497, gt=0, lt=65536)
    client_id: int = 17
    # tried in turn when TWS says an id is in use: the bot, the clock and a terminal may each be
    # connected during an incident, and a break-glass /kill must not wait out a refused login
    spare_client_ids: list[int] = Field(default_factory=lambda: [18, 19])
    account: str = ""
    timeout_s: float = Field(10, gt=0)
    max_msgs_per_sec: float = Field(45, gt=0)
    reconnect: bool = True
    reconnect_backoff_s: list[float] = Field(default_factory=lambda: [0.5, 1, 2, 5, 10])
    limit_slippage_bps: Decimal = Decimal(50)


class CryptoVenueConfig(_Section):
    kind: Literal["crypto"] = "crypto"
    name: str
    exchange: str  # a ccxt exchange id: bybit, binance, ...
    market: Literal["derivatives", "spot"] = "derivatives"
    sandbox: bool = True
    quote: str = "USDT"
    dust: Decimal = Decimal("1")  # holdings worth less than this (in quote) are ignored
    api_key_env: str = ""  # names of environment variables, never the secrets themselves
    secret_env: str = ""
    urls: dict[str, str] = Field(default_factory=dict)  # override ccxt's api urls (tests)
    symbols: list[str] = Field(default_factory=list)  # where cancel-all needs a symbol
    timeout_s: float = Field(10, gt=0)
    limit_slippage_bps: Decimal = Decimal(50)
    rate_limit_ms: float | None = Field(None, gt=0)  # replaces ccxt's request spacing (tests)


VenueConfig = Annotated[
    PaperVenueConfig | IbkrVenueConfig | CryptoVenueConfig, Field(discriminator="kind")
]


class FlattenConfig(_Section):
    market_exposure_threshold: Decimal = Decimal(10000)  # below: market orders; else limits
    timeout_s: float = Field(90, gt=0)
    recheck_interval_s: float = Field(1.0, gt=0)
    limit_timeout_s: float = Field(10, gt=0)
    limit_offset_bps: Decimal = Decimal(20)  # aggressive limit: cross the price by this much


class TriggerConfig(_Section):
    enabled: bool = True
    threshold: float
    action: Literal["auto_rollback", "alert"] = "alert"


class KillSwitchesConfig(_Section):
    interval_s: float = Field(10, gt=0)
    psr_min_samples: int = Field(30, ge=3)
    fail_closed_after: int = Field(3, ge=1)
    fail_closed_halt: bool = True
    latency_baseline_ms: float | None = None  # None: the median of the last hour
    pnl: TriggerConfig = TriggerConfig(threshold=-0.05, action="auto_rollback")
    drawdown: TriggerConfig = TriggerConfig(threshold=0.15, action="auto_rollback")
    psr: TriggerConfig = TriggerConfig(threshold=0.20, action="auto_rollback")
    connection_failures: TriggerConfig = TriggerConfig(threshold=3, action="auto_rollback")
    pacing_violations: TriggerConfig = TriggerConfig(threshold=10, action="alert")
    order_rejections: TriggerConfig = TriggerConfig(threshold=0.20, action="alert")
    latency: TriggerConfig = TriggerConfig(threshold=2.0, action="alert")
    kills_per_day: TriggerConfig = TriggerConfig(threshold=3, action="alert")


class Contact(_Section):
    name: str
    role: Role
    slack_id: str = ""
    phone: str = ""
    email: str = ""
    webhook_url: str | None = None
    webhook_format: Literal["json", "pagerduty"] = "json"
    webhook_key_env: str = ""  # env var holding the PagerDuty routing key (never the key)
    priority: int = 1

    @model_validator(mode="after")
    def _pagerduty_needs_key(self) -> Contact:
        if self.webhook_url and self.webhook_format == "pagerduty" and not self.webhook_key_env:
            raise ValueError(
                f"contact {self.name!r}: a pagerduty webhook needs webhook_key_env, the name of"
                " the environment variable that holds the routing key"
            )
        return self


class EscalationTier(_Section):
    roles: list[Role]


class EscalationConfig(_Section):
    wait_minutes: float = Field(15, gt=0)
    repeat: int = Field(2, ge=0)
    critical_loss: Decimal = Decimal(10000)
    tiers: list[EscalationTier] = Field(
        default_factory=lambda: [
            EscalationTier(roles=["risk_officer", "trading_desk_manager"]),
            EscalationTier(roles=["cto", "devops"]),
        ]
    )
    auditor_interval_s: float = Field(30, gt=0)
    webhook_retries: int = Field(3, ge=0)
    webhook_backoff_s: float = Field(1.0, ge=0)


class ApprovalRule(_Section):
    quorum: int = Field(1, ge=1)
    roles: list[Role]


class ApprovalsConfig(_Section):
    expiry_minutes: float = Field(10, gt=0)
    rollback_needs_approval: bool = True  # when a person (not the clock) starts it
    flatten: ApprovalRule = ApprovalRule(roles=["operator", "risk_officer"])
    rollback: ApprovalRule = ApprovalRule(roles=["operator", "risk_officer"])
    clear_hold: ApprovalRule = ApprovalRule(roles=["risk_officer"])
    enable_gates: ApprovalRule = ApprovalRule(roles=["risk_officer"])
    resume: ApprovalRule = ApprovalRule(roles=["risk_officer"])


class ResumeConfig(_Section):
    min_shadow_hours: float = Field(24, ge=0)


class SlackConfig(_Section):
    ops_channel: str = ""
    allowed_channels: list[str] = Field(default_factory=list)  # empty: any channel
    kill_roles: list[Role] = Field(default_factory=lambda: ["operator"])
    flatten_roles: list[Role] = Field(default_factory=lambda: ["operator", "risk_officer"])
    # the book, PnL and reports are the desk's: anyone in the workspace could otherwise post
    # them in any channel (/positions public) or flood an incident thread (/rollback-report)
    view_roles: list[Role] = Field(default_factory=lambda: list(get_args(Role)))


class HookConfig(_Section):
    command: str | None = None
    url: str | None = None
    timeout_s: float = Field(5, gt=0)


class HooksConfig(_Section):
    strategy_stop: HookConfig = HookConfig()


class Settings(_Section):
    database: DatabaseConfig = DatabaseConfig()
    paths: PathsConfig = PathsConfig()
    venues: list[VenueConfig] = Field(default_factory=lambda: [PaperVenueConfig()])
    flatten: FlattenConfig = FlattenConfig()
    kill_switches: KillSwitchesConfig = KillSwitchesConfig()
    roles: dict[Role, list[str]] = Field(default_factory=dict)  # role -> Slack user IDs
    identities: dict[str, str] = Field(default_factory=dict)  # OS user -> Slack user ID
    contacts: list[Contact] = Field(default_factory=list)
    escalation: EscalationConfig = EscalationConfig()
    approvals: ApprovalsConfig = ApprovalsConfig()
    resume: ResumeConfig = ResumeConfig()
    slack: SlackConfig = SlackConfig()
    hooks: HooksConfig = HooksConfig()
    nav_change_threshold: float = Field(0.05, gt=0)  # VERIFY flags a NAV loss above this

    source: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _unique_venues(self) -> Settings:
        names = [v.name for v in self.venues]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"venue names must be unique; repeated: {', '.join(dupes)}")
        return self

    def venue(self, name: str) -> VenueConfig:
        for v in self.venues:
            if v.name == name:
                return v
        known = ", ".join(v.name for v in self.venues)
        raise KeyError(f"unknown venue {name!r} (configured: {known})")

    def roles_of(self, user_id: str) -> set[str]:
        return {role for role, ids in self.roles.items() if user_id in ids}


def __getattr__(name: str) -> Any:
    """Secrets on first use: pydantic-settings costs a kill ~0.1 s before its hold is stored."""
    if name == "Secrets":
        from rollbot.secrets import Secrets

        return Secrets
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _config_path(explicit: str | Path | None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get("ROLLBOT_CONFIG")
    if env:
        return Path(env)
    default = Path("rollbot.toml")
    return default if default.exists() else None


def _describe(err: ValidationError, path: Path) -> str:
    lines = [f"invalid config {path}:"]
    kinds = {"paper", "ibkr", "crypto"}
    for e in err.errors():
        loc = e["loc"]
        # the key as written in the file: no pydantic markers ("[key]") or union tags ("paper")
        parts = [
            str(p)
            for i, p in enumerate(loc)
            if p != "[key]" and not (i and isinstance(loc[i - 1], int) and p in kinds)
        ]
        key = ".".join(parts) or "(top level)"
        lines.append(f"  {key}: {e['msg']}")
    return "\n".join(lines)


def load_settings(explicit: str | Path | None = None) -> Settings:
    """rollbot.toml from --config, ROLLBOT_CONFIG or ./rollbot.toml; else the embedded default."""
    path = _config_path(explicit)
    if path is None:
        return Settings()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    settings.source = path
    return settings
