"""Issue 18.3: the guard re-reads nothing that did not change, and sees every change at once:
a hold stored by another process, a hold cleared on its own connection, the gates rewritten."""

from __future__ import annotations

from rollbot.commands.context import Rollbot
from rollbot.commands.gates import Gates
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
