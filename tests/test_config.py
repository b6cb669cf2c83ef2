"""rollbot.toml: the example carries the seeds' values; errors name the file, the key and why."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from rollbot.config import (
    CryptoVenueConfig,
    IbkrVenueConfig,
    PaperVenueConfig,
    PathsConfig,
    Secrets,
    Settings,
    load_settings,
)
from rollbot.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "rollbot.example.toml"


def test_example_config_carries_the_seed_values() -> None:
    s = load_settings(EXAMPLE)
    assert s.source == EXAMPLE

    ks = s.kill_switches
    assert ks.interval_s == 10
    assert (ks.pnl.threshold, ks.pnl.action) == (-0.05, "auto_rollback")
    assert (ks.drawdown.threshold, ks.drawdown.action) == (0.15, "auto_rollback")
    assert (ks.psr.threshold, ks.psr.action) == (0.20, "auto_rollback")
    assert (ks.connection_failures.threshold, ks.connection_failures.action) == (
        3,
        "auto_rollback",
    )
    assert (ks.pacing_violations.threshold, ks.pacing_violations.action) == (10, "alert")
    assert (ks.order_rejections.threshold, ks.order_rejections.action) == (0.20, "alert")
    assert (ks.latency.threshold, ks.latency.action) == (2.0, "alert")
    assert all(
        t.enabled
        for t in (ks.pnl, ks.drawdown, ks.psr, ks.connection_failures, ks.pacing_violations)
    )

    assert s.flatten.market_exposure_threshold == Decimal(10000)
    assert s.flatten.timeout_s == 90
    assert s.flatten.limit_timeout_s > 0

    esc = s.escalation
    assert esc.wait_minutes == 15
    assert esc.critical_loss == Decimal(10000)
    assert [t.roles for t in esc.tiers] == [
        ["risk_officer", "trading_desk_manager"],
        ["cto", "devops"],
    ]
    assert s.resume.min_shadow_hours == 24

    assert set(s.roles) == {"operator", "risk_officer", "trading_desk_manager", "cto", "devops"}
    assert all(ids and all(i.startswith("U") for i in ids) for ids in s.roles.values())
    assert s.roles_of(s.roles["risk_officer"][0]) == {"risk_officer"}

    contacts = {c.name: c for c in s.contacts}
    assert set(contacts) == {"Risk Officer", "CTO", "Trading Desk Manager", "DevOps On-Call"}
    assert (contacts["Risk Officer"].role, contacts["Risk Officer"].priority) == ("risk_officer", 1)
    assert (contacts["CTO"].role, contacts["CTO"].priority) == ("cto", 1)
    assert contacts["Trading Desk Manager"].priority == 2
    assert contacts["DevOps On-Call"].role == "devops"
    assert contacts["Risk Officer"].email == "risk@company.com"
    assert "+1-877-442-2757" in EXAMPLE.read_text("utf-8")  # IBKR support, as a note

    assert [v.kind for v in s.venues] == ["paper"]  # only the paper venue is active
    # the example's gates are where a config-less install writes them: no surprise on first run
    assert s.paths.live_environment == PathsConfig().live_environment
    assert s.paths.shadow_config == PathsConfig().shadow_config


def test_every_commented_example_in_the_example_config_is_valid(tmp_path: Path) -> None:
    # The ibkr / crypto venues and optional keys are commented out; uncommented they must load.
    text = EXAMPLE.read_text("utf-8")
    line = re.compile(r"^# (\[\[venues\]\]|[a-z_]+ = .*)$", re.M)
    assert len(line.findall(text)) > 20
    uncommented = tmp_path / "all.toml"
    uncommented.write_text(line.sub(r"\1", text), "utf-8")

    s = load_settings(uncommented)
    kinds = {v.name: type(v) for v in s.venues}
    assert kinds == {"paper": PaperVenueConfig, "ibkr": IbkrVenueConfig, "bybit": CryptoVenueConfig}
    assert s.venue("bybit").api_key_env == "BYBIT_API_KEY"  # type: ignore[union-attr]
    assert s.venue("ibkr").port == 7497  # type: ignore[union-attr]
    assert s.kill_switches.latency_baseline_ms == 40


def test_no_config_file_runs_on_the_embedded_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ROLLBOT_CONFIG", raising=False)
    s = load_settings()
    assert s.source is None
    assert s.database.path == Path("var/rollbot.db")
    assert [(v.kind, v.name) for v in s.venues] == [("paper", "paper")]
    assert s.venues[0].book_path.parts[0] == "var"  # type: ignore[union-attr]


def test_config_is_chosen_by_flag_then_env_then_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rollbot.toml").write_text("[flatten]\ntimeout_s = 11\n", "utf-8")
    (tmp_path / "env.toml").write_text("[flatten]\ntimeout_s = 22\n", "utf-8")
    (tmp_path / "flag.toml").write_text("[flatten]\ntimeout_s = 33\n", "utf-8")
    monkeypatch.delenv("ROLLBOT_CONFIG", raising=False)
    assert load_settings().flatten.timeout_s == 11
    monkeypatch.setenv("ROLLBOT_CONFIG", str(tmp_path / "env.toml"))
    assert load_settings().flatten.timeout_s == 22
    assert load_settings(tmp_path / "flag.toml").flatten.timeout_s == 33


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[flatten]\ntimeout_s = -1\n", "flatten.timeout_s", "greater than 0"),
        ("[kill_switches.pnl]\nthreshold = 'five'\n", "kill_switches.pnl.threshold", "number"),
        ("[escalation]\nwait_minutes = 0\n", "escalation.wait_minutes", "greater than 0"),
        ("[roles]\ntrader = ['U1']\n", "roles.trader", "operator"),
        ("[[venues]]\nkind = 'paper'\nfil = 'full'\n", "venues.0.fil", "not permitted"),
        ("[[venues]]\nkind = 'ftx'\n", "venues.0", "'paper', 'ibkr', 'crypto'"),
        ("[[venues]]\nkind = 'paper'\n[[venues]]\nkind = 'paper'\n", "", "unique"),
    ],
)
def test_an_invalid_config_names_the_file_the_key_and_the_problem(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, "utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"{key}:" in message
    assert problem in message
    assert caught.value.exit_code == 2


def test_an_unreadable_config_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=re.escape(f"{missing} does not exist")):
        load_settings(missing)

    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=re.escape(f"{binary} cannot be read")):
        load_settings(binary)

    broken = tmp_path / "broken.toml"
    broken.write_text("[flatten\ntimeout_s = 90\n", "utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"{broken} is not valid TOML")):
        load_settings(broken)

    directory = tmp_path / "adir.toml"
    directory.mkdir()
    with pytest.raises(ConfigError, match=re.escape(f"{directory} cannot be read")):
        load_settings(directory)


def test_secrets_never_live_in_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "leaky.toml"
    path.write_text("[slack]\nbot_token = 'xoxb-in-a-file'\n", "utf-8")
    with pytest.raises(ConfigError, match=r"slack\.bot_token: Extra inputs are not permitted"):
        load_settings(path)

    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-from-env-1234")
    monkeypatch.setenv("BYBIT_API_KEY", "key-from-env")
    secrets = Secrets()
    assert secrets.slack_bot_token is not None
    assert secrets.slack_bot_token.get_secret_value() == "xoxb-from-env-1234"
    assert "xoxb-from-env-1234" not in repr(secrets)
    assert "xoxb-from-env-1234" not in Settings().model_dump_json()
    assert secrets.venue_secret("BYBIT_API_KEY") == "key-from-env"
    assert secrets.venue_secret("") is None


def _field_names(model: type[BaseModel], seen: set[type] | None = None) -> set[str]:
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    names: set[str] = set()

    def walk(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            names.update(_field_names(tp, seen))
        for arg in get_args(tp):
            walk(arg)

    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        names.add(name)
        walk(info.annotation)
    return names


def test_the_example_config_shows_every_setting() -> None:
    text = EXAMPLE.read_text("utf-8")
    missing = [
        name
        for name in sorted(_field_names(Settings))
        if not re.search(rf"^(# )?({name} = |\[\[?([\w.]+\.)?{name}(\.[\w.]+)?\]\]?)", text, re.M)
    ]
    assert missing == [], f"add these settings (commented if optional) to {EXAMPLE}: {missing}"
