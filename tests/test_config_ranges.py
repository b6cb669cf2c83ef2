"""Every number and list in rollbot.toml has a range or a rule (issue 14, item 10): a setting
outside it exits 2 before anything runs, naming the file, the key and the range allowed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from rollbot.config import Settings, load_settings
from rollbot.errors import ConfigError

Run = Callable[..., CompletedProcess[str]]


def with_setting(settings: Settings | dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    data = (
        settings.model_dump(mode="json", exclude_none=True)
        if isinstance(settings, Settings)
        else settings
    )
    *parents, last = dotted.split(".")
    target: Any = data
    for part in parents:
        target = target[int(part)] if part.isdigit() else target.setdefault(part, {})
    target[last] = value
    return data


# the four that main accepted, each seen doing harm or able to
ISSUE_EXAMPLES = [
    ("kill_switches.pnl.threshold", 0.05, "between -1 and 0"),
    ("kill_switches.drawdown.threshold", -0.15, "between 0 and 1"),
    ("flatten.limit_offset_bps", 25000, "less than or equal to 1000"),
    ("slack.kill_roles", [], "at least 1 item"),
]


def test_the_issues_bad_settings_exit_2_naming_file_key_and_range(
    settings: Settings, write_config: Callable[..., Path], rollbot: Run, tmp_path: Path
) -> None:
    for key, value, allowed in ISSUE_EXAMPLES:
        config = write_config(with_setting(settings, key, value), "bad.toml")
        result = rollbot("kill", "trigger", "--reason", "x", env={"ROLLBOT_CONFIG": str(config)})
        text = " ".join(result.stderr.split())
        assert result.returncode == 2, f"{key} = {value!r}: exit {result.returncode}: {text}"
        assert str(config) in text and f"{key}:" in text and allowed in text, text
        assert "Traceback" not in text
        assert not settings.database.path.exists()  # nothing ran: not even the database


BAD = [
    ("nav_change_threshold", 1.5, "between 0 and 1"),
    ("database.busy_timeout_ms", 0, "greater than 0"),
    ("kill_switches.interval_s", 0, "greater than 0"),
    ("kill_switches.pnl.threshold", -1.5, "between -1 and 0"),
    ("kill_switches.psr.threshold", 1.2, "between 0 and 1"),
    ("kill_switches.order_rejections.threshold", 20, "between 0 and 1"),
    ("kill_switches.latency.threshold", 0.5, "greater than 1"),
    ("kill_switches.connection_failures.threshold", 0, "greater than or equal to 1"),
    ("kill_switches.kills_per_day.threshold", 2.5, "whole number"),
    ("kill_switches.latency_baseline_ms", -40, "greater than 0"),
    ("kill_switches.fail_closed_after", 0, "greater than or equal to 1"),
    ("flatten.limit_offset_bps", -5, "greater than or equal to 0"),
    ("flatten.timeout_s", float("inf"), "finite"),
    ("flatten.market_exposure_threshold", -1, "greater than or equal to 0"),
    ("escalation.tiers", [], "at least 1 item"),
    ("escalation.tiers.0.roles", [], "at least 1 item"),
    ("escalation.critical_loss", 0, "greater than 0"),
    ("escalation.webhook_retries", 1000, "less than or equal to 20"),
    ("approvals.clear_hold.roles", [], "at least 1 item"),
    ("approvals.resume.quorum", 0, "greater than or equal to 1"),
    ("approvals.expiry_minutes", 0, "greater than 0"),
    ("slack.flatten_roles", [], "at least 1 item"),
    ("slack.view_roles", ["cto", "cto"], "must not repeat"),
    ("resume.min_shadow_hours", -1, "greater than or equal to 0"),
    ("venues.0.limit_slippage_bps", 20000, "less than or equal to 1000"),
    ("venues.0.max_msgs_per_sec", 500, "less than or equal to 50"),
    ("venues.0.spare_client_ids", [17], "must not contain client_id"),
    ("venues.0.reconnect_backoff_s", [], "at least 1 item"),
    ("contacts.0.webhook_url", "ftp://pager/x", "http:// or https://"),
    ("contacts.0.priority", 0, "greater than or equal to 1"),
    ("hooks.strategy_stop.timeout_s", 0, "greater than 0"),
    ("venues", [], "at least 1 item"),
]


@pytest.mark.parametrize(("key", "value", "allowed"), BAD, ids=[k for k, _, _ in BAD])
def test_each_range_is_checked_and_named(
    settings: Settings, write_config: Callable[..., Path], key: str, value: Any, allowed: str
) -> None:
    base = settings.model_dump(mode="json", exclude_none=True)
    base["contacts"] = [{"name": "Risk", "role": "risk_officer"}]
    if key.startswith("venues"):
        base["venues"] = [{"kind": "ibkr", "name": "ibkr"}]
    config = write_config(with_setting(base, key, value), "bad.toml")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = " ".join(str(caught.value).split())
    parent, _, last = key.rpartition(".")
    named = f"{key}:" in message or f"{parent}: {last}" in message  # a rule across keys
    assert str(config) in message and named and allowed in message, message
