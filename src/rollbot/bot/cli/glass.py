"""The BREAK_GLASS event a terminal action records beside what it does. Standard library only:
the console script (bot/breakglass.py) writes it in the hold's own transaction before typer,
rich or any command group is imported."""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: the console script's kill imports this before its hold
if TYPE_CHECKING:
    from rollbot.commands.desk.context import Rollbot
    from rollbot.storage.events import Actor


def break_glass(rb: Rollbot, who: Actor, command: str, reason: str | None = None) -> None:
    rb.events.append("BREAK_GLASS", who, reason=reason, data={"command": command})
