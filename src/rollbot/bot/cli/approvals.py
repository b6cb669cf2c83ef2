"""The terminal face of the two-person rule: request, approve, deny, list; RCA and resume.

A request made here still needs a second person (in Slack or at another terminal). Who you are
comes from your OS user and the identity mapped to it in rollbot.toml (`[identities]`); there is
no `--by` on approve or deny, so nobody votes under someone else's name.

Exit codes: 0 done (the action ran cleanly, or a denial was recorded); 1 refused, or the action
ran only partly; 2 bad input; 3 waiting for another person (a request filed, or an approval
counted while the request still needs more): nothing ran yet, which a script must not read as
done (0) nor as refused (1).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from rollbot.bot.cli.shared import (
    EXIT_WAITING,
    VenueOpt,
    actor,
    err,
    folding_table,
    guarded,
    on_start,
    out,
    print_request,
    print_step,
    request_at_terminal,
    run_async,
    settings,
)
from rollbot.clock import iso
from rollbot.errors import BadInput
from rollbot.storage.events import Actor

if TYPE_CHECKING:
    from rollbot.commands.approvals.two_person import VoteResult
    from rollbot.commands.desk.context import Rollbot

request_app = typer.Typer(
    no_args_is_help=True, help="Ask for a risky action; a second person must approve it."
)

# a request's own --reason and --by help (shared.py's speak of who acts, these of who asks)
Reason = Annotated[str, typer.Option("--reason", "-r", help="Why (recorded and shown).")]
IncidentOpt = Annotated[
    str | None, typer.Option("--incident", "-i", help="The incident this request belongs to.")
]
ByOpt = Annotated[
    str | None,
    typer.Option("--by", help="Only your own identity: who asks is your OS user, mapped."),
]


def _me(rb: Rollbot) -> Actor:
    return Actor.terminal(None, rb.settings.identities)


# -- printing -----------------------------------------------------------------------------------
def print_vote(result: VoteResult) -> int:
    if result.refused:
        err.print(f"[bold red]refused ({result.code}):[/] {escape(result.message)}")
        if result.superseded_by is not None:
            print_request(result.superseded_by, "Fresh request")
        return 1
    out.print(escape(result.message))
    if result.code == "VOTE_RECORDED":  # counted, but the request still needs more sign-offs
        return EXIT_WAITING
    if result.code == "EXECUTION_FAILED":
        return 1
    outcome = (result.result or {}).get("final_status")
    return 1 if outcome not in (None, "SUCCESS") else 0


# -- requests -----------------------------------------------------------------------------------
@request_app.command("flatten")
def request_flatten(
    reason: Reason,
    venue: VenueOpt = None,
    symbol: Annotated[
        list[str] | None, typer.Option("--symbol", "-s", help="Only these symbols.")
    ] = None,
    incident: IncidentOpt = None,
    by: ByOpt = None,
) -> None:
    """Close positions (every order is shown and bound to the request)."""

    async def go(rb: Rollbot) -> int:
        params = {"venue": venue, "symbols": sorted(symbol) if symbol else None}
        return await request_at_terminal(rb, actor(rb, by), "flatten", params, reason, incident)

    raise typer.Exit(run_async(go))


@request_app.command("rollback")
def request_rollback(reason: Reason, by: ByOpt = None) -> None:
    """The whole five-step rollback."""

    async def go(rb: Rollbot) -> int:
        return await request_at_terminal(rb, actor(rb, by), "rollback", {}, reason)

    raise typer.Exit(run_async(go))


@request_app.command("clear-hold")
def request_clear_hold(
    reason: Reason,
    scope: Annotated[str, typer.Option(help="The scope whose holds to clear.")] = "global",
    source: Annotated[str | None, typer.Option(help="Only the hold from this source.")] = None,
    hold: Annotated[
        list[int] | None, typer.Option("--hold", help="Only these holds (#id in `kill status`).")
    ] = None,
    incident: IncidentOpt = None,
    by: ByOpt = None,
) -> None:
    """Clear kill-switch holds on a scope: exactly those active when asked (or named)."""

    async def go(rb: Rollbot) -> int:
        params = {"scope": scope, "source": source, "hold_ids": hold or None}
        return await request_at_terminal(rb, actor(rb, by), "clear_hold", params, reason, incident)

    raise typer.Exit(run_async(go))


@request_app.command("enable-gates")
def request_enable_gates(reason: Reason, incident: IncidentOpt = None, by: ByOpt = None) -> None:
    """Arm the live trading gates (enable_live_trading, live_mode_armed, dry-run off)."""

    async def go(rb: Rollbot) -> int:
        return await request_at_terminal(rb, actor(rb, by), "enable_gates", {}, reason, incident)

    raise typer.Exit(run_async(go))


def _resume(incident: str | None, reason: str | None, check: bool, by: str | None) -> None:

    async def go(rb: Rollbot) -> int:
        from rollbot.commands.rollback.resume import resume_blockers

        target = incident
        if not target:
            latest = rb.incidents.latest()
            if latest is None:
                raise BadInput("there is no incident to resume from")
            target = latest.id
        if check:
            blockers = resume_blockers(rb, target)
            for b in blockers:
                out.print(f"❌ {escape(b)}")
            if not blockers:
                out.print(f"✅ {target}: every resume condition holds; request it with --reason")
            return 1 if blockers else 0
        if not reason or not reason.strip():
            raise BadInput("--reason is required to request a resume (or use --check)")
        return await request_at_terminal(
            rb, actor(rb, by), "resume", {"incident_id": target}, reason
        )

    raise typer.Exit(run_async(go))


def resume(
    incident: Annotated[
        str | None, typer.Argument(help="Incident id (default: the latest).")
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", "-r")] = None,
    check: Annotated[bool, typer.Option("--check", help="Only list what is missing.")] = False,
    by: ByOpt = None,
) -> None:
    """Ask to resume live trading after an incident (a risk officer approves): re-arm the gates,
    clear its holds."""
    _resume(incident, reason, check, by)


request_app.command("resume")(resume)  # `rollbot request resume` and `rollbot resume` alike


# -- votes --------------------------------------------------------------------------------------
def _vote(approval_id: str, decision: str, reason: str | None) -> int:

    async def go(rb: Rollbot) -> int:
        from rollbot.commands.approvals.two_person import Approvals

        result = await Approvals(rb).vote(
            approval_id,
            _me(rb),
            decision,
            reason,
            on_start=on_start,
            on_step=print_step,
        )
        code = print_vote(result)
        if result.executed:
            print_request(result.approval)
        return code

    return int(run_async(go))


def approve(
    approval_id: Annotated[str, typer.Argument(help="The approval id, e.g. APR-0001.")],
) -> None:
    """Approve a request as yourself (your OS user's mapped identity); it runs at quorum."""
    raise typer.Exit(_vote(approval_id, "approve", None))


def deny(
    approval_id: Annotated[str, typer.Argument(help="The approval id, e.g. APR-0001.")],
    reason: Reason,
) -> None:
    """Deny a request (final: nothing runs)."""
    if not reason.strip():
        err.print("[bold red]error:[/] --reason must not be empty")
        raise typer.Exit(2)
    raise typer.Exit(_vote(approval_id, "deny", reason))


def approvals(
    approval_id: Annotated[str | None, typer.Argument(help="Show one request in full.")] = None,
    pending: Annotated[bool, typer.Option("--pending", help="Only pending requests.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Approval requests, newest first (expired ones are marked as such first)."""

    def go() -> int:
        from rollbot.commands.approvals.two_person import Approvals
        from rollbot.commands.desk.context import Rollbot

        rb = Rollbot.open(settings())
        book = Approvals(rb)
        book.expire_due()
        rows = [book.get(approval_id)] if approval_id else book.list(pending_only=pending)
        if as_json:
            sys.stdout.write(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
            sys.stdout.write("\n")
            return 0
        if approval_id:
            print_request(rows[0])
            return 0
        table = folding_table(
            "Id", "Action", "Status", "Requested by", "Created", "Expires", "Decided by"
        )
        for r in rows:
            view = r.view()
            table.add_row(
                r.id,
                view["action"],
                r.status.value,
                r.requested_by,
                iso(r.created_at),
                iso(r.expires_at),
                r.decided_by or "",
            )
        out.print(table if rows else "no approval requests")
        return 0

    raise typer.Exit(guarded(go))


# -- RCA ----------------------------------------------------------------------------------------
def rca(
    incident: Annotated[str, typer.Argument(help="Incident id, e.g. INC-0001.")],
    file: Annotated[
        Path,
        typer.Option(
            "--file",
            "-f",
            help="TOML, YAML or JSON with timeline, root_cause, contributing_factors,"
            " lessons_learned, recommended_actions.",
        ),
    ],
) -> None:
    """Record the root-cause analysis of an incident (one condition for resuming)."""

    def go() -> int:
        from rollbot.commands.desk.context import Rollbot
        from rollbot.commands.rollback.rca import parse_rca_text, record_rca
        from rollbot.commands.rollback.resume import resume_blockers

        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BadInput(f"RCA file {file} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"RCA file {file} cannot be read: {exc}") from None
        fields = parse_rca_text(text, str(file))
        rb = Rollbot.open(settings())
        saved = record_rca(rb, incident, fields, _me(rb))
        out.print(f"RCA recorded for {saved.incident_id} by {saved.recorded_by}")
        left = resume_blockers(rb, saved.incident_id)
        if left:
            out.print("Still missing before resume:")
            for b in left:
                out.print(f"  ❌ {escape(b)}")
        else:
            out.print(f"Every resume condition holds: `rollbot resume {saved.incident_id} -r …`")
        return 0

    raise typer.Exit(guarded(go))
