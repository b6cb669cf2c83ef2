"""The terminal face (break-glass): typer commands that call commands/ and print with rich.

Exit codes: 0 done; 1 refused or only partly done (what remains is printed); 2 bad input
(nothing changed); 3 request filed, waiting for a second person to approve it (nothing ran yet).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rollbot.bot.breakglass import break_glass
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.gates import gate_lines
from rollbot.commands.rollback.engine import Outcome, Step, StepReport, StepStatus
from rollbot.config import Settings, load_settings
from rollbot.errors import BadInput, RollbotError, StateUnavailable
from rollbot.storage.events import Actor, IdentityRefused

if TYPE_CHECKING:
    from rollbot.commands.rollback.engine import Engine
    from rollbot.storage.incidents import Incident

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
kill_app = typer.Typer(no_args_is_help=True, help="Hold, inspect and clear the kill switch.")
gates_app = typer.Typer(no_args_is_help=True, help="Live trading gates.")
shadow_app = typer.Typer(no_args_is_help=True, help="Shadow/paper mode.")
paper_app = typer.Typer(no_args_is_help=True, help="The embedded paper venue.")
guard_app = typer.Typer(no_args_is_help=True, help="The pre-trade guard.")
app.add_typer(kill_app, name="kill")
app.add_typer(gates_app, name="gates")
app.add_typer(shadow_app, name="shadow")
app.add_typer(paper_app, name="paper")
app.add_typer(guard_app, name="guard")

# soft wrap: a message (a path, a command to copy) is never broken mid-word; tables still fit
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class _State:
    config: Path | None = None


state = _State()

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="rollbot.toml (default: $ROLLBOT_CONFIG or ./rollbot.toml)"
    ),
]
Reason = Annotated[str, typer.Option("--reason", "-r", help="Why (recorded in the event log).")]
Confirm = Annotated[bool, typer.Option("--confirm", help="Required: this sends orders.")]
VenueOpt = Annotated[str | None, typer.Option("--venue", "-v", help="One venue (default: all).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DRILL_LATENCY_MS = 25.0  # a rehearsal on an instant venue would time nothing a desk meets
ByOpt = Annotated[
    str | None,
    typer.Option("--by", help="Only your own identity: who acts is your OS user, mapped."),
]
HoldOpt = Annotated[
    list[int] | None,
    typer.Option("--hold", help="Only these holds (#id in `kill status`); default: all on scope."),
]


@app.callback()
def _main(config: ConfigOpt = None) -> None:
    """rollbot: stop live trading and roll back to shadow/paper mode."""
    state.config = config


def settings() -> Settings:
    return load_settings(state.config)


def guarded(fn: Callable[[], T]) -> T:
    """Domain errors become a sentence and an exit code, never a traceback."""
    try:
        return fn()
    except RollbotError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")  # "[[positions]]" is not markup
        raise typer.Exit(exc.exit_code) from None


def run_async(
    factory: Callable[[Rollbot], Coroutine[Any, Any, T]], cfg: Settings | None = None
) -> T:
    def go() -> T:
        rb = Rollbot.open(cfg or settings())

        async def main() -> T:
            try:
                return await factory(rb)
            finally:
                await rb.aclose()

        return asyncio.run(main())

    return guarded(go)


def actor(rb: Rollbot, by: str | None = None) -> Actor:
    """The person at this terminal (real uid, mapped); a --by naming anyone else is refused
    (exit 2) and the attempt is on record."""
    try:
        return Actor.terminal(by, rb.settings.identities)
    except IdentityRefused as exc:
        rb.events.append("IDENTITY_REFUSED", exc.actor, data={"claimed": exc.claimed})
        raise


def folding_table(*columns: str, **kw: Any) -> Table:
    """A table whose cells wrap at the output's width (80 columns when piped): never cut."""
    table = Table(**kw)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def require(value: str, what: str) -> str:
    if not value or not value.strip():
        raise BadInput(f"{what} must not be empty")
    return value.strip()


# -- printing -----------------------------------------------------------------------------------
STATUS_STYLE = {"SUCCESS": "green", "PARTIAL": "yellow", "FAILED": "red", "SKIPPED": "dim"}


def print_step(r: StepReport) -> None:
    style = STATUS_STYLE[r.status.value]
    target = "on target" if r.on_target else "OVER TARGET"
    out.print(
        f"[{style}]■ Step {r.step} {r.name}: {r.status.value}[/] in {r.duration_seconds:.2f} s "
        f"(elapsed {r.elapsed_seconds:.2f} s / seed {r.cumulative_target_seconds:.0f} s, {target})"
    )
    for action in r.actions:
        out.print(f"    {action}")


def print_outcome(o: Outcome) -> int:
    style = STATUS_STYLE[o.final_status.value]
    out.print(f"[bold {style}]{o.incident.id} {o.incident.kind}: {o.final_status.value}[/]")
    if o.residual:
        out.print("[yellow]Still open:[/]")
        for venue, syms in o.residual.items():
            for sym, qty in syms.items():
                out.print(f"    {venue} {sym} {qty}")
    if o.open_orders:
        out.print(f"[yellow]Open orders remain:[/] {o.open_orders}")
    if o.unreachable:
        out.print(f"[red]Unverified (unreachable):[/] {', '.join(o.unreachable)}")
    return 0 if o.final_status is StepStatus.SUCCESS else 1


def on_start(step: Step) -> None:
    out.print(
        f"[dim]▶ Step {step.number} {step.name}"
        f" (seed target ≤ {step.cumulative_target_seconds:.0f} s)…[/]"
    )


# -- kill switch -------------------------------------------------------------------------------
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


async def run_kill(engine: Engine, incident: Incident, new: bool) -> int:
    """Steps 1-2 once the hold is stored. An error now exits 1, never 2: the hold changed
    something (README: 2 only when nothing changed)."""
    from rollbot.commands.rollback.engine import KILL_STEPS

    engine.on_step = print_step
    state = engine.held_state(incident).value
    try:
        return print_outcome(await engine.run(incident, KILL_STEPS, new=new))
    except RollbotError as exc:
        err.print(
            f"[bold red]error:[/] {escape(str(exc))} — the {state} hold on {incident.scope}"
            f" is stored ({incident.id})"
        )
        return 1


def finish_kill(rb: Rollbot, engine: Engine, incident: Incident, new: bool) -> NoReturn:
    """The console script's kill (bot/breakglass.py) after it stored the hold by itself."""

    async def go() -> int:
        try:
            return await run_kill(engine, incident, new)
        finally:
            await rb.aclose()

    sys.exit(asyncio.run(go()))


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
        from rollbot.bot.cli_approvals import request_at_terminal

        params = {"scope": scope, "source": source, "hold_ids": hold or None}
        return await request_at_terminal(
            rb, actor(rb, by), "clear_hold", params, require(reason, "--reason")
        )

    raise typer.Exit(run_async(go))


# -- positions, cancels, flatten ----------------------------------------------------------------
@app.command()
def positions(venue: VenueOpt = None, as_json: JsonOpt = False) -> None:
    """Positions, open orders, exposure and PnL per venue."""

    async def go(rb: Rollbot) -> int:
        from rollbot.commands.rollback.positions import coverage_line, read_books

        books = await read_books(rb.select(venue))
        if as_json:
            data = [
                b.model_dump(mode="json")
                | {"exposure": str(b.exposure), "unrealized_pnl": str(b.unrealized_pnl)}
                for b in books
            ]
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
        else:
            for b in books:
                if b.error:
                    out.print(f"[red]{b.venue}: unreachable — {b.error}[/]")
                    continue
                nav = f"NAV {b.account.nav:,.2f} {b.account.currency}" if b.account else ""
                table = folding_table(
                    title=f"{b.venue} — {nav} — exposure {b.exposure:,.2f} — "
                    f"unrealized {b.unrealized_pnl:,.2f}"
                )
                for col in ("Symbol", "Quantity", "Avg", "Mark", "Unrealized"):
                    table.add_column(
                        col, justify="right" if col != "Symbol" else "left", overflow="fold"
                    )
                for p in b.positions:
                    table.add_row(
                        p.symbol,
                        f"{p.quantity}",
                        f"{p.avg_price}",
                        f"{p.market_price}",
                        f"{p.unrealized_pnl:,.2f}",
                    )
                out.print(table if b.positions else f"{b.venue}: no positions — {nav}")
                out.print(f"{b.venue}: {len(b.orders)} open orders")
                if coverage_line(b):
                    out.print(f"{b.venue}: {coverage_line(b)}", markup=False)
                for o in b.orders:
                    px = o.limit_price or o.stop_price or ""
                    out.print(
                        f"    {o.order_id} {o.side.value} {o.remaining} {o.symbol}"
                        f" {o.type.value} {px}"
                    )
        return 1 if any(b.error or b.not_checked for b in books) else 0

    raise typer.Exit(run_async(go))


@app.command("cancel-all")
def cancel_all(venue: VenueOpt = None, by: ByOpt = None) -> None:
    """Cancel every open order (stops included) and say what remains."""

    async def go(rb: Rollbot) -> int:
        who = actor(rb, by)
        targets = rb.select(venue)
        break_glass(rb, who, "cancel-all")
        code = 0
        results = await asyncio.gather(
            *(v.cancel_all() for v in targets.values()), return_exceptions=True
        )
        for name, res in zip(targets, results, strict=True):
            if isinstance(res, BaseException):
                out.print(f"[red]{name}: cancel failed — {res}[/]")
                code = 1
                continue
            rb.events.append(
                "ORDERS_CANCELLED",
                who,
                scope=f"venue:{name}",
                data={
                    "requested": res.requested,
                    "cancelled": res.cancelled,
                    "remaining": [o.order_id for o in res.remaining],
                },
            )
            out.print(
                f"{name}: {len(res.cancelled)} of {res.requested} cancelled; "
                f"{len(res.remaining)} remain"
            )
            for o in res.remaining:
                out.print(
                    f"    still open: {o.order_id} {o.side.value} {o.remaining} {o.symbol}"
                    f" {o.type.value}"
                )
                code = 1
        return code

    raise typer.Exit(run_async(go))


@app.command()
def flatten(
    venue: VenueOpt = None,
    symbol: Annotated[
        list[str] | None, typer.Option("--symbol", "-s", help="Only these symbols.")
    ] = None,
    confirm: Confirm = False,
    reason: Annotated[str, typer.Option("--reason", "-r")] = "flatten from the terminal",
    by: ByOpt = None,
) -> None:
    """Show the flatten plan; with --confirm, ask a second person to approve it."""

    async def go(rb: Rollbot) -> int:
        from rollbot.bot.cli_approvals import request_at_terminal
        from rollbot.commands.rollback.flatten import plan_venue
        from rollbot.commands.rollback.positions import read_books

        who = actor(rb, by)
        books = await read_books(rb.select(venue))
        wanted = set(symbol or [])
        held = {p.symbol for b in books for p in b.positions}
        missing = sorted(wanted - held)
        if missing:
            raise BadInput(
                f"unknown symbol(s) {', '.join(missing)}: no position held "
                f"(held: {', '.join(sorted(held)) or 'none'})"
            )
        plans = [plan_venue(b, rb.settings.flatten, wanted or None) for b in books]
        out.print("[bold]Flatten plan[/] (every order that would be sent):")
        for p in plans:
            if p.error:
                out.print(f"  [red]{p.venue}: unreachable — {p.error}[/]")
            for o in p.orders:
                out.print(f"  {o.describe()}")
            if not p.orders and not p.error:
                out.print(f"  {p.venue}: nothing to close")
        if not confirm:
            err.print("nothing sent: add --confirm to ask a second person to approve these orders")
            return 2
        params = {"venue": venue, "symbols": sorted(wanted) or None}
        return await request_at_terminal(rb, who, "flatten", params, reason)

    raise typer.Exit(run_async(go))


@app.command()
def rollback(
    reason: Reason,
    confirm: Confirm = False,
    by: ByOpt = None,
) -> None:
    """The whole procedure: halt, disconnect, assess, flatten, verify; then the report."""

    async def go(rb: Rollbot) -> int:
        from rollbot.commands.approvals.recover import resume_unfinished
        from rollbot.commands.rollback.engine import Engine
        from rollbot.commands.rollback.report import write_reports

        who = actor(rb, by)
        require(reason, "--reason")
        if not confirm:
            raise BadInput("rollback sends closing orders: add --confirm (nothing was sent)")
        for earlier in await resume_unfinished(rb, who, on_step=print_step):
            out.print(f"finished the interrupted {earlier.incident.id} first")
            print_outcome(earlier)
        if rb.settings.approvals.rollback_needs_approval:  # a person asked: a second approves
            from rollbot.bot.cli_approvals import request_at_terminal

            return await request_at_terminal(rb, who, "rollback", {}, reason)
        break_glass(rb, who, "rollback", reason)
        engine = Engine(rb, who, on_start=on_start, on_step=print_step)
        outcome = await engine.rollback(reason)  # break-glass: its own incident
        code = print_outcome(outcome)
        paths = write_reports(rb, outcome.incident.id)
        out.print("Report: " + ", ".join(str(p) for p in paths.values()))
        return code

    raise typer.Exit(run_async(go))


@app.command()
def recover(by: ByOpt = None) -> None:
    """Finish any rollback that a crash cut off (reads the venues back first)."""

    async def go(rb: Rollbot) -> int:
        from rollbot.commands.approvals.recover import resume_unfinished

        outcomes = await resume_unfinished(rb, actor(rb, by), on_step=print_step)
        if not outcomes:
            out.print("nothing to recover")
        return max((print_outcome(o) for o in outcomes), default=0)

    raise typer.Exit(run_async(go))


# -- gates and shadow mode ----------------------------------------------------------------------
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


# -- the guard ----------------------------------------------------------------------------------
def _decimal(text: str, what: str, *, positive: bool = False) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise BadInput(f"{what} must be a number, got {text!r}") from None
    if not value.is_finite():
        raise BadInput(f"{what} must be a finite number, got {text!r}")
    if positive and value <= 0:
        raise BadInput(f"{what} must be positive, got {text!r}")
    return value


@guard_app.command("check")
def guard_check(
    venue: Annotated[str, typer.Option("--venue", "-v")],
    symbol: Annotated[str, typer.Option("--symbol", "-s")],
    side: Annotated[str, typer.Option("--side")],
    quantity: Annotated[str, typer.Option("--quantity", "-q")],
    position: Annotated[
        str, typer.Option("--position", help="Ignored under REDUCING: the venue's read counts.")
    ] = "0",
    account: Annotated[str | None, typer.Option("--account")] = None,
    strategy: Annotated[str | None, typer.Option("--strategy")] = None,
    order_id: Annotated[
        str | None, typer.Option("--order-id", help="Releases its reservation when done.")
    ] = None,
) -> None:
    """Would this order pass the kill switch? Exit 0 allowed, 1 refused, 2 bad input."""

    def go() -> int:
        cfg = settings()
        names = [v.name for v in cfg.venues]
        if venue not in names:
            raise BadInput(f"unknown venue {venue!r} (configured: {', '.join(names)})")
        if side.upper() not in ("BUY", "SELL"):
            raise BadInput(f"--side must be BUY or SELL, got {side!r}")
        qty = _decimal(quantity, "--quantity", positive=True)
        pos = _decimal(position, "--position")
        require(symbol, "--symbol")
        try:
            rb = Rollbot.open(cfg, create=False)
        except StateUnavailable as exc:
            out.print(f"REFUSED STATE_UNAVAILABLE (state HALTED): {escape(str(exc))}")
            return 1
        d = rb.killswitch.check_order(
            venue,
            symbol,
            side,
            qty,
            position=pos,
            account=account,
            strategy=strategy,
            order_id=order_id,
        )
        out.print(
            f"{'ALLOWED' if d.allowed else 'REFUSED'} {d.code} (state {d.state.value})"
            + (f": {escape(d.reason)}" if d.reason else "")
        )
        return 0 if d.allowed else 1

    raise typer.Exit(guarded(go))


@guard_app.command("release")
def guard_release(
    order_id: Annotated[str, typer.Option("--order-id", help="The id sent with the check.")],
    venue: Annotated[str | None, typer.Option("--venue", "-v")] = None,
    reason: Annotated[str, typer.Option("--reason", "-r")] = "done (filled or cancelled)",
) -> None:
    """The order is done: give what the guard reserved for it back. Exit 0 released, 1 none."""

    def go() -> int:
        rb = Rollbot.open(settings(), create=False)
        try:
            released = rb.killswitch.guard.release(order_id, reason, venue)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        out.print(f"released {released} reservation(s) of order {escape(order_id)}")
        return 0 if released else 1

    raise typer.Exit(guarded(go))


@guard_app.command("serve")
def guard_serve(
    port: Annotated[int | None, typer.Option(help="HTTP port for POST /guard.")] = None,
    socket: Annotated[Path | None, typer.Option(help="Unix socket path for POST /guard.")] = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """The guard service alone: POST /guard, POST /guard/release, GET /guard/events (SSE).
    Needs ROLLBOT_GUARD_TOKEN in the environment."""
    from rollbot.bot.guard_service import run_alone

    guarded(lambda: asyncio.run(run_alone(settings(), host=host, port=port, socket=socket)))


# -- drill, reports, paper venue ----------------------------------------------------------------
@app.command()
def drill(
    scenario: Annotated[
        Path | None, typer.Option(help="Scenario TOML (default: built-in book).")
    ] = None,
    latency_ms: Annotated[
        float, typer.Option("--latency-ms", help="Simulated round trip (0: none).")
    ] = DRILL_LATENCY_MS,
    faults: Annotated[str | None, typer.Option(help="rejects,partial,disconnect,late-fill")] = None,
    by: ByOpt = None,
    venue: Annotated[
        str | None,
        typer.Option("--venue", help="A paper/testnet venue: kill a sentinel order there."),
    ] = None,
) -> None:
    """Rehearse the whole rollback on a seeded paper venue, in a sandbox; write the report.
    With --venue: the venue drill on that paper/testnet venue (cli_venue_drill.py)."""
    if venue is not None:
        from rollbot.bot.cli_venue_drill import venue_drill

        raise typer.Exit(venue_drill(venue, by))

    def go() -> int:
        from rollbot.commands.rollback.drill import parse_faults, run_drill

        base = settings()
        chosen = parse_faults(faults)
        main_db = Rollbot.open(base)
        try:
            who = actor(main_db, by)
        finally:
            main_db.db.close()
        realistic = " (a venue's typical round trip)" if latency_ms == DRILL_LATENCY_MS else ""
        out.print(
            f"[bold]Drill[/] — paper venue, latency {latency_ms:g} ms{realistic}, faults: "
            f"{', '.join(sorted(chosen)) or 'none'}"
        )
        result = asyncio.run(
            run_drill(
                base,
                who,
                scenario=scenario,
                latency_ms=latency_ms,
                faults=chosen,
                on_start=on_start,
                on_step=print_step,
            )
        )
        code = print_outcome(result.outcome)
        total = sum(s.duration_seconds for s in result.outcome.steps)
        out.print(f"Total {total:.2f} s against the seed's 180 s.")
        for fmt, path in result.reports.items():
            out.print(f"Report ({fmt}): {path}")
        out.print(
            f"Again later: rollbot report {result.outcome.incident.id} [--format md|json|png]"
        )
        return code

    raise typer.Exit(guarded(go))


@app.command()
def report(
    incident: Annotated[str, typer.Argument(help="Incident or drill id: INC-0001, DRILL-0001")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="md, json or png")] = "md",
) -> None:
    """Write an incident's rollback report (stored in SQLite and under the reports directory)."""

    def go() -> int:
        from rollbot.commands.rollback.report import drill_report, write_reports

        if fmt not in ("md", "json", "png"):
            raise BadInput(f"unknown --format {fmt!r}: use md, json or png")
        rb = Rollbot.open(settings())
        if incident.upper().startswith("DRILL-"):  # written in the drill's sandbox
            path = drill_report(rb, incident, fmt)  # type: ignore[arg-type]
        else:
            rb.incidents.get(incident)
            path = write_reports(rb, incident, (fmt,))[fmt]  # type: ignore[arg-type]
        if fmt == "png":
            out.print(str(path))
        else:
            sys.stdout.write(path.read_text(encoding="utf-8") + "\n")
        return 0

    raise typer.Exit(guarded(go))


@app.command()
def incidents(open_only: Annotated[bool, typer.Option("--open")] = False) -> None:
    """Incidents, newest first."""

    def go() -> None:
        rb = Rollbot.open(settings())
        table = folding_table("Id", "Opened", "Kind", "Status", "Phase", "Final", "Reason")
        for i in rb.incidents.list(open_only=open_only):
            table.add_row(
                i.id,
                f"{i.opened_at:%Y-%m-%d %H:%M:%S}",
                i.kind,
                i.status,
                i.phase,
                i.final_status or "",
                i.reason,
            )
        out.print(table)

    guarded(go)


@paper_app.command("seed")
def paper_seed(
    scenario: Annotated[
        Path | None, typer.Option(help="Scenario TOML (default: built-in book).")
    ] = None,
    venue: Annotated[str, typer.Option("--venue", "-v")] = "paper",
) -> None:
    """Reset a paper venue's book from a scenario."""

    def go() -> None:
        from rollbot.brokers.paper.scenario import load_scenario
        from rollbot.brokers.paper.venue import PaperVenue

        rb = Rollbot.open(settings())
        book = load_scenario(scenario)
        target = rb.venue(venue)
        if not isinstance(target, PaperVenue):
            raise BadInput(f"venue {venue!r} is not a paper venue")
        target.seed(book)
        out.print(f"{venue}: seeded {len(book.positions)} positions and {len(book.orders)} orders")

    guarded(go)


# The faces of other rooms register here, after the core commands they build on; each module
# imports this one lazily (inside its commands), so there is no import cycle.
from rollbot.bot import (  # noqa: E402
    cli_approvals,
    cli_audit,
    cli_clock,
    cli_preflight,
    cli_risk,
    cli_serve,
)

app.command()(cli_serve.serve)
app.command()(cli_preflight.preflight)
app.command()(cli_clock.clock)
cli_approvals.register(app)
app.add_typer(cli_risk.app, name="risk")
app.add_typer(cli_audit.audit_app, name="audit")
app.add_typer(cli_audit.db_app, name="db")


def main() -> None:
    app()


if __name__ == "__main__":  # python -m rollbot.bot.cli
    # Modules registered above import `rollbot.bot.cli` lazily: let them find this instance
    # (with its --config) instead of loading a second copy of the module.
    sys.modules.setdefault("rollbot.bot.cli", sys.modules[__name__])
    main()
