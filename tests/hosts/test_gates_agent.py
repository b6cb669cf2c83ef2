"""The gates across hosts (point 3 of issue 19): the trading system's gates files live on its
own host, where `rollbot gates agent` applies the changes rollbot hosts store in the database.
Two rollbot hosts with [gates] agent = true and no gates files of their own; a third working
directory, the trading host, with the desk's files (their other keys and comments kept)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

from terminal_users import as_person

from hosts.desk import ROLLBOT, events, two_hosts
from rollbot.brokers.base import Side
from rollbot.clock import SystemClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.gates import SHADOW, Gates
from rollbot.commands.killswitch.gates_agent import GatesAgent, GatesViaAgent
from rollbot.config import DatabaseConfig, GatesConfig, HostConfig, PathsConfig
from rollbot.storage.backends import open_database
from rollbot.storage.db import Database
from rollbot.storage.events import Actor
from rollbot.storage.postgres import PostgresDatabase

DESK_LIVE = """\
# live_environment.toml: owned by the desk; rollbot flips the three gates only
[environment]
enable_live_trading = true   # set by the desk at 09:30
live_mode_armed = true
live_dry_run_mode = false
max_position_usd = 250_000   # desk limit, reviewed weekly
"""
DESK_SHADOW = """\
# shadow_config.toml
[shadow]
mode = 'shadow'   # literal string, kept as written
enabled = false  # live today
"""
AGENT = GatesConfig(agent=True, agent_poll_s=0.1, agent_stale_s=1.5, apply_timeout_s=5)


def run(config: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ROLLBOT, "--config", str(config), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=as_person("alice"),
        env={**os.environ, "COLUMNS": "250", "NO_COLOR": "1"},
    )


def test_the_agent_applies_changes_from_either_host_and_its_loss_reads_as_blocked(
    tmp_path: Path, shared_db: Callable[[str], DatabaseConfig], write_config: Callable[..., Path]
) -> None:
    a, b = two_hosts(tmp_path, shared_db("gates"), write_config, latency_ms=0, gates=AGENT)
    # the rollbot hosts have no gates files: their [paths] point where nothing is
    for h in (a, b):
        assert not h.settings.paths.live_environment.exists() or h is a
    trading = tmp_path / "trading"
    (trading / "config").mkdir(parents=True)
    live, shadow = trading / "config" / "live_environment.toml", trading / "config" / "shadow.toml"
    live.write_text(DESK_LIVE)
    shadow.write_text(DESK_SHADOW)
    agent_settings = a.settings.model_copy(
        update={
            "host": HostConfig(id="trading-1", lease_interval_s=0.5),
            "paths": PathsConfig(
                reports_dir=trading / "reports", live_environment=live, shadow_config=shadow
            ),
        }
    )
    agent_config = write_config(agent_settings, "trading.toml")
    agent = subprocess.Popen(
        [ROLLBOT, "--config", str(agent_config), "gates", "agent"],
        cwd=trading,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = open_database(a.settings.database)
    try:
        assert agent.stdout is not None
        line = agent.stdout.readline()
        assert "rollbot gates agent ready on trading-1" in line, line + agent.stderr.read()  # type: ignore[union-attr]

        # host b reads the trading host's files through the agent's report: live
        seen = run(b.config, b.root, "gates", "verify")
        assert "applied by `rollbot gates agent`" in seen.stdout and "trading-1" in seen.stdout
        assert "Live trading ENABLED" in seen.stdout and seen.returncode == 1

        # host a disables: stored, applied there, read back here — only the gate keys changed
        off = run(a.config, a.root, "gates", "disable", "--confirm", "--reason", "host a says")
        assert off.returncode == 0, off.stdout + off.stderr
        assert "Live trading BLOCKED" in off.stdout
        desk = tomllib.loads(live.read_text())["environment"]
        assert desk["enable_live_trading"] is False and desk["max_position_usd"] == 250_000
        assert "# desk limit, reviewed weekly" in live.read_text()
        assert "mode = 'shadow'   # literal string, kept as written" in shadow.read_text()
        # change 1 armed the desk before it started (two_hosts); change 2 is host a's
        asked = events(db, "GATES_REQUESTED")[-1]
        written = events(db, "GATES_WRITTEN")[-1]
        assert asked["data"]["generation"] == 2 and asked["data"]["after"]["shadow_enabled"]
        assert asked["id"] < written["id"] and written["actor"].startswith("gates-agent@trading-1")
        assert "change 2 from the database: host a says" in written["reason"]
        assert run(b.config, b.root, "gates", "verify").returncode == 0  # blocked, as host b sees

        # the agent lost: within agent_stale_s both hosts read the gates as unreadable (BLOCKED)
        agent.send_signal(signal.SIGKILL)
        agent.communicate(timeout=10)
        time.sleep(AGENT.agent_stale_s + 0.2)
        lost = run(b.config, b.root, "gates", "verify")
        assert lost.returncode == 1
        assert "trading-1 last reported" in lost.stdout and "BLOCKED" in lost.stdout
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
        db.close()


def test_a_rollback_waits_for_the_agent_and_says_so_when_it_never_applies(
    tmp_path: Path, shared_db: Callable[[str], DatabaseConfig], write_config: Callable[..., Path]
) -> None:
    """Step 2 reads the gates back from the agent's report: with no agent it is FAILED, named,
    and the guard refuses orders (gates unreadable)."""
    from rollbot.commands.rollback.engine import Engine

    gates = AGENT.model_copy(update={"apply_timeout_s": 0.3})
    a, _ = two_hosts(tmp_path, shared_db("no-agent"), write_config, latency_ms=0, gates=gates)

    async def kill() -> None:
        rb = Rollbot.open(a.settings, clock=SystemClock())
        try:
            assert isinstance(rb.gates, GatesViaAgent)
            await Engine(rb, Actor(id="U0OP1", source="cli")).kill(reason="no agent")
        finally:
            await rb.aclose()

    asyncio.run(kill())
    rb = Rollbot.open(a.settings, clock=SystemClock())
    try:
        step2 = next(e for e in events(rb.db, "STEP_ENDED") if e["data"]["step"] == 2)["data"]
        assert step2["status"] == "FAILED"
        said = [line for line in step2["actions"] if "NOT confirmed disabled" in line]
        assert said and "no gates agent has reported" in said[0], step2["actions"]
        decision = rb.killswitch.check_order("paper", "AAPL", Side.BUY, 1)
        assert not decision.allowed
    finally:
        rb.db.close()


def test_the_agent_cut_off_from_the_database_puts_its_files_in_shadow_and_records_it_later(
    tmp_path: Path, shared_db: Callable[[str], DatabaseConfig]
) -> None:
    live, shadow = tmp_path / "live.toml", tmp_path / "shadow.toml"
    live.write_text(DESK_LIVE)
    shadow.write_text(DESK_SHADOW)
    database = shared_db("cut-off")
    # where the database was, nothing answers: a directory in place of the SQLite file, or a
    # PostgreSQL socket directory with no server in it
    away = (
        database.model_copy(update={"url": f"postgresql://rollbot@/x?host={tmp_path / 'none'}"})
        if database.url
        else database.model_copy(update={"path": tmp_path})
    )
    reachable = {"yes": True}

    def open_db() -> Database | PostgresDatabase:
        return open_database(database if reachable["yes"] else away)

    cfg = GatesConfig(agent=True, agent_fail_closed_s=0.3)
    agent = GatesAgent(open_db, (live, shadow), SystemClock(), cfg, "trading-1")
    assert agent.poll() == "in step"
    assert Gates(live, shadow).read().live_allowed  # nothing asked: the desk's live files stay

    reachable["yes"] = False
    assert agent.db is not None
    agent.db.close()  # the connection is gone with the network
    assert agent.poll() == "no database"
    assert Gates(live, shadow).read().live_allowed  # not yet: a blip is not an outage
    time.sleep(0.35)
    assert agent.poll() == "failed closed"
    now = Gates(live, shadow).read()
    assert not now.live_allowed and now.shadow_active
    assert "max_position_usd = 250_000   # desk limit" in live.read_text()

    reachable["yes"] = True
    assert agent.poll().startswith("database back: shadow recorded as change 1")
    db = open_database(database)
    try:
        [closed] = events(db, "GATES_FAIL_CLOSED")
        assert "trading-1 could not reach the database" in closed["reason"]
        rb_gates = GatesViaAgent(db, SystemClock(), None, cfg)  # type: ignore[arg-type]
        assert rb_gates.read().model_dump(exclude={"readable", "problem", "pending"}) == (
            SHADOW.model_dump(exclude={"readable", "problem", "pending"})
        )
    finally:
        db.close()
