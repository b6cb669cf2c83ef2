"""Every armed-status check of issue 17, failing and recovering, on each of the four faces: the
exit code and table of `rollbot preflight`, the App Home banner, the ops-channel alert (exactly
one when it fails, one when it recovers) and /healthz.

One desk per fault, everything else passing: the real bot server (slack-bolt over HTTP to the
loopback Slack, its courier, SQLite), a binance key on the loopback exchange, an IBKR login on
the loopback TWS, the CLI as a subprocess on the same database. Each fault breaks one thing the
way it breaks on a desk and fixes it the way a person would."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fakes.exchange import FakeExchange
from fakes.rollbot_harness import OPERATOR, OPS, RISK, bot_settings, running
from fakes.slack import BOT_SCOPES, FakeSlack
from fakes.tws import FakeTws

from rollbot.bot.slack.probe import slack_probe
from rollbot.bot.slack.server import Server
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.desk.liveness import ME
from rollbot.commands.risk import preflight
from rollbot.commands.risk.preflight import MONITOR_LEASE, PREFLIGHT
from rollbot.commands.rollback.drill import run_drill
from rollbot.config import CryptoVenueConfig, IbkrVenueConfig, PreflightConfig, Settings
from rollbot.storage.events import Actor
from rollbot.storage.leases import Holder, Leases

BANNER = "The kill path is not fully armed"
PERSON = Actor(id=OPERATOR, source="cli", name="ops")
MONITOR = Holder(id="serve-monitor", host=ME["host"], pid=ME["pid"], started=ME["started"])


@dataclass
class Desk:
    slack: FakeSlack
    server: Server
    binance: FakeExchange
    tws: FakeTws
    settings: Settings
    tmp_path: Path
    env: dict[str, str]
    cli: Any  # conftest's Cli
    write_config: Callable[..., Path]
    binance_port: int = 0

    @property
    def rb(self) -> Rollbot:
        return self.server.rb

    def configure(self, settings: Settings) -> None:
        """A person edits rollbot.toml; the running bot reads the same settings."""
        self.settings = settings
        self.rb.settings = settings

    async def preflight_cli(self) -> subprocess.CompletedProcess[str]:
        run = type(self.cli)(self.write_config(self.settings, "desk.toml"), self.tmp_path)
        # in a thread: the loopback Slack, exchange and TWS answer from this loop meanwhile
        return await asyncio.to_thread(run, "preflight", env=self.env)

    async def preflight_here(self) -> dict[str, preflight.Check]:
        probe = slack_probe(self.rb, self.server.bot.client)
        return {c.name: c for c in await preflight.preflight(self.rb, probe)}

    async def healthz(self) -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.server.bound_port}/healthz"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            return resp.status, await resp.json()

    async def home(self) -> str:
        before = self.slack.home_view(RISK)
        version = json.dumps(before.view) if before else None
        url = f"http://127.0.0.1:{self.server.bound_port}/slack/events"
        event = {"type": "app_home_opened", "user": RISK, "tab": "home"}
        await self.slack.http_event(url, event)
        await self.slack.wait_until(
            lambda: (
                self.slack.home_view(RISK)
                and json.dumps(self.slack.home_view(RISK).view) != version
            ),
            timeout=5,
        )
        return json.dumps(self.slack.home_view(RISK).view)

    async def settle(self) -> None:
        """The courier delivers what waits, what Slack refused before included."""
        courier = self.server.bot.courier
        courier.retry_set_aside_s = 0.05
        outbox = self.rb.outbox

        def delivered() -> bool:
            courier.kick()
            return outbox.count_set_aside() == 0 and outbox.pending() == []

        await self.slack.wait_until(delivered, timeout=10)

    def armed_alerts(self) -> list[str]:
        return [m.text or "" for m in self.slack.messages(OPS) if "Armed status" in (m.text or "")]


def table(stdout: str) -> dict[str, tuple[str, str]]:
    """check -> (PASS/FAIL, why and what to do), each column's wrapped lines joined."""
    rows: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) < 6 or cells[1] == "check":
            continue
        if cells[1]:
            rows[cells[1]] = ["", "", ""]
        if rows:
            row = rows[list(rows)[-1]]
            for i, cell in enumerate(cells[2:5]):
                row[i] = f"{row[i]} {cell}".strip()
    return {name: (mark, f"{why} | {todo}") for name, (mark, why, todo) in rows.items()}


# -- the faults -----------------------------------------------------------------------------------
Step = Callable[[Desk], Awaitable[None]]


@dataclass(frozen=True)
class Fault:
    check: str
    reason: str  # what the failing row says
    action: str  # what it tells a person to do
    breaks: Step
    fixes: Step


async def revoke_token(desk: Desk) -> None:
    desk.slack.accepted_tokens.discard(desk.slack.bot_token)


async def reinstall_app(desk: Desk) -> None:
    desk.slack.accepted_tokens.add(desk.slack.bot_token)


async def remove_bot_from_channel(desk: Desk) -> None:
    desk.slack.member_of.discard(OPS)  # someone removes the bot; the next post is refused
    desk.rb.outbox.put("channel", text="a desk note")
    desk.server.bot.courier.kick()
    await desk.slack.wait_until(lambda: desk.rb.outbox.count_set_aside() > 0, timeout=10)


async def invite_bot(desk: Desk) -> None:
    desk.slack.join(OPS)
    await desk.settle()


async def key_loses_trading(desk: Desk) -> None:
    desk.binance.book.trade_permission = False  # "Enable Reading" only


async def key_may_trade(desk: Desk) -> None:
    desk.binance.book.trade_permission = True


async def exchange_down(desk: Desk) -> None:
    desk.binance_port = desk.binance.port
    await desk.binance.stop()  # nothing listens on its port


async def exchange_back(desk: Desk) -> None:
    await desk.binance.start(desk.binance_port)  # back, on the same address


async def tws_read_only(desk: Desk) -> None:
    desk.tws.read_only_api = True


async def tws_read_write(desk: Desk) -> None:
    desk.tws.read_only_api = False


def gates_folder(desk: Desk) -> Path:
    return desk.settings.paths.live_environment.parent


async def gates_folder_read_only(desk: Desk) -> None:
    # root writes through permission bits: the folder is made immutable instead
    folder = gates_folder(desk)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    else:
        folder.chmod(0o555)


async def gates_folder_writable(desk: Desk) -> None:
    folder = gates_folder(desk)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o755)


async def disk_below_threshold(desk: Desk) -> None:
    free_mb = 10**12  # more than any disk holds: what is free is below it
    desk.configure(
        desk.settings.model_copy(update={"preflight": PreflightConfig(min_free_mb=free_mb)})
    )


async def disk_threshold_back(desk: Desk) -> None:
    desk.configure(desk.settings.model_copy(update={"preflight": PreflightConfig()}))


async def monitor_stops_renewing(desk: Desk) -> None:
    # its last renewal an hour ago, for a minute: the lease has run out
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    Leases(desk.rb.db).hold(MONITOR_LEASE, MONITOR, an_hour_ago, ttl_s=60)


async def monitor_renews(desk: Desk) -> None:
    Leases(desk.rb.db).hold(MONITOR_LEASE, MONITOR, datetime.now(UTC), ttl_s=3600)


async def drill_ages(desk: Desk) -> None:
    # the desk as it is 40 days on, with no drill since: the last one passed 40 days ago
    with desk.rb.db.write():
        for row in desk.rb.db.query("SELECT id, at FROM drills"):
            at = datetime.fromisoformat(row["at"]) - timedelta(days=40)
            desk.rb.db.execute("UPDATE drills SET at = ? WHERE id = ?", (at.isoformat(), row["id"]))


async def run_a_drill(desk: Desk) -> None:
    await run_drill(desk.settings, PERSON)


FAULTS = {
    "token refused": Fault(
        "slack_token",
        "SLACK_BOT_TOKEN refused by Slack: invalid_auth",
        "reinstall the app and set SLACK_BOT_TOKEN",
        revoke_token,
        reinstall_app,
    ),
    "not_in_channel": Fault(
        "slack_ops_channel",
        f"posting in {OPS} fails: not_in_channel",
        f"invite the bot: /invite @rollbot in {OPS}",
        remove_bot_from_channel,
        invite_bot,
    ),
    "a key without trade permission": Fault(
        "venue:binance",
        "refused this key a cancel",
        "give binance's API key permission to trade and cancel",
        key_loses_trading,
        key_may_trade,
    ),
    "an IBKR API set read-only": Fault(
        "venue:ibkr",
        "TWS answered that its API is read-only",
        "uncheck Global Configuration > API > Settings > Read-Only API",
        tws_read_only,
        tws_read_write,
    ),
    "a venue down": Fault(
        "venue:binance",
        "unreachable: binance:",
        "check that binance is up and reachable from this host",
        exchange_down,
        exchange_back,
    ),
    "gates unwritable": Fault(
        "gates",
        "is not writable: a kill could not disable the gates",
        "give the user running rollbot write access to",
        gates_folder_read_only,
        gates_folder_writable,
    ),
    "disk threshold": Fault(
        "disk",
        "below the 1,000,000,000,000 MiB threshold",
        "free space on that disk",
        disk_below_threshold,
        disk_threshold_back,
    ),
    "lease lost": Fault(
        "monitor_lease",
        "the lease of serve-monitor ran out",
        "start `rollbot serve` or `rollbot clock`",
        monitor_stops_renewing,
        monitor_renews,
    ),
    "drill overdue": Fault(
        "drill",
        "the last passed drill is 40 days old, older than its 31-day period",
        "run `rollbot drill`",
        drill_ages,
        run_a_drill,
    ),
}


@pytest.fixture
async def desk(
    tmp_path: Path, rollbot: Any, write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Desk]:
    # without chat:write.public the bot posts only where it is a member: it is in the channel
    no_public = ",".join(s for s in BOT_SCOPES.split(",") if s != "chat:write.public")
    async with (
        FakeSlack(scopes=no_public) as slack,
        FakeExchange("binance") as binance,
        FakeTws() as tws,
    ):
        slack.join(OPS)
        for uid, name in ((RISK, "rita"), (OPERATOR, "oscar")):
            slack.add_user(uid, name)
        tws.add_position("AAPL", 100, "190.5")
        env = {
            **binance.env("binance"),
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_API_URL": slack.api_url,
        }
        for key, value in binance.env("binance").items():
            monkeypatch.setenv(key, value)
        venues = [
            *bot_settings(tmp_path).venues,
            CryptoVenueConfig(**binance.venue_config("binance", market="spot", rate_limit_ms=1)),
            IbkrVenueConfig(port=tws.port, timeout_s=3, reconnect_backoff_s=[0.05]),
        ]
        settings = bot_settings(tmp_path, venues=venues)
        await run_drill(settings, PERSON)  # a drill passed today
        async with running(slack, settings, http=True) as server:
            desk = Desk(slack, server, binance, tws, settings, tmp_path, env, rollbot, write_config)
            desk.rb.gates.disable(PREFLIGHT, "safe state")
            await monitor_renews(desk)  # serve's risk monitor, played by this live process
            try:
                yield desk
            finally:
                if os.geteuid() == 0:  # an immutable folder would outlive the test
                    subprocess.run(["chattr", "-i", str(gates_folder(desk))], check=False)


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
async def test_each_check_fails_and_recovers_on_every_face(desk: Desk, fault: Fault) -> None:
    every = await desk.preflight_here()
    assert [c for c in every.values() if not c.ok] == []  # armed: every check passes
    name = fault.check

    await fault.breaks(desk)
    # the terminal: exit 1, one FAIL row saying why and what to do
    run = await desk.preflight_cli()
    assert run.returncode == 1, run.stdout + run.stderr
    rows = table(run.stdout)
    assert {n for n, (mark, _) in rows.items() if mark != "PASS"} == {name}, run.stdout
    mark, row = rows[name]
    assert mark == "FAIL" and fault.reason in row and fault.action in row, row
    assert f"Not armed: 1 of {len(rows)} checks fail." in run.stdout
    # the same failure seen again by the bot: still one alert
    here = await desk.preflight_here()
    assert {n for n, c in here.items() if not c.ok} == {name}
    assert fault.reason in here[name].reason
    status, body = await desk.healthz()
    assert status == 503 and body["ok"] is False
    assert fault.reason in body["armed_failing"][name]

    await fault.fixes(desk)
    home = await desk.home()  # the last answer stands until the next check
    assert BANNER in home and name in home and fault.action in home
    await desk.settle()
    run = await desk.preflight_cli()
    assert run.returncode == 0, run.stdout + run.stderr
    marks = {n: mark for n, (mark, _) in table(run.stdout).items()}
    assert set(marks.values()) == {"PASS"} and rows.keys() <= marks.keys(), run.stdout
    assert "Armed: every check passes." in run.stdout
    assert all(c.ok for c in (await desk.preflight_here()).values())
    status, body = await desk.healthz()
    assert (status, body["armed_failing"]) == (200, {}), body
    assert BANNER not in await desk.home()

    await desk.settle()
    failed, recovered = desk.armed_alerts()  # exactly two, whichever process saw it first
    assert failed.startswith(f"🔴 Armed status: {name} FAILED: ") and fault.reason in failed
    assert f"What to do: {here[name].action}" in failed
    assert recovered == f"✅ Armed status: {name} passes again."
