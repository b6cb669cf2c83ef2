"""rollbot.toml, validated. Secrets never live here: they come from the environment (or .env).

A config error names the file, the key and what is wrong, and is raised before anything
touches a venue.
"""

from __future__ import annotations

import math
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from rollbot.config_source import config_path
from rollbot.errors import ConfigError

if TYPE_CHECKING:
    from rollbot.secrets import Secrets as Secrets

ROLES = ("operator", "risk_officer", "trading_desk_manager", "cto", "devops")
Role = Literal["operator", "risk_officer", "trading_desk_manager", "cto", "devops"]


class _Section(BaseModel):
    # inf and nan are TOML numbers, but no setting means "never" or "unknown" by them
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# -- ranges: each number and list below has one; an error names the key and the whole range ------
def _between(lo: float, hi: float, what: str) -> AfterValidator:
    """Strictly between lo and hi (both open: the ends themselves are meaningless here)."""

    def check(value: float) -> float:
        if not lo < value < hi:
            raise ValueError(f"must be between {lo:g} and {hi:g} (exclusive): {what}; got {value}")
        return value

    return AfterValidator(check)


def _unique(values: list) -> list:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"must not repeat an entry; repeated: {', '.join(repeated)}")
    return values


def _http_url(url: str | None) -> str | None:
    if url is not None and not url.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return url


Text = Annotated[str, Field(min_length=1)]  # a name or id: never empty
# a list of roles that someone must hold: never empty, no repeats
Roles = Annotated[list[Role], Field(min_length=1), AfterValidator(_unique)]
# a closing limit crosses the mark by at most 10%: beyond that it is no longer a price (at
# 10000 bps a SELL limit is 0, past it negative)
OffsetBps = Annotated[Decimal, Field(ge=0, le=1000)]
HttpUrl = Annotated[str | None, AfterValidator(_http_url)]


PASSWORD_ENV = "ROLLBOT_DATABASE_PASSWORD"  # or libpq's own PGPASSWORD / ~/.pgpass


class DatabaseConfig(_Section):
    """SQLite by `path` (or `url = "sqlite:///path"`), PostgreSQL by
    `url = "postgresql://user@host:port/db"`: the password never in this file (it would sit in
    the repository and every copy of the config), only in ROLLBOT_DATABASE_PASSWORD or libpq's
    PGPASSWORD / ~/.pgpass."""

    path: Path = Path("var/rollbot.db")
    url: str | None = None
    busy_timeout_ms: int = Field(5000, gt=0, le=600_000)

    @model_validator(mode="after")
    def _one_database(self) -> DatabaseConfig:
        from urllib.parse import parse_qs, urlsplit

        if self.url is None:
            return self
        if "path" in self.model_fields_set:
            raise ValueError("give either path or url, not both")
        scheme = self.url.partition("://")[0].lower()
        if scheme == "sqlite":
            rest = self.url.partition("://")[2]
            if not rest.startswith("/") or rest == "/":
                raise ValueError(
                    "a SQLite url is sqlite:///relative/path.db or sqlite:////absolute/path.db"
                )
            self.path = Path(rest[1:])
            self.url = None
            return self
        if scheme not in ("postgresql", "postgres"):
            raise ValueError(
                "url must start with postgresql:// (PostgreSQL) or sqlite:/// (a SQLite file)"
            )
        try:
            parts = urlsplit(self.url)
            has_password = parts.password is not None
            query = parse_qs(parts.query)
        except ValueError as exc:  # a bad port, brackets: the text itself is not repeated
            raise ValueError(f"url is not a valid PostgreSQL URL ({exc})") from None
        if has_password or "password" in query:
            raise ValueError(
                "url must not contain a password (this file is not a secret store): remove it"
                f" and set {PASSWORD_ENV} (or PGPASSWORD, or ~/.pgpass) in the environment"
            )
        if not parts.path.strip("/"):
            raise ValueError("url names no database: postgresql://user@host:port/DATABASE")
        return self

    @model_serializer(mode="wrap")
    def _written_back(self, handler: Any) -> Any:
        """Written back as it was given: a url without the unused default path beside it (read
        again, the two together would be refused)."""
        data = handler(self)
        if self.url is not None and isinstance(data, dict):
            data.pop("path", None)
        return data

    @property
    def backend(self) -> Literal["sqlite", "postgresql"]:
        return "sqlite" if self.url is None else "postgresql"


def _hostname() -> str:
    import socket

    return socket.gethostname() or "localhost"


class HostConfig(_Section):
    """This machine among several sharing one database (README "Two hosts"). A host is a
    machine, never a person: its id comes from here or the machine's hostname, not from a
    person's environment."""

    id: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")] = Field(
        default_factory=_hostname
    )
    # each process renews its heartbeat, and the leader its leases, this often; a host that
    # stops is taken over after 3 missed renewals (README "Two hosts": the bounds)
    lease_interval_s: float = Field(2.0, ge=0.05, le=60)


class PathsConfig(_Section):
    reports_dir: Path = Path("var/reports")
    live_environment: Path = Path("var/config/live_environment.toml")
    shadow_config: Path = Path("var/config/shadow_config.toml")
    runbook: str = ""  # the desk's live-mode transition runbook (a path or URL) the report names


class GatesConfig(_Section):
    """Where the gates files are written (README "Two hosts"). `agent = false`: by this
    process, at [paths]. `agent = true`: the files live on the trading system's host and
    `rollbot gates agent` there applies each change stored in the database; this host only
    asks, and reads back what the agent reports."""

    agent: bool = False
    agent_poll_s: float = Field(0.5, gt=0, le=60)  # how often the agent reads the database
    # without a report from the agent for this long, the gates count as unreadable (BLOCKED)
    agent_stale_s: float = Field(5, gt=0, le=3600)
    # the agent without the database for this long puts its files in shadow itself
    agent_fail_closed_s: float = Field(10, gt=0, le=3600)
    apply_timeout_s: float = Field(5, gt=0, le=300)  # how long a rollback waits for the agent


class PaperVenueConfig(_Section):
    kind: Literal["paper"] = "paper"
    name: Text = "paper"
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
    name: Text = "ibkr"
    host: Text = "127.0.0.1"
    port: int = Field(7497, gt=0, lt=65536)
    client_id: int = Field(17, ge=0, le=2**31 - 1)
    # tried in turn when TWS says an id is in use: the bot, the clock and a terminal may each be
    # connected during an incident, and a break-glass /kill must not wait out a refused login
    spare_client_ids: Annotated[list[Annotated[int, Field(ge=0)]], AfterValidator(_unique)] = Field(
        default_factory=lambda: [18, 19]
    )
    account: str = ""
    paper: bool = False  # an IB paper account whose id does not start with "DU" (venue drill)
    # the US stock the armed status's what-if order names when nothing is held (a what-if on a
    # held contract otherwise): choose one this account may trade
    permission_probe: Text = "SPY"
    timeout_s: float = Field(10, gt=0)
    max_msgs_per_sec: float = Field(45, gt=0, le=50)  # IB disconnects past 50 messages a second
    reconnect: bool = True
    reconnect_backoff_s: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [0.5, 1, 2, 5, 10], min_length=1
    )
    limit_slippage_bps: OffsetBps = Decimal(50)

    @model_validator(mode="after")
    def _spares_are_not_the_client_id(self) -> IbkrVenueConfig:
        if self.client_id in self.spare_client_ids:
            raise ValueError(
                f"spare_client_ids must not contain client_id ({self.client_id}): a spare is"
                " another id to connect as"
            )
        return self


class CryptoVenueConfig(_Section):
    kind: Literal["crypto"] = "crypto"
    name: Text
    exchange: Text  # a ccxt exchange id: bybit, binance, ...
    # one market, a list of them, or "all": one account may hold spot and derivatives at once
    market: Literal["derivatives", "spot", "all"] | list[Literal["derivatives", "spot"]] = (
        "derivatives"
    )
    sandbox: bool = True
    quote: Text = "USDT"
    # holdings worth less than this (in quote) are ignored
    dust: Decimal = Field(Decimal("1"), ge=0)
    api_key_env: str = ""  # names of environment variables, never the secrets themselves
    secret_env: str = ""
    password_env: str = ""  # the API passphrase (OKX, KuCoin, Bitget, ...)
    uid_env: str = ""  # an account or user id some exchanges sign with
    urls: dict[str, str] = Field(default_factory=dict)  # override ccxt's api urls (tests)
    symbols: list[str] = Field(default_factory=list)  # where cancel-all needs a symbol
    timeout_s: float = Field(10, gt=0)
    limit_slippage_bps: OffsetBps = Decimal(50)
    rate_limit_ms: float | None = Field(None, gt=0)  # replaces ccxt's request spacing (tests)
    # the exchange's own countdown cancel-all, refreshed while serve/clock runs (opt-in)
    dead_mans_switch_s: int | None = None

    @model_validator(mode="after")
    def _countdown_in_range(self) -> CryptoVenueConfig:
        from rollbot.brokers.crypto.countdown import rule_for

        seconds = self.dead_mans_switch_s
        rule = rule_for(self.exchange, self.markets)
        if seconds is not None and rule is not None and not rule.admits(seconds):
            raise ValueError(
                f"venue {self.name!r}: dead_mans_switch_s = {seconds} is outside what"
                f" {self.exchange} allows: {rule.allowed().removeprefix('0 (off) or ')}"
            )
        return self

    @model_validator(mode="after")
    def _some_market(self) -> CryptoVenueConfig:
        if isinstance(self.market, list) and not self.market:
            raise ValueError('market: name at least one: "spot", "derivatives" (or "all")')
        return self

    @property
    def markets(self) -> tuple[str, ...]:
        """The configured markets, "spot" and/or "derivatives", in that order."""
        chosen = ["spot", "derivatives"] if self.market == "all" else self.market
        chosen = [chosen] if isinstance(chosen, str) else chosen
        return tuple(m for m in ("spot", "derivatives") if m in chosen)


VenueConfig = Annotated[
    PaperVenueConfig | IbkrVenueConfig | CryptoVenueConfig, Field(discriminator="kind")
]


class FlattenConfig(_Section):
    # below: market orders; else limits
    market_exposure_threshold: Decimal = Field(Decimal(10000), ge=0)
    timeout_s: float = Field(90, gt=0)
    recheck_interval_s: float = Field(1.0, gt=0)
    limit_timeout_s: float = Field(10, gt=0)
    limit_offset_bps: OffsetBps = Decimal(20)  # aggressive limit: cross the price by this much


class TriggerConfig(_Section):
    enabled: bool = True
    threshold: float
    action: Literal["auto_rollback", "alert"] = "alert"


# each trigger's threshold has its own meaning, so its own range (a wrong sign on the PnL
# threshold rolled the whole book back at PnL 0)
def _whole(value: float) -> float:
    if not math.isfinite(value) or value != int(value):
        raise ValueError(f"must be a whole number of events (1 or more); got {value}")
    return value


class LossTrigger(TriggerConfig):
    threshold: Annotated[float, _between(-1, 0, "a loss, a negative fraction of NAV: -0.05")]


class FractionTrigger(TriggerConfig):
    threshold: Annotated[float, _between(0, 1, "a fraction: 0.15 for 15%")]


class CountTrigger(TriggerConfig):
    threshold: Annotated[float, Field(ge=1), AfterValidator(_whole)]


class MultipleTrigger(TriggerConfig):
    threshold: float = Field(gt=1)  # a multiple of the baseline: 2.0 trips at twice it


class KillSwitchesConfig(_Section):
    interval_s: float = Field(10, gt=0)
    psr_min_samples: int = Field(30, ge=3)
    fail_closed_after: int = Field(3, ge=1)
    fail_closed_halt: bool = True
    latency_baseline_ms: float | None = Field(None, gt=0)  # None: the median of the last hour
    pnl: LossTrigger = LossTrigger(threshold=-0.05, action="auto_rollback")
    drawdown: FractionTrigger = FractionTrigger(threshold=0.15, action="auto_rollback")
    psr: FractionTrigger = FractionTrigger(threshold=0.20, action="auto_rollback")
    connection_failures: CountTrigger = CountTrigger(threshold=3, action="auto_rollback")
    pacing_violations: CountTrigger = CountTrigger(threshold=10, action="alert")
    order_rejections: FractionTrigger = FractionTrigger(threshold=0.20, action="alert")
    latency: MultipleTrigger = MultipleTrigger(threshold=2.0, action="alert")
    kills_per_day: CountTrigger = CountTrigger(threshold=3, action="alert")


class Contact(_Section):
    name: Text
    role: Role
    slack_id: str = ""
    phone: str = ""
    email: str = ""
    webhook_url: HttpUrl = None
    webhook_format: Literal["json", "pagerduty"] = "json"
    webhook_key_env: str = ""  # env var holding the PagerDuty routing key (never the key)
    priority: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _pagerduty_needs_key(self) -> Contact:
        if self.webhook_url and self.webhook_format == "pagerduty" and not self.webhook_key_env:
            raise ValueError(
                f"contact {self.name!r}: a pagerduty webhook needs webhook_key_env, the name of"
                " the environment variable that holds the routing key"
            )
        return self


class EscalationTier(_Section):
    roles: Roles


class EscalationConfig(_Section):
    wait_minutes: float = Field(15, gt=0)
    repeat: int = Field(2, ge=0, le=100)
    critical_loss: Decimal = Field(Decimal(10000), gt=0)
    tiers: Annotated[list[EscalationTier], Field(min_length=1)] = Field(
        default_factory=lambda: [
            EscalationTier(roles=["risk_officer", "trading_desk_manager"]),
            EscalationTier(roles=["cto", "devops"]),
        ]
    )
    auditor_interval_s: float = Field(30, gt=0)
    webhook_retries: int = Field(3, ge=0, le=20)
    webhook_backoff_s: float = Field(1.0, ge=0, le=3600)
    # an acknowledged incident still open this long reminds whoever acknowledged it (again
    # every as long); 0: never
    ack_reminder_minutes: float = Field(60, ge=0, le=10080)


class ApprovalRule(_Section):
    quorum: int = Field(1, ge=1, le=10)
    roles: Roles
    # sign-offs that must all be given, each by a different person holding that role (the
    # IBKR seed's resume: the risk officer and the CTO). They may vote too; the quorum grows
    # to their number when smaller.
    all_of: Annotated[list[Role], AfterValidator(_unique)] = Field(default_factory=list)

    @property
    def voters(self) -> list[str]:
        return sorted(set(self.roles) | set(self.all_of))

    @property
    def needed(self) -> int:
        return max(self.quorum, len(self.all_of))


class ApprovalsConfig(_Section):
    expiry_minutes: float = Field(10, gt=0)
    rollback_needs_approval: bool = True  # when a person (not the clock) starts it
    flatten: ApprovalRule = ApprovalRule(roles=["operator", "risk_officer"])
    rollback: ApprovalRule = ApprovalRule(roles=["operator", "risk_officer"])
    clear_hold: ApprovalRule = ApprovalRule(roles=["risk_officer"])
    enable_gates: ApprovalRule = ApprovalRule(roles=["risk_officer"])
    resume: ApprovalRule = ApprovalRule(roles=["risk_officer"])


class ResumeConfig(_Section):
    min_shadow_hours: float = Field(24, ge=0, le=24 * 365)


class SlackConfig(_Section):
    ops_channel: str = ""
    allowed_channels: list[str] = Field(default_factory=list)  # empty: any channel
    kill_roles: Roles = Field(default_factory=lambda: ["operator"])
    flatten_roles: Roles = Field(default_factory=lambda: ["operator", "risk_officer"])
    # the book, PnL and reports are the desk's: anyone in the workspace could otherwise post
    # them in any channel (/positions public) or flood an incident thread (/rollback-report)
    view_roles: Roles = Field(default_factory=lambda: list(get_args(Role)))


class HookConfig(_Section):
    command: str | None = None
    url: HttpUrl = None
    timeout_s: float = Field(5, gt=0)


class HooksConfig(_Section):
    strategy_stop: HookConfig = HookConfig()


class PreflightConfig(_Section):
    interval_s: float = Field(300, gt=0, le=86400)  # the armed-status checks, in serve/clock
    min_free_mb: int = Field(500, ge=0)  # free disk under the database's folder
    venue_timeout_s: float = Field(10, gt=0, le=300)


class DrillsConfig(_Section):
    # cron (minute hour day month weekday, UTC): the IBKR seed's monthly rollback test
    schedule: str = "0 6 1 * *"
    enabled: bool = True
    max_age_days: float = Field(31, gt=0, le=366)  # older than this, the armed status fails

    @field_validator("schedule")
    @classmethod
    def _schedule_parses(cls, schedule: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(schedule, timezone="UTC")
        except ValueError as exc:
            raise ValueError(
                f"{schedule!r} is not a cron expression"
                f" (minute hour day month weekday, e.g. '0 6 1 * *'): {exc}"
            ) from None
        return schedule


class Settings(_Section):
    database: DatabaseConfig = DatabaseConfig()
    host: HostConfig = Field(default_factory=HostConfig)
    paths: PathsConfig = PathsConfig()
    gates: GatesConfig = GatesConfig()
    venues: list[VenueConfig] = Field(  # a kill must have somewhere to cancel
        default_factory=lambda: [PaperVenueConfig()], min_length=1
    )
    flatten: FlattenConfig = FlattenConfig()
    kill_switches: KillSwitchesConfig = KillSwitchesConfig()
    roles: dict[Role, list[Text]] = Field(default_factory=dict)  # role -> Slack user IDs
    identities: dict[Text, Text] = Field(default_factory=dict)  # OS user -> Slack user ID
    contacts: list[Contact] = Field(default_factory=list)
    escalation: EscalationConfig = EscalationConfig()
    approvals: ApprovalsConfig = ApprovalsConfig()
    resume: ResumeConfig = ResumeConfig()
    slack: SlackConfig = SlackConfig()
    hooks: HooksConfig = HooksConfig()
    preflight: PreflightConfig = PreflightConfig()
    drills: DrillsConfig = DrillsConfig()
    # VERIFY flags a NAV loss above this
    nav_change_threshold: Annotated[float, _between(0, 1, "a fraction of NAV: 0.05 for 5%")] = 0.05

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
        lines.append(f"  {key}: {e['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def load_settings(explicit: str | Path | None = None) -> Settings:
    """rollbot.toml from --config, ROLLBOT_CONFIG or ./rollbot.toml; else the embedded default."""
    found = config_path(explicit)
    if found is None:
        return Settings()
    path = Path(found)
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
