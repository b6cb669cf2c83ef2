"""The `rollbot` console script: `rollbot kill trigger` stores its hold before the rest of the
terminal face (typer, rich, pydantic-settings, every other command) is even imported; then the
cancels and the report run through the usual CLI code. Anything else, and any kill whose
arguments this does not plainly understand, goes to the full CLI unchanged.

Break-glass start-up is the time from exec to the hold stored, with the process's imports in
it; the full CLI imports about twice what a kill needs, and pydantic alone (the config and the
storage models) more than the rest of the kill. So the hold is written by
commands/killswitch/fast_hold.py with the standard library; a config or database it does not
plainly understand takes the hold through the models as before, and a write lock held
elsewhere goes to the full CLI, which cancels first and retries the hold.
"""

from __future__ import annotations

import sys

# --by is left to the full CLI: whatever it checks about who acts is checked there alone
OPTIONS = {"--reason": "reason", "-r": "reason", "--scope": "scope"}
FLAGS = {"--reducing": ("state", "REDUCING")}


def kill_args(argv: list[str]) -> dict[str, str] | None:
    """{config?, reason, scope?, state?} for `[--config X] kill trigger OPTIONS`, else None."""
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
        if word in FLAGS:
            key, flag_value = FLAGS[word]
            if key in out:
                return None  # a repeat: the full CLI says what is wrong
            out[key] = flag_value
            continue
        name, eq, value = word.partition("=")
        if name not in OPTIONS or (not eq and not rest) or OPTIONS[name] in out:
            return None  # help, a typo, a repeat: the full CLI says what is wrong
        out[OPTIONS[name]] = value if eq else rest.pop(0)
    return out if out.get("reason", "").strip() else None


def main() -> None:
    args = kill_args(sys.argv[1:])
    if args is None:
        _full_cli()
        return
    from rollbot.commands.killswitch.fast_hold import (
        HELD_ELSEWHERE,
        read_kill_config,
        store_kill_hold,
    )
    from rollbot.errors import BadInput

    config = read_kill_config(args.get("config"))
    try:
        stored = (
            store_kill_hold(config, args["reason"], args.get("scope"), args.get("state", "HALTED"))
            if config
            else None
        )
    except BadInput:  # a bad scope, before anything was opened: the full CLI says why, exit 2
        _full_cli()
        return
    if stored == HELD_ELSEWHERE:  # the full CLI cancels first and retries the hold
        _full_cli()
        return
    if stored is None:
        _hold_by_full_path(args)
        return
    _finish_stored(args, stored)


def _full_cli() -> None:
    from rollbot.bot.cli.app import main as cli

    cli()


def _finish_stored(args: dict[str, str], incident_id: str) -> None:
    """The hold is stored: the cancels and the report, through the usual CLI code."""
    from rollbot.bot.cli.shared import finish_kill
    from rollbot.commands.desk.context import Rollbot
    from rollbot.commands.rollback.engine import Engine
    from rollbot.config import load_settings
    from rollbot.errors import RollbotError
    from rollbot.storage.events import Actor

    try:
        rb = Rollbot.open(load_settings(args.get("config")))
    except RollbotError as exc:  # a config error in what the hold did not read
        state = args.get("state", "HALTED")
        # the full CLI would say "nothing changed": the hold is stored, so say what was done
        print(
            f"error: {exc}\nThe {state} hold of {incident_id} is stored: trading stays"
            f" {'reducing-only' if state == 'REDUCING' else 'halted'}. No cancels were sent:"
            " fix the config, then run the kill again to cancel.",
            file=sys.stderr,
        )
        sys.exit(1)
    who = Actor.terminal(None, rb.settings.identities)
    finish_kill(rb, Engine(rb, who), rb.incidents.get(incident_id), True)


def _hold_by_full_path(args: dict[str, str]) -> None:
    """A config or database the fast hold leaves alone (new, older schema, unusual): the hold
    through the models, then the cancels and the report."""
    from rollbot.bot.cli.glass import break_glass
    from rollbot.commands.desk.context import Rollbot
    from rollbot.commands.killswitch.trading_state import TradingState
    from rollbot.commands.rollback.held_incident import HOLD_WAIT_MS, store_held_incident
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
                hold_state=TradingState(args.get("state", "HALTED")),
            )
    except RollbotError:  # DatabaseBusy included
        # nothing stored: the full CLI says why, or (a lock) cancels first and retries the hold
        if rb is not None:
            rb.db.close()
        _full_cli()
        return
    from rollbot.bot.cli.shared import finish_kill
    from rollbot.commands.rollback.engine import Engine

    finish_kill(rb, Engine(rb, who), incident, new)
