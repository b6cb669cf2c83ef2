"""`rollbot serve --http --port 0` as a real subprocess against the loopback Slack: its config
file, its environment (secrets only from env), and the time from exec to its ready line."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fakes.slack import FakeSlack

from bench.common import OPERATOR, OPS, RISK, pg_query_one, pg_url_for
from rollbot.config import PaperVenueConfig

READY = re.compile(r"rollbot ready: HTTP on [\d.]+:(\d+)")


def _s(value: object) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def config_toml(root: Path, venues: list[PaperVenueConfig]) -> str:
    """Production defaults, paths under `root`; /rollback starts without a second approver."""
    url = pg_url_for(root)
    lines = [
        "[database]",
        f"url = {_s(url)}" if url else f"path = {_s(root / 'rollbot.db')}",
        "[paths]",
        f"reports_dir = {_s(root / 'reports')}",
        f"live_environment = {_s(root / 'config' / 'live_environment.toml')}",
        f"shadow_config = {_s(root / 'config' / 'shadow_config.toml')}",
        "[slack]",
        f"ops_channel = {_s(OPS)}",
        "[roles]",
        f"operator = [{_s(OPERATOR)}]",
        f"risk_officer = [{_s(RISK)}]",
        "[approvals]",
        "rollback_needs_approval = false",
    ]
    for v in venues:
        lines += [
            "[[venues]]",
            'kind = "paper"',
            f"name = {_s(v.name)}",
            f"book_path = {_s(v.book_path)}",
            f"latency_ms = {v.latency_ms}",
        ]
    return "\n".join(lines) + "\n"


def rollbot_argv() -> list[str]:
    script = Path(sys.executable).with_name("rollbot")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from rollbot.bot.cli.app import main; main()"]


def serve_env(root: Path, slack: FakeSlack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ROLLBOT_"))}
    env.update(
        ROLLBOT_CONFIG=str(root / "rollbot.toml"),
        SLACK_BOT_TOKEN=slack.bot_token,
        SLACK_SIGNING_SECRET=slack.signing_secret,
        SLACK_API_URL=slack.api_url,
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    started: float  # perf_counter just before exec
    ready_s: float  # exec -> ready line
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"


@asynccontextmanager
async def serve_process(
    root: Path,
    slack: FakeSlack,
    venues: list[PaperVenueConfig],
    *,
    config: str | None = None,
    timeout: float = 60,
) -> AsyncIterator[Served]:
    """Write the config, exec `rollbot serve`, wait for its ready line; SIGTERM it after."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "rollbot.toml").write_text(config or config_toml(root, venues), "utf-8")
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *rollbot_argv(),
        "serve",
        "--http",
        "--port",
        "0",
        cwd=root,
        env=serve_env(root, slack),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await proc.stdout.readline()).decode(errors="replace")
                if not line:
                    raise RuntimeError(f"rollbot serve exited ({await proc.wait()}) before ready")
                match = READY.search(line)
                if match:
                    break
        yield Served(proc, started, time.perf_counter() - started, int(match.group(1)))
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def query_one(db: Path, sql: str, params: tuple[object, ...] = ()) -> tuple[object, ...] | None:
    """One row from the bot's database through a separate connection (WAL: no blocking); on
    PostgreSQL (bench/postgres.py), the database `root` was given, through one kept connection."""
    if pg_url_for(db.parent, create=False):
        return pg_query_one(db.parent, sql, params)
    conn = sqlite3.connect(db, timeout=5)
    try:
        row = conn.execute(sql, params).fetchone()
        return tuple(row) if row else None
    finally:
        conn.close()
