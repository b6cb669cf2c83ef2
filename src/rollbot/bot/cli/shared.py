"""What every command group of the terminal face uses: the consoles, the settings the root
`--config` chose, errors turned into a sentence and an exit code, who is at this terminal, and
the printing of steps, outcomes and approval requests that several groups share.

Arrows: the group modules import this one; it imports no group and not the app (bot/cli/app.py),
so nothing here pulls in the rest of the CLI. The console script (bot/breakglass.py) calls
`finish_kill` from here once it has stored the hold by itself.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rollbot.clock import iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.engine import Outcome, Step, StepReport, StepStatus
from rollbot.config import Settings, load_settings
from rollbot.errors import BadInput, RollbotError
from rollbot.storage.events import Actor, IdentityRefused

if TYPE_CHECKING:
    from rollbot.commands.approvals.two_person import ApprovalRequest
    from rollbot.commands.risk.preflight import Check, SlackProbe
    from rollbot.commands.rollback.engine import Engine
    from rollbot.storage.incidents import Incident

T = TypeVar("T")

EXIT_WAITING = 3  # filed or signed, nothing ran: a second person must still approve

# soft wrap: a message (a path, a command to copy) is never broken mid-word; tables still fit
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class _State:
    config: Path | None = None


state = _State()  # set by the root callback (bot/cli/app.py) from --config

Reason = Annotated[str, typer.Option("--reason", "-r", help="Why (recorded in the event log).")]
Confirm = Annotated[bool, typer.Option("--confirm", help="Required: this sends orders.")]
VenueOpt = Annotated[str | None, typer.Option("--venue", "-v", help="One venue (default: all).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
ByOpt = Annotated[
    str | None,
    typer.Option("--by", help="Only your own identity: who acts is your OS user, mapped."),
]
LogLevel = Annotated[
    str | None,
    typer.Option(
        "--log-level", help="DEBUG, INFO, WARNING or ERROR (default: $ROLLBOT_LOG_LEVEL or INFO)."
    ),
]
LogJson = Annotated[bool, typer.Option("--log-json", help="One JSON object a log line.")]


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


# -- steps and outcomes (kill, rollback, recover, drill, an approved request) ------------------
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


# -- the kill once its hold is stored (`kill trigger`, and the console script's fast hold) -----
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


# -- approval requests (filed by `request`, `kill clear`, `flatten --confirm`, `rollback`) ------
def plan_text(line: str | dict[str, str]) -> str:
    if isinstance(line, str):
        return line
    note = f" ({line['note']})" if line.get("note") else ""
    return (
        f"{line['venue']}: {line['side']} {line['quantity']} {line['symbol']} {line['type']}{note}"
    )


def print_request(req: ApprovalRequest, title: str = "Approval request") -> None:
    view = req.view()
    out.print(
        f"[bold]{title} {req.id}[/] — {view['action']} — [bold]{req.status.value}[/]"
        f" (requested by {escape(req.requested_by)} at {iso(req.created_at)})"
    )
    out.print(f"  Reason: {escape(req.reason)}")
    out.print("  Exactly what will run:")
    for line in req.plan:
        out.print(f"    {escape(plan_text(line))}")
    out.print(f"  Plan hash {req.plan_hash[:16]}")
    if req.status.value == "PENDING":
        out.print(f"  {escape(view['note'])} Expires at {iso(req.expires_at)}.")
    else:
        who = escape(str(view.get("decided_by", "")))
        out.print(f"  {view['status']} by {who} at {view.get('decided_at')}")
        out.print(f"  {escape(view['note'])}")
    for v in req.votes:
        why = f": {escape(v.reason)}" if v.reason else ""
        out.print(f"  vote: {v.vote} by {v.voter} at {iso(v.at)}{why}")


async def request_at_terminal(
    rb: Rollbot,
    who: Actor,
    action: str,
    params: dict[str, Any],
    reason: str,
    incident_id: str | None = None,
) -> int:
    """Store the request (nothing runs) and say how the second person approves it."""
    from rollbot.commands.approvals.two_person import Approvals

    req = await Approvals(rb).request(action, params, who, reason, incident_id)
    print_request(req)
    err.print(
        f"nothing ran: a second person must approve — `rollbot approve {req.id}` at their"
        " terminal, or the Approve button in Slack"
    )
    return EXIT_WAITING


# -- the Slack checks (`preflight`, and the clock's armed status) -------------------------------
def slack_probe_for(rb: Rollbot) -> SlackProbe | None:
    """The Slack checks when Slack is set up (a token, or an ops channel that expects one)."""
    from rollbot.commands.risk.preflight import failed

    token = rb.secrets.slack_bot_token
    if token is None:
        if not rb.settings.slack.ops_channel:
            return None  # a desk without Slack: nothing to check there

        async def missing() -> list[Check]:
            return [
                failed(
                    "slack_token",
                    "SLACK_BOT_TOKEN is not set, yet [slack] ops_channel is",
                    "export SLACK_BOT_TOKEN (the app's xoxb-… bot token) or put it in .env",
                )
            ]

        return missing
    from slack_sdk.web.async_client import AsyncWebClient

    from rollbot.bot.slack.probe import slack_probe
    from rollbot.bot.slack.server import DEFAULT_API

    client = AsyncWebClient(
        token=token.get_secret_value(), base_url=rb.secrets.slack_api_url or DEFAULT_API
    )
    return slack_probe(rb, client)
