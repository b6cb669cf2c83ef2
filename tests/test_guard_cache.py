"""Issue 18.3: the guard re-reads nothing that did not change, and sees every change at once:
a hold stored by another process, a hold cleared on its own connection, the gates rewritten."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.gates import Gates
from rollbot.config import Settings
from rollbot.storage.events import Actor

ALICE = Actor(id="U0ALICE", source="slack")


def test_a_change_by_another_connection_or_this_one_is_seen_by_the_next_check(
    settings: Settings,
) -> None:
    guard_side = Rollbot.open(settings)
    Gates(settings.paths.live_environment, settings.paths.shadow_config).arm(ALICE, "live")
    other = Rollbot.open(settings)  # another process's connection
    check = guard_side.killswitch.check_order
    assert check("paper", "AAPL", "BUY", 1).code == "OK"
    assert check("paper", "AAPL", "BUY", 1).code == "OK"  # answered from the cache

    other.killswitch.trigger("venue:paper", "halt", ALICE)
    assert check("paper", "AAPL", "BUY", 1).code == "HALTED"

    guard_side.killswitch.clear("venue:paper", "ok", ALICE)  # this connection's own write
    assert check("paper", "AAPL", "BUY", 1).code == "OK"

    other.gates.disable(ALICE, "shadow")
    assert check("paper", "AAPL", "BUY", 1).code == "LIVE_GATES_DISABLED"
    other.gates.arm(ALICE, "live again")
    assert check("paper", "AAPL", "BUY", 1).code == "OK"
    settings.paths.live_environment.unlink()  # a missing gates file is live trading off
    assert check("paper", "AAPL", "BUY", 1).code == "LIVE_GATES_DISABLED"
    guard_side.db.close()
    other.db.close()


def test_holds_another_process_stores_are_seen_at_once_across_wal_restarts(
    settings: Settings, rollbot: Any
) -> None:
    """The guard knows nobody committed by the WAL-index header alone: a hold stored by another
    process must show at the next check, also after the WAL was checkpointed and restarted."""
    guard_side = Rollbot.open(settings)
    Gates(settings.paths.live_environment, settings.paths.shadow_config).arm(ALICE, "live")
    other = Rollbot.open(settings)
    check = guard_side.killswitch.check_order
    for _ in range(2):
        assert check("paper", "AAPL", "BUY", 1).code == "OK"
        assert check("paper", "AAPL", "BUY", 1).code == "OK"  # answered from the cache
        other.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL starts over
        res = rollbot("kill", "trigger", "--reason", "x", "--scope", "venue:paper")
        assert res.returncode == 0, res.stderr
        assert check("paper", "AAPL", "BUY", 1).code == "HALTED"
        other.killswitch.clear("venue:paper", "ok", ALICE)
    guard_side.db.close()
    other.db.close()


def test_a_guard_opened_through_a_symlinked_database_path_sees_every_change(
    settings: Settings, tmp_path: Path
) -> None:
    """SQLite keeps the WAL index beside the real file; the guard must watch that one, not a
    stale `-shm` left beside the link's name."""
    other = Rollbot.open(settings)  # the database, created where the config says
    link = tmp_path / "link" / "rollbot.db"
    link.parent.mkdir()
    link.symlink_to(settings.database.path)
    shutil.copy(f"{settings.database.path}-shm", f"{link}-shm")
    via_link = settings.model_copy(
        update={"database": settings.database.model_copy(update={"path": link})}
    )
    guard_side = Rollbot.open(via_link, create=False)
    Gates(settings.paths.live_environment, settings.paths.shadow_config).arm(ALICE, "live")
    check = guard_side.killswitch.check_order
    assert check("paper", "AAPL", "BUY", 1).code == "OK"
    assert check("paper", "AAPL", "BUY", 1).code == "OK"
    other.killswitch.trigger("global", "halt", ALICE)
    assert check("paper", "AAPL", "BUY", 1).code == "HALTED"
    other.killswitch.clear("global", "ok", ALICE)
    assert check("paper", "AAPL", "BUY", 1).code == "OK"
    guard_side.db.close()
    other.db.close()
