"""`rollbot serve` as a real process (issue 16 item 3): a refused token ends it at once, naming
the variable; SIGTERM stops it cleanly at any point, start-up included, and a clean stop
releases the risk monitor's lease."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes.rollbot_harness import bot_settings
from fakes.slack import FakeSlack

pytestmark = pytest.mark.timeout(60)


async def spawn(
    config: Path, cwd: Path, slack: FakeSlack, **env: str
) -> asyncio.subprocess.Process:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    full.update(
        ROLLBOT_CONFIG=str(config),
        PYTHONUNBUFFERED="1",
        NO_COLOR="1",
        COLUMNS="250",
        SLACK_API_URL=slack.api_url,
        SLACK_BOT_TOKEN=slack.bot_token,
        SLACK_APP_TOKEN=slack.app_token,
    )
    full.update(env)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rollbot.bot.cli",
        "serve",
        cwd=cwd,
        env=full,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process, timeout: float) -> tuple[int, str, str]:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"rollbot serve still running after {timeout} s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_refused_app_token_ends_serve_at_once_naming_the_variable(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    async with FakeSlack() as slack:
        started = time.monotonic()
        proc = await spawn(
            write_config(bot_settings(tmp_path)), tmp_path, slack, SLACK_APP_TOKEN="xapp-revoked"
        )
        code, _, err = await finish(proc, 20)
        assert code != 0
        assert time.monotonic() - started < 20
        assert "SLACK_APP_TOKEN" in err and "invalid_auth" in err
        assert "Traceback" not in err


def lease_rows(db: Path) -> list[Any]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT name, holder FROM leases").fetchall()


async def test_sigterm_stops_serve_cleanly_during_start_up_and_after_it(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    settings = bot_settings(tmp_path)
    settings = settings.model_copy(
        update={"kill_switches": settings.kill_switches.model_copy(update={"interval_s": 0.2})}
    )
    config = write_config(settings)
    async with FakeSlack() as slack:
        # 1. Slack never answers auth.test: SIGTERM still ends it at once, cleanly
        arrived = asyncio.Event()

        async def hang(params: dict[str, Any]) -> dict[str, Any]:
            arrived.set()
            await asyncio.sleep(60)
            return {"ok": False, "error": "request_timeout"}

        slack.on_method("auth.test", hang)
        proc = await spawn(config, tmp_path, slack)
        await asyncio.wait_for(arrived.wait(), 20)
        proc.send_signal(signal.SIGTERM)
        code, _, err = await finish(proc, 10)
        assert code == 0, err
        assert "Traceback" not in err

        # 2. started and holding the risk monitor's lease: SIGTERM releases it
        slack._custom.pop("auth.test")
        proc = await spawn(config, tmp_path, slack)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert b"rollbot ready" in line
        db = tmp_path / "rollbot.db"
        await slack.wait_until(lambda: lease_rows(db), timeout=10)
        proc.send_signal(signal.SIGTERM)
        code, _, err = await finish(proc, 15)
        assert code == 0, err
        assert "Traceback" not in err
        assert lease_rows(db) == []
