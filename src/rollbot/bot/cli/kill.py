"""`rollbot kill`: hold the kill switch (stored first, then the cancels), show the state of
every scope and its holds, and ask to clear them (a second person approves)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from rollbot.bot.cli.glass import break_glass
from rollbot.bot.cli.shared import (
    ByOpt,
    JsonOpt,
    Reason,
    actor,
    folding_table,
    guarded,
    out,
    request_at_terminal,
    require,
    run_async,
    run_kill,
    settings,
)
from rollbot.commands.desk.context import Rollbot

kill_app = typer.Typer(no_args_is_help=True, help="Hold, inspect and clear the kill switch.")

HoldOpt = Annotated[
    list[int] | None,
    typer.Option("--hold", help="Only these holds (#id in `kill status`); default: all on scope."),
]


@kill_app.command("trigger")
def kill_trigger(
    reason: Reason,
    scope: Annotated[
        str, typer.Option(help="global, a venue, venue:V, account:V/ID, strategy:S")
    ] = "global",
    by: ByOpt = None,
    reducing: Annotated[
        bool,
        typer.Option(
            "--reducing",
            help="Hold REDUCING instead of HALTED: only orders that shrink a position pass"
            " (exits, never entries or flips). Cleared like any hold.",
        ),
    ] = False,
) -> None:
    """Hold HALTED (or REDUCING; stored first), cancel every open order, disable the live
    gates."""

    async def go(rb: Rollbot) -> int:
        from rollbot.commands.killswitch.trading_state import TradingState
        from rollbot.commands.rollback.engine import Engine

        who = actor(rb, by)
        require(reason, "--reason")
        engine = Engine(rb, who)
        engine.on_note = lambda text: out.print(f"[yellow]{escape(text)}[/]")
        # BREAK_GLASS goes in the hold's own transaction: no write before it may wait on a lock
        incident, new = await engine.open_held(
            kind="kill",
            reason=reason,
            scope_text=scope,
            also=lambda: break_glass(rb, who, "kill trigger", reason),
            hold_state=TradingState.REDUCING if reducing else TradingState.HALTED,
        )
        return await run_kill(engine, incident, new)

    raise typer.Exit(run_async(go))


@kill_app.command("status")
def kill_status(as_json: JsonOpt = False) -> None:
    """The trading state of every scope and the holds behind it."""

    def go() -> None:
        rb = Rollbot.open(settings(), create=False)  # a reader never creates the database
        rows = rb.killswitch.status(rb.venue_names)
        if as_json:
            out.print_json(json.dumps([r.model_dump(mode="json") for r in rows]))
            return
        table = folding_table("Scope", "State", "Holds (#id source · by · since · reason)")
        for r in rows:
            holds = (
                "\n".join(
                    f"#{h.id} {h.source} · {h.actor} · {h.created_at:%Y-%m-%d %H:%M:%S}"
                    f" · {h.reason}"
                    for h in r.holds
                )
                or "-"
            )
            color = {"ACTIVE": "green", "REDUCING": "yellow", "HALTED": "red"}[r.state.value]
            table.add_row(r.scope, f"[{color}]{r.state.value}[/]", holds)
        out.print(table)

    guarded(go)


@kill_app.command("clear")
def kill_clear(
    reason: Reason,
    scope: Annotated[str, typer.Option(help="The scope whose holds to clear.")] = "global",
    source: Annotated[str | None, typer.Option(help="Only the hold from this source.")] = None,
    hold: HoldOpt = None,
    by: ByOpt = None,
) -> None:
    """Ask to clear the holds on a scope; a second person approves (`rollbot approve ID`)."""

    async def go(rb: Rollbot) -> int:
        params = {"scope": scope, "source": source, "hold_ids": hold or None}
        return await request_at_terminal(
            rb, actor(rb, by), "clear_hold", params, require(reason, "--reason")
        )

    raise typer.Exit(run_async(go))
