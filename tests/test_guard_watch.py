"""The guard asks the kernel (inotify, rollbot/file_watch.py) instead of stat()ing its files
before every order. Whatever way the files change, the next check sees it: edited in place,
renamed over, a directory along the path renamed and replaced, a path that did not exist yet
when the guard started, a process forked after it started."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rollbot import file_watch
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.gates import Gates
from rollbot.config import Settings
from rollbot.storage.events import Actor

ALICE = Actor(id="U0ALICE", source="slack")


def _gates(settings: Settings) -> Gates:
    return Gates(settings.paths.live_environment, settings.paths.shadow_config)


def _code(rb: Rollbot) -> str:
    return rb.killswitch.check_order("paper", "AAPL", "BUY", 1).code


@pytest.fixture
def guarded(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Rollbot:
    """A guard whose gate files and database exist; both watched (checked, not assumed)."""
    monkeypatch.setattr(file_watch, "RETRY_S", 0.0)
    monkeypatch.setattr(file_watch, "WATCH_AFTER", 0)
    _gates(settings).arm(ALICE, "live")
    rb = Rollbot.open(settings)
    assert _code(rb) == "OK"
    assert rb.killswitch.guard.state_cache.moves.watching
    assert rb.killswitch.guard.gate_cache.edits.watching
    return rb


def test_a_gate_file_edited_in_place_is_seen_by_the_next_check(
    guarded: Rollbot, settings: Settings
) -> None:
    live = settings.paths.live_environment
    inode = live.stat().st_ino
    with open(live, "r+", encoding="utf-8") as f:  # a person's editor, same inode
        text = f.read().replace("enable_live_trading = true", "enable_live_trading = false")
        f.seek(0)
        f.write(text)
        f.truncate()
    assert live.stat().st_ino == inode
    assert _code(guarded) == "LIVE_GATES_DISABLED"


def test_gate_files_renamed_over_or_removed_are_seen_by_the_next_check(
    guarded: Rollbot, settings: Settings
) -> None:
    _gates(settings).disable(ALICE, "shadow")  # rollbot's own write: a rename over the file
    assert _code(guarded) == "LIVE_GATES_DISABLED"
    _gates(settings).arm(ALICE, "live again")
    assert _code(guarded) == "OK"
    settings.paths.shadow_config.unlink()  # a gate file missing is live trading off
    assert _code(guarded) == "LIVE_GATES_DISABLED"


def test_the_gates_directory_renamed_and_replaced_is_seen(
    guarded: Rollbot, settings: Settings
) -> None:
    config = settings.paths.live_environment.parent
    config.rename(config.with_name("config-old"))
    config.mkdir()
    for name in ("live_environment.toml", "shadow_config.toml"):
        shutil.copy(config.with_name("config-old") / name, config)
    assert _code(guarded) == "OK"
    text = settings.paths.live_environment.read_text("utf-8")
    settings.paths.live_environment.write_text(text.replace("= true", "= false"), "utf-8")
    assert _code(guarded) == "LIVE_GATES_DISABLED"


def test_a_database_whose_directory_is_renamed_and_replaced_is_refused(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old stat() per check saw a new file at the path; so must the watch, although
    renaming a directory above the file says nothing to a watch on the file itself."""
    monkeypatch.setattr(file_watch, "RETRY_S", 0.0)
    monkeypatch.setattr(file_watch, "WATCH_AFTER", 0)
    deep = tmp_path / "desk" / "state" / "rollbot.db"
    deep.parent.mkdir(parents=True)
    settings = settings.model_copy(
        update={"database": settings.database.model_copy(update={"path": deep})}
    )
    _gates(settings).arm(ALICE, "live")
    Rollbot.open(settings).killswitch.trigger("venue:paper", "runaway", ALICE)
    rb = Rollbot.open(settings, create=False)
    assert _code(rb) == "HALTED"
    (tmp_path / "desk").rename(tmp_path / "desk-last-year")
    fresh = Rollbot.open(settings)  # a new, empty database where the old one was
    fresh.db.close()
    d = rb.killswitch.check_order("paper", "AAPL", "BUY", 1)
    assert (d.allowed, d.code) == (False, "STATE_UNAVAILABLE")


def test_gate_files_made_after_the_guard_started_are_watched_once_they_exist(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_watch, "RETRY_S", 0.0)
    monkeypatch.setattr(file_watch, "WATCH_AFTER", 0)
    rb = Rollbot.open(settings)
    assert _code(rb) == "LIVE_GATES_DISABLED"  # no gate files yet: live trading is off
    _gates(settings).arm(ALICE, "live")
    assert _code(rb) == "OK"
    assert rb.killswitch.guard.gate_cache.edits.watching
    _gates(settings).disable(ALICE, "shadow")
    assert _code(rb) == "LIVE_GATES_DISABLED"


def test_gate_files_reached_through_a_symbolic_link_are_stat_ed_every_time(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch would follow the link's directory, not its target's: not watched at all."""
    monkeypatch.setattr(file_watch, "WATCH_AFTER", 0)
    real = tmp_path / "trading-system"
    real.mkdir()
    link = tmp_path / "linked"
    link.symlink_to(real)
    paths = settings.paths.model_copy(
        update={
            "live_environment": link / "live_environment.toml",
            "shadow_config": link / "shadow_config.toml",
        }
    )
    settings = settings.model_copy(update={"paths": paths})
    _gates(settings).arm(ALICE, "live")
    rb = Rollbot.open(settings)
    assert _code(rb) == "OK"
    assert not rb.killswitch.guard.gate_cache.edits.watching
    text = (real / "live_environment.toml").read_text("utf-8")
    (real / "live_environment.toml").write_text(text.replace("= true", "= false"), "utf-8")
    assert _code(rb) == "LIVE_GATES_DISABLED"


def test_a_short_lived_reader_takes_no_inotify_instance(settings: Settings) -> None:
    """A user has 128 inotify instances in all: a CLI command that asks the guard a few
    times takes none; a guard in front of every order takes one per file set."""
    _gates(settings).arm(ALICE, "live")
    rb = Rollbot.open(settings)
    for _ in range(file_watch.WATCH_AFTER):
        assert _code(rb) == "OK"
    assert not rb.killswitch.guard.gate_cache.edits.watching
    for _ in range(3):
        assert _code(rb) == "OK"
    assert rb.killswitch.guard.gate_cache.edits.watching


def test_a_process_forked_after_the_guard_started_sees_changes_and_so_does_its_parent(
    guarded: Rollbot, settings: Settings
) -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a trading system's worker
        try:
            os.close(read)
            _gates(settings).disable(ALICE, "child")  # the parent's queue is not the child's
            os.write(write, _code(guarded).encode())
        finally:
            os._exit(0)
    os.close(write)
    seen_by_child = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert seen_by_child == "LIVE_GATES_DISABLED"
    assert _code(guarded) == "LIVE_GATES_DISABLED"
