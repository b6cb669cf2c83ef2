"""HTTP mode: signed requests over real HTTP, /healthz, /metrics; the manifest; start-up checks."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from fakes.rollbot_harness import OPERATOR, OPS, bot_settings, events_url, running, secrets_for
from fakes.slack import FakeSlack
from pydantic import SecretStr

from rollbot.bot.slack.ids import Command
from rollbot.bot.slack.server import Server
from rollbot.commands.killswitch.trading_state import TradingState
from rollbot.config import Secrets
from rollbot.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


async def test_signed_kill_over_http_halts_and_bad_or_stale_signatures_get_401(
    slack: FakeSlack, tmp_path: Path
) -> None:
    async with running(slack, bot_settings(tmp_path), http=True) as server:
        url = events_url(server)
        forged = await slack.post_to_app(
            url,
            slack.slash_command_body("/kill", "forged", user_id=OPERATOR, channel_id=OPS),
            signing_secret="not-the-secret",
        )
        assert forged.status == 401
        body = slack.slash_command_body("/kill", "replayed", user_id=OPERATOR, channel_id=OPS)
        stale = await _post_signed(slack, url, body, timestamp=int(time.time()) - 600)
        assert stale == 401
        assert server.rb.incidents.latest() is None
        assert server.rb.killswitch.state_of(["global"]) is TradingState.ACTIVE

        ok = await slack.http_slash_command(
            url, "/kill", "runaway algo", user_id=OPERATOR, channel_id=OPS
        )
        assert ok.status == 200 and "HALTED" in ok.response_text
        assert ok.latency < 3.0
        assert server.rb.killswitch.state_of(["global"]) is TradingState.HALTED
        # a retry of the same delivery (same trigger id, x-slack-retry-num) runs nothing again
        again = await slack.post_to_app(url, ok_delivery_body(slack), retry_num=1)
        assert again.status == 200
        await slack.wait_until(lambda: not server.bot.tasks, timeout=10)
        assert len(server.rb.incidents.list()) == 1


def ok_delivery_body(slack: FakeSlack) -> str:
    return slack.http_deliveries()[-1].body


async def _post_signed(slack: FakeSlack, url: str, body: str, *, timestamp: int) -> int:
    from fakes.slack import signed_headers

    headers = signed_headers(body, slack.signing_secret, timestamp=timestamp)
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as resp,
    ):
        return resp.status


async def test_healthz_and_metrics(slack: FakeSlack, tmp_path: Path) -> None:
    async with running(slack, bot_settings(tmp_path), http=True) as server:
        url = events_url(server)
        await slack.http_slash_command(
            url, "/kill", "for metrics", user_id=OPERATOR, channel_id=OPS
        )
        await slack.wait_until(lambda: not server.bot.tasks, timeout=10)
        base = f"http://127.0.0.1:{server.bound_port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/healthz") as resp:
                assert resp.status == 200
                assert (await resp.json())["ok"] is True
            async with session.get(f"{base}/metrics") as resp:
                text = await resp.text()
        assert 'rollbot_commands_total{command="/kill",outcome="ok"} 1.0' in text
        assert 'rollbot_ack_latency_seconds_count{command="/kill"} 1.0' in text
        assert 'rollbot_trading_state{scope="global"} 2.0' in text
        assert "rollbot_open_incidents 1.0" in text
        assert "rollbot_pending_approvals 0.0" in text
        assert "rollbot_active_escalations" in text


def test_manifest_lists_exactly_the_registered_commands() -> None:
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    in_manifest = {c["command"] for c in manifest["features"]["slash_commands"]}
    assert in_manifest == {c.value for c in Command}
    for c in manifest["features"]["slash_commands"]:
        assert c["description"] and "usage_hint" in c
    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] is True
    assert settings["interactivity"]["is_enabled"] is True
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True


async def test_manifest_matches_what_bolt_really_routes(slack: FakeSlack, tmp_path: Path) -> None:
    async with running(slack, bot_settings(tmp_path), http=True) as server:
        url = events_url(server)
        manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
        for c in manifest["features"]["slash_commands"]:
            resp = await slack.http_slash_command(
                url, c["command"], "help", user_id=OPERATOR, channel_id=OPS
            )
            assert resp.status == 200, c["command"]  # an unrouted command gets 404


async def test_start_says_plainly_what_is_missing_or_wrong(
    slack: FakeSlack, tmp_path: Path
) -> None:
    settings = bot_settings(tmp_path)
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN"):
        await Server(
            settings,
            Secrets(slack_bot_token="xoxb-1", slack_api_url=slack.api_url),
            start_clock=False,
        ).start()
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        await Server(
            settings,
            Secrets(slack_bot_token="xoxb-1", slack_api_url=slack.api_url),
            http=True,
            start_clock=False,
        ).start()
    wrong = secrets_for(slack).model_copy(update={"slack_bot_token": SecretStr("xoxb-wrong")})
    with pytest.raises(ConfigError, match="invalid_auth"):
        await Server(settings, wrong, start_clock=False).start()
    no_channel = settings.model_copy(
        update={"slack": settings.slack.model_copy(update={"ops_channel": ""})}
    )
    with pytest.raises(ConfigError, match="ops_channel"):
        await Server(no_channel, secrets_for(slack), start_clock=False).start()
