"""Live gates (Live -> Shadow seed, steps 4, 5 and 7): atomic writes, verified like the seed."""

from __future__ import annotations

import os
import pwd
import socket
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.gates import Gates
from rollbot.errors import RollbotError
from rollbot.storage.events import Actor

Run = Callable[..., CompletedProcess[str]]  # the `rollbot` fixture: the CLI in a subprocess
ALICE = Actor(id="U0ALICE", source="slack")
LIVE_ENV = {"enable_live_trading": True, "live_mode_armed": True, "live_dry_run_mode": False}
SHADOW_ENV = {"enable_live_trading": False, "live_mode_armed": False, "live_dry_run_mode": True}


def files(app: Rollbot) -> tuple[dict, dict]:
    live = tomllib.loads(app.settings.paths.live_environment.read_text("utf-8"))
    shadow = tomllib.loads(app.settings.paths.shadow_config.read_text("utf-8"))
    return live, shadow


def test_disable_writes_both_files_and_records_the_change(app: Rollbot) -> None:
    app.gates.arm(ALICE, "go live")
    values = app.gates.disable(ALICE, "rollback to shadow", incident_id=None)
    live, shadow = files(app)
    assert live == {"environment": SHADOW_ENV}
    assert shadow == {"shadow": {"mode": "shadow", "enabled": True}}
    assert not values.live_allowed and values.shadow_active
    event = app.events.list(kinds=["GATES_WRITTEN"])[-1]
    assert event.reason == "rollback to shadow" and event.actor == "U0ALICE"
    assert event.data["before"]["enable_live_trading"] is True
    assert event.data["after"]["enable_live_trading"] is False
    leftovers = [p.name for p in app.settings.paths.live_environment.parent.iterdir()]
    assert sorted(leftovers) == ["live_environment.toml", "shadow_config.toml"]  # no temp files


def test_a_reader_never_sees_a_partial_gates_file(tmp_path: Path) -> None:
    live_path, shadow_path = tmp_path / "g" / "live.toml", tmp_path / "g" / "shadow.toml"
    gates = Gates(live_path, shadow_path)  # no event log: only the files are under test
    gates.disable(ALICE, "start")
    seen: list[dict] = []
    bad: list[str] = []
    writing = threading.Event()
    writing.set()

    def reader() -> None:
        while writing.is_set() or len(seen) + len(bad) < 1000:
            text = live_path.read_text("utf-8")
            try:
                env = tomllib.loads(text)["environment"]
            except (tomllib.TOMLDecodeError, KeyError):
                bad.append(text)
                continue
            if env not in (LIVE_ENV, SHADOW_ENV):
                bad.append(text)
            seen.append(env)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(200):
            (gates.arm if i % 2 == 0 else gates.disable)(ALICE, f"write {i}")
    finally:
        writing.clear()
        thread.join(timeout=30)
    assert bad == []
    assert len(seen) >= 1000
    assert LIVE_ENV in seen and SHADOW_ENV in seen  # the reads did overlap the writes
    assert sorted(p.name for p in live_path.parent.iterdir()) == ["live.toml", "shadow.toml"]


@pytest.mark.parametrize(
    ("live_text", "problem"),
    [
        ("[environment]\nenable_live_trading = 'false'\nlive_mode_armed = false\n"
         "live_dry_run_mode = true\n", "enable_live_trading must be true or false, got 'false'"),
        ("[environment]\nenable_live_trading = false\nlive_dry_run_mode = true\n",
         "live_mode_armed must be true or false, got None"),
        ("enable_live_trading = false\n", "no [environment] table"),
        ("[environment\n", "Expected ']'"),
    ],
)  # fmt: skip
def test_a_malformed_gates_file_reads_as_unreadable_and_live_blocked(
    app: Rollbot, live_text: str, problem: str
) -> None:
    app.gates.arm(ALICE, "live")
    app.settings.paths.live_environment.write_text(live_text, "utf-8")
    values = app.gates.read()
    assert not values.readable and not values.live_allowed and not values.shadow_active
    assert problem in values.problem
    assert str(app.settings.paths.live_environment) in values.problem or "Expected" in problem


def test_a_failed_write_names_the_file_and_leaves_the_old_one(app: Rollbot) -> None:
    app.gates.arm(ALICE, "live")
    shadow = app.settings.paths.shadow_config
    shadow.unlink()
    shadow.mkdir()  # a directory where the file should be: the rename fails
    with pytest.raises(RollbotError, match=rf"cannot write gates file .*{shadow.name}") as caught:
        app.gates.arm(ALICE, "again")
    assert "live trading is" in str(caught.value)
    assert sorted(p.name for p in shadow.parent.iterdir()) == [
        "live_environment.toml",
        "shadow_config.toml",
    ]


def test_gates_verify_prints_each_gate_like_the_seed(app: Rollbot, rollbot: Run) -> None:
    missing = rollbot("gates", "verify")
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "No gates files yet" in missing.stdout and "does not exist" in missing.stdout
    assert "rollbot gates disable --confirm" in missing.stdout  # a fresh install says what to do

    app.gates.disable(ALICE, "shadow")
    blocked = rollbot("gates", "verify")
    assert blocked.returncode == 0, blocked.stdout + blocked.stderr
    for line in (
        "✅ Shadow mode: ENABLED (mode=shadow)",
        "✅ Live trading: DISABLED",
        "✅ Dry-run mode: ENABLED",
        "✅ Live trading BLOCKED\n"
        "   - enable_live_trading = false\n"
        "   - live_mode_armed = false\n"
        "   - live_dry_run_mode = true",
    ):
        assert line in blocked.stdout

    app.gates.arm(ALICE, "live")
    enabled = rollbot("gates", "verify")
    assert enabled.returncode == 1
    assert "❌ Live trading: ENABLED" in enabled.stdout
    assert "❌ enable_live_trading = true" in enabled.stdout
    assert "Live trading BLOCKED" not in enabled.stdout


def test_gates_disable_needs_confirm_and_records_break_glass(app: Rollbot, rollbot: Run) -> None:
    app.gates.arm(ALICE, "live")
    before = len(app.events.list())
    refused = rollbot("gates", "disable")
    assert refused.returncode == 2
    assert "--confirm" in refused.stderr and "nothing was changed" in refused.stderr
    assert app.gates.read().live_allowed
    assert len(app.events.list()) == before

    done = rollbot("gates", "disable", "--confirm", "--reason", "drill")
    assert done.returncode == 0, done.stdout + done.stderr
    assert files(app)[0] == {"environment": SHADOW_ENV}
    kinds = [e.kind for e in app.events.list()[before:]]
    assert kinds == ["BREAK_GLASS", "GATES_WRITTEN"]
    glass = app.events.list(kinds=["BREAK_GLASS"])[0]
    assert glass.source == "cli" and glass.reason == "drill"
    assert glass.data == {
        "command": "gates disable",
        "os_user": pwd.getpwuid(os.getuid()).pw_name,
        "host": socket.gethostname(),
        "uid": os.getuid(),
    }


def test_shadow_verify_checks_the_seed_step_5_list(app: Rollbot, rollbot: Run) -> None:
    app.gates.disable(ALICE, "shadow")
    unheld = rollbot("shadow", "verify")
    assert unheld.returncode == 1
    assert "❌ Kill switch: NOT held" in unheld.stdout

    app.killswitch.trigger("global", "rollback", ALICE)
    held = rollbot("shadow", "verify")
    assert held.returncode == 0, held.stdout + held.stderr
    assert held.stdout.splitlines() == [
        "✅ Shadow mode: ENABLED",
        "✅ Live trading: DISABLED",
        "✅ Dry-run mode: ENABLED",
        "✅ Kill switch: ACTIVE (can be recovered later) — global state HALTED",
    ]
