"""The gates files are the trading system's own: rollbot changes only the gate keys in them and
keeps every other byte (issue 14, item 9). Through the real CLI on a real SQLite file and the
paper venue, and a reader racing the writes."""

from __future__ import annotations

import stat
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.gates import Gates
from rollbot.storage.events import Actor

Run = Callable[..., CompletedProcess[str]]
ALICE = Actor(id="U0ALICE", source="slack")
SRC = Path(__file__).resolve().parents[1] / "src" / "rollbot"

DESK_LIVE = """\
# live_environment.toml: owned by the desk; rollbot flips the three gates only
[environment]
enable_live_trading = true   # set by the desk at 09:30
live_mode_armed = true
live_dry_run_mode = false
max_position_usd = 250_000   # desk limit, reviewed weekly
broker_account = "U1234567"

[risk]
# per-strategy limits
max_drawdown = 0.08
symbols = [ "AAPL", "MSFT" ]
"""
DESK_SHADOW = """\
# shadow_config.toml
[shadow]
mode = 'shadow'   # literal string, kept as written
enabled = false  # live today
log_dir = "/var/log/shadow"
[shadow.replay]
speed = 1.0
"""


def disabled(text: str) -> str:
    return (
        text.replace("enable_live_trading = true ", "enable_live_trading = false ")
        .replace("live_mode_armed = true\n", "live_mode_armed = false\n")
        .replace("live_dry_run_mode = false\n", "live_dry_run_mode = true\n")
        .replace("enabled = false  # live today", "enabled = true  # live today")
    )


def desk_files(app: Rollbot) -> tuple[Path, Path]:
    live, shadow = app.settings.paths.live_environment, app.settings.paths.shadow_config
    live.parent.mkdir(parents=True, exist_ok=True)
    live.write_text(DESK_LIVE, "utf-8")
    shadow.write_text(DESK_SHADOW, "utf-8")
    live.chmod(0o644)  # the trading system runs as another user and must still read it
    return live, shadow


def test_gates_disable_and_a_kill_change_only_the_gate_keys(app: Rollbot, rollbot: Run) -> None:
    live, shadow = desk_files(app)
    assert app.gates.read().live_allowed

    done = rollbot("gates", "disable", "--confirm", "--reason", "end of day")

    assert done.returncode == 0, done.stdout + done.stderr
    assert live.read_text("utf-8") == disabled(DESK_LIVE)  # byte for byte, comments included
    assert shadow.read_text("utf-8") == disabled(DESK_SHADOW)
    assert stat.S_IMODE(live.stat().st_mode) == 0o644

    # re-armed (the approval path), then a kill: the same one writer, the same bytes
    app.gates.arm(ALICE, "resume")
    assert live.read_text("utf-8") == DESK_LIVE
    assert shadow.read_text("utf-8") == DESK_SHADOW
    killed = rollbot("kill", "trigger", "--reason", "runaway")
    assert killed.returncode == 0, killed.stdout + killed.stderr
    assert live.read_text("utf-8") == disabled(DESK_LIVE)
    assert shadow.read_text("utf-8") == disabled(DESK_SHADOW)
    assert sorted(p.name for p in live.parent.iterdir()) == [live.name, shadow.name]


def test_a_gates_file_that_is_not_toml_is_still_closed_and_kept_aside(
    app: Rollbot, rollbot: Run
) -> None:
    live, _ = desk_files(app)
    broken = DESK_LIVE + "[environment\n"
    live.write_text(broken, "utf-8")

    done = rollbot("gates", "disable", "--confirm")

    assert done.returncode == 0, done.stdout + done.stderr
    assert not app.gates.read().live_allowed and app.gates.read().readable
    kept = live.with_name(live.name + ".rollbot-unparsable")
    assert kept.read_text("utf-8") == broken
    (event,) = app.events.list(kinds=["GATES_WRITTEN"])
    assert event.data["unparsable_kept_as"] == [str(kept)]


def test_a_reader_never_sees_a_partial_desk_file(tmp_path: Path) -> None:
    live, shadow = tmp_path / "live.toml", tmp_path / "shadow.toml"
    live.write_text(DESK_LIVE, "utf-8")
    shadow.write_text(DESK_SHADOW, "utf-8")
    gates = Gates(live, shadow)
    bad: list[str] = []
    reads = 0
    writing = threading.Event()
    writing.set()

    def reader() -> None:
        nonlocal reads
        while writing.is_set() or reads < 500:
            text = live.read_text("utf-8")
            reads += 1
            try:
                doc = tomllib.loads(text)
                ok = doc["environment"]["max_position_usd"] == 250_000 and "risk" in doc
            except (tomllib.TOMLDecodeError, KeyError):
                ok = False
            if not ok or text not in (DESK_LIVE, disabled(DESK_LIVE)):
                bad.append(text)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(100):
            (gates.disable if i % 2 == 0 else gates.arm)(ALICE, f"write {i}")
    finally:
        writing.clear()
        thread.join(timeout=30)
    assert bad == []
    assert reads >= 500


def test_only_the_gates_writer_writes_the_gates_files() -> None:
    # every path (gates disable/enable, kill, rollback, resume, the drill's sandbox) calls
    # Gates.arm/disable/write; nothing else may write the files whole
    writers = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "atomic_write(" in path.read_text("utf-8")
    )
    assert writers == ["commands/killswitch/gates.py"]
