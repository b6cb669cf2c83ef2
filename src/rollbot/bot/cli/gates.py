"""`rollbot gates` (disable the live trading gates, verify them, and the agent that applies
them on the trading host) and `rollbot shadow verify` (Live -> Shadow seed, step 5)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from rollbot.bot.cli.glass import break_glass
from rollbot.bot.cli.shared import ByOpt, Confirm, actor, guarded, out, settings
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.gates import gate_lines
from rollbot.errors import BadInput

gates_app = typer.Typer(no_args_is_help=True, help="Live trading gates.")
shadow_app = typer.Typer(no_args_is_help=True, help="Shadow/paper mode.")


@gates_app.command("disable")
def gates_disable(
    confirm: Confirm = False,
    reason: Annotated[str, typer.Option("--reason", "-r")] = "gates disabled from the terminal",
    by: ByOpt = None,
) -> None:
    """enable_live_trading=false, live_mode_armed=false, live_dry_run_mode=true; shadow on."""

    def go() -> int:
        if not confirm:
            raise BadInput("gates disable needs --confirm (nothing was changed)")
        rb = Rollbot.open(settings())
        who = actor(rb, by)
        break_glass(rb, who, "gates disable", reason)
        values = asyncio.run(rb.gates.settle(rb.gates.disable(who, reason)))
        return _print_gates(values)

    raise typer.Exit(guarded(go))


def _print_gates(values: Any) -> int:
    """Each gate, then the seed's verify_live_gates block. Exit 0 only when live is blocked (an
    unreadable file cannot be verified: 1)."""
    for ok, line in gate_lines(values):
        out.print(("✅ " if ok else "❌ ") + line)
    if not values.readable:
        return 1
    if values.live_allowed:
        out.print("⚠️  Live trading ENABLED: live orders can be submitted")
        return 1
    out.print("✅ Live trading BLOCKED")  # the safe state: green, not red
    for key in ("enable_live_trading", "live_mode_armed", "live_dry_run_mode"):
        out.print(f"   - {key} = {'true' if getattr(values, key) else 'false'}")
    return 0


@gates_app.command("agent")
def gates_agent() -> None:
    """Run on the trading system's host: apply the gate changes stored in the database to this
    host's gates files ([paths]), and report them back ([gates] agent, README "Two hosts")."""

    def go() -> int:
        import signal

        from rollbot.clock import SystemClock
        from rollbot.commands.killswitch.gates_agent import GatesAgent
        from rollbot.storage.backends import open_database

        cfg = settings()
        agent = GatesAgent(
            lambda: open_database(cfg.database),  # [database] url: the hosts' PostgreSQL
            (cfg.paths.live_environment, cfg.paths.shadow_config),
            SystemClock(),
            cfg.gates,
            cfg.host.id,
        )

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            first = await asyncio.to_thread(agent.poll)
            out.print(
                f"rollbot gates agent ready on {cfg.host.id}: {first};"
                f" {cfg.paths.live_environment} and {cfg.paths.shadow_config}"
            )
            await agent.run(stop)

        asyncio.run(main())
        return 0

    raise typer.Exit(guarded(go))


@gates_app.command("verify")
def gates_verify() -> None:
    """Each gate as the seed's verify_live_gates expects; exit 1 unless live trading is blocked."""

    def go() -> int:
        rb = Rollbot.open(settings())
        out.print(rb.gates.where())
        return _print_gates(rb.gates.read())

    raise typer.Exit(guarded(go))


@shadow_app.command("verify")
def shadow_verify() -> None:
    """Shadow on, live off, dry-run on, kill switch held (Live -> Shadow seed, step 5)."""

    def go() -> int:
        rb = Rollbot.open(settings(), create=False)
        g = rb.gates.read()
        held = rb.killswitch.state_of(["global"])
        lines = [
            (g.shadow_active, f"Shadow mode: {'ENABLED' if g.shadow_active else 'DISABLED'}"),
            (
                not g.live_allowed,
                f"Live trading: {'DISABLED' if not g.live_allowed else 'ENABLED'}",
            ),
            (
                g.live_dry_run_mode,
                f"Dry-run mode: {'ENABLED' if g.live_dry_run_mode else 'DISABLED'}",
            ),
            (
                held.value != "ACTIVE",
                "Kill switch: "
                + ("ACTIVE (can be recovered later)" if held.value != "ACTIVE" else "NOT held")
                + f" — global state {held.value}",
            ),
        ]
        for ok, line in lines:
            out.print(("✅ " if ok else "❌ ") + line)
        return 0 if all(ok for ok, _ in lines) else 1

    raise typer.Exit(guarded(go))
