"""Every secret may come from `.env` in the working directory: a venue's key, secret and
passphrase (the CLI in its own process, signing against the loopback OKX), the guard's token,
a PagerDuty routing key and the Slack tokens. A variable exported in the environment always
wins over the file, and no secret is ever printed."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from escalation.helpers import make_settings, open_incident, operator
from fakes.exchange import RunningFakeExchange, start_fake_exchange
from fakes.loopback import serve_post

from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.paging.escalation import start_escalation
from rollbot.commands.rollback.timers import fire_due
from rollbot.config import Contact, CryptoVenueConfig, Settings
from rollbot.secrets import Secrets

# `$` and `${...}` are common in generated secrets: .env values are taken literally
PASSPHRASE = "pa$$-${HOME}-phrase"
SECRET = "okx-secret-from-dotenv-0b1c"


@pytest.fixture
def okx() -> Iterator[RunningFakeExchange]:
    with start_fake_exchange(
        "okx", balances={"USDT": "10000", "BTC": "0.5"}, secret=SECRET, passphrase=PASSPHRASE
    ) as fake:
        yield fake


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def okx_cli(
    okx: RunningFakeExchange,
    settings: Settings,
    write_config: Any,
    rollbot: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Run:
    """The CLI in its own process, cwd tmp_path (where .env is), configured for the OKX fake."""
    venue = CryptoVenueConfig(**okx.venue_config("okx", rate_limit_ms=1))
    path = write_config(settings.model_copy(update={"venues": [venue]}), "okx.toml")
    for name in okx.env("okx"):  # the CLI's environment is this one's
        monkeypatch.delenv(name, raising=False)

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return rollbot(*args, env={"ROLLBOT_CONFIG": str(path), **(env or {})})

    return run


def dotenv(where: Path, values: dict[str, str]) -> None:
    lines = ["# rollbot's secrets (never committed: .gitignore)"]
    lines += [f"export {k}='{v}'" if "$" in v else f"{k}={v}" for k, v in values.items()]
    (where / ".env").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_venues_key_secret_and_passphrase_come_from_dotenv(
    okx: RunningFakeExchange, okx_cli: Run, tmp_path: Path
) -> None:
    bare = okx_cli("positions", "--json")
    assert bare.returncode == 2
    assert "ROLLBOT_FAKE_OKX_KEY (api key) is not set" in bare.stderr
    assert "put it in .env in the working directory" in bare.stderr

    dotenv(tmp_path, okx.env("okx"))
    read = okx_cli("positions", "--json")

    assert read.returncode == 0, read.stderr
    held = {p["symbol"] for v in json.loads(read.stdout) for p in v["positions"]}
    assert "BTC/USDT" in held  # signed with the key, secret and passphrase from .env
    for text in (bare.stdout, bare.stderr, read.stdout, read.stderr):
        assert SECRET not in text and PASSPHRASE not in text


def test_an_exported_variable_wins_over_dotenv(
    okx: RunningFakeExchange, okx_cli: Run, tmp_path: Path
) -> None:
    right = okx.env("okx")
    dotenv(tmp_path, right)
    wrong = {"ROLLBOT_FAKE_OKX_PASSPHRASE": "an-old-passphrase"}

    exported_wrong = okx_cli("positions", "--json", env=wrong)
    dotenv(tmp_path, {**right, **wrong})
    exported_right = okx_cli("positions", "--json", env={"ROLLBOT_FAKE_OKX_PASSPHRASE": PASSPHRASE})

    assert exported_wrong.returncode != 0  # the exported (wrong) one was used, not .env's
    assert "an-old-passphrase" not in exported_wrong.stdout + exported_wrong.stderr
    assert exported_right.returncode == 0, exported_right.stderr


def test_the_guard_token_comes_from_dotenv(
    rollbot: Any, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Rollbot.open(settings).db.close()
    token = "guard-token-from-dotenv-123456"
    socket = tmp_path / "g.sock"
    monkeypatch.delenv("ROLLBOT_GUARD_TOKEN", raising=False)

    missing = rollbot("guard", "serve", "--socket", str(socket))
    assert missing.returncode == 2 and "ROLLBOT_GUARD_TOKEN in the environment (or .env)" in (
        missing.stderr
    )

    dotenv(tmp_path, {"ROLLBOT_GUARD_TOKEN": token})
    proc = rollbot.popen("guard", "serve", "--socket", str(socket))
    try:
        assert proc.stdout is not None
        assert "rollbot guard service on unix:" in proc.stdout.readline()

        async def ask(bearer: str) -> int:
            async with (
                aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket))) as s,
                s.post(
                    "http://guard/guard",
                    json={"venue": "paper", "symbol": "AAPL", "side": "BUY", "quantity": 1},
                    headers={"Authorization": f"Bearer {bearer}"},
                ) as r,
            ):
                return r.status

        assert asyncio.run(ask(token)) == 200
        assert asyncio.run(ask("not-the-token-at-all")) == 401
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert token not in out + err


async def test_a_pagerduty_routing_key_comes_from_dotenv(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(json.loads(await request.text()))
        return web.json_response({"status": "success"}, status=202)

    monkeypatch.delenv("ROLLBOT_TEST_PD_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    dotenv(tmp_path, {"ROLLBOT_TEST_PD_KEY": "R0UT1NG-FROM-DOTENV"})
    async with serve_post("/v2/enqueue", handle) as base:
        settings = make_settings(tmp_path)
        risk = settings.contacts[0]
        settings.contacts[0] = Contact(
            **{
                **risk.model_dump(),
                "webhook_url": f"{base}/v2/enqueue",
                "webhook_format": "pagerduty",
                "webhook_key_env": "ROLLBOT_TEST_PD_KEY",
            }
        )
        rb = Rollbot.open(settings, clock=clock)
        try:
            start_escalation(rb, open_incident(rb), operator())
            await fire_due(rb)
        finally:
            rb.db.close()
    [page] = received
    assert page["routing_key"] == "R0UT1NG-FROM-DOTENV" and page["event_action"] == "trigger"


def test_slack_tokens_come_from_dotenv_and_an_exported_one_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    dotenv(tmp_path, {"SLACK_BOT_TOKEN": "xoxb-from-dotenv", "SLACK_APP_TOKEN": "xapp-dotenv"})
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-exported")

    secrets = Secrets()

    assert secrets.slack_bot_token is not None
    assert secrets.slack_bot_token.get_secret_value() == "xoxb-from-dotenv"
    assert secrets.slack_app_token is not None
    assert secrets.slack_app_token.get_secret_value() == "xapp-exported"
    assert "xoxb-from-dotenv" not in repr(secrets) + str(secrets)
