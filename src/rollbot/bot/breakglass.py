"""The `rollbot` console script: `rollbot kill trigger` stores its hold before the rest of the
terminal face (typer, rich, pydantic-settings, every other command) is even imported; then the
cancels and the report run through the usual CLI code. Anything else, and any kill whose
arguments this does not plainly understand, goes to the full CLI unchanged.

Break-glass start-up is the time from exec to the hold stored, with the process's imports in
it; the full CLI imports about twice what a kill needs.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rollbot.commands.context import Rollbot
    from rollbot.storage.events import Actor

# --by is left to the full CLI: whatever it checks about who acts is checked there alone
OPTIONS = {"--reason": "reason", "-r": "reason", "--scope": "scope"}


def kill_args(argv: list[str]) -> dict[str, str] | None:
    """{config?, reason, scope?} for `[--config X] kill trigger OPTIONS`, else None."""
    out: dict[str, str] = {}
    rest = list(argv)
    if rest[:1] and rest[0] in ("--config", "-c") and len(rest) > 1:
        out["config"] = rest[1]
        rest = rest[2:]
    elif rest[:1] and rest[0].startswith("--config="):
        out["config"] = rest[0].partition("=")[2]
        rest = rest[1:]
    if rest[:2] != ["kill", "trigger"]:
        return None
    rest = rest[2:]
    while rest:
        word = rest.pop(0)
        name, eq, value = word.partition("=")
        if name not in OPTIONS or (not eq and not rest) or OPTIONS[name] in out:
            return None  # help, a typo, a repeat: the full CLI says what is wrong
        out[OPTIONS[name]] = value if eq else rest.pop(0)
    return out if out.get("reason", "").strip() else None


def break_glass(rb: Rollbot, who: Actor, command: str, reason: str | None = None) -> None:
    rb.events.append("BREAK_GLASS", who, reason=reason, data={"command": command})


def main() -> None:
    args = kill_args(sys.argv[1:])
    if args is None:
        from rollbot.bot.cli import main as cli

        cli()
        return
    from rollbot.commands.context import Rollbot
    from rollbot.commands.held_incident import HOLD_WAIT_MS, store_held_incident
    from rollbot.config import load_settings
    from rollbot.errors import RollbotError
    from rollbot.storage.events import Actor

    rb: Rollbot | None = None
    try:
        rb = Rollbot.open(load_settings(args.get("config")))
        who = Actor.terminal(None, rb.settings.identities)
        reason = args["reason"]
        with rb.db.patience(HOLD_WAIT_MS):
            incident, new = store_held_incident(
                rb,
                who,
                kind="kill",
                reason=reason,
                scope_text=args.get("scope"),
                also=lambda: break_glass(rb, who, "kill trigger", reason),
            )
    except RollbotError:  # DatabaseBusy included
        # nothing stored: the full CLI says why, or (a lock) cancels first and retries the hold
        if rb is not None:
            rb.db.close()
        from rollbot.bot.cli import main as cli

        cli()
        return
    from rollbot.bot.cli import finish_kill
    from rollbot.commands.rollback import Engine

    finish_kill(rb, Engine(rb, who), incident, new)
