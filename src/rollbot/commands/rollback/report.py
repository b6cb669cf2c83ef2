"""Rollback reports, built from the event log (never from memory): the IBKR seed's Rollback Log
Template as JSON, the Live -> Shadow seed's step-8 report as Markdown, and a NAV chart."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from rollbot.clock import iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.desk.money import money
from rollbot.commands.rollback.engine import StepReport, ended_steps
from rollbot.errors import BadInput, NotFound
from rollbot.storage.incidents import Incident
from rollbot.storage.nav import NavSamples

Format = Literal["md", "json", "png"]

# Live -> Shadow seed, "Post-Rollback Actions"
CHECKLIST: list[tuple[str, str, timedelta]] = [
    ("notify_stakeholders", "Notify stakeholders (Risk Owner, System Owner)", timedelta(hours=1)),
    ("incident_ticket", "Create incident ticket", timedelta(hours=1)),
    ("schedule_postmortem", "Schedule post-mortem review", timedelta(hours=1)),
    ("monitor_shadow", "Monitor shadow mode for stability", timedelta(hours=1)),
    ("root_cause", "Investigate root cause", timedelta(hours=24)),
    ("logs_metrics", "Review logs and metrics", timedelta(hours=24)),
    ("code_config", "Identify any code/config issues", timedelta(hours=24)),
    ("remediation", "Plan remediation", timedelta(hours=24)),
]
BEFORE_LIVE = [
    "Root cause identified and fixed",
    "Fix tested in shadow mode",
    "New drill completed successfully",
    "Risk Owner approval obtained",
]


def runbook_line(app: Rollbot) -> str:
    runbook = app.settings.paths.runbook
    if runbook:
        return f"Follow {runbook} to re-enable"
    return "Follow the desk's live-mode transition runbook to re-enable ([paths] runbook names it)"


def _timestamp(text: str) -> str:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("a timestamp needs its UTC offset (Z)")
    return text


Timestamp = Annotated[str, AfterValidator(_timestamp)]


class _Strict(BaseModel):
    """Unknown keys are errors: the model documents the whole shape, the seed's and ours."""

    model_config = ConfigDict(extra="forbid")


class LogPosition(_Strict):
    """Seed: `{"quantity": 500, "unrealized_pnl": -5200}`, keyed by symbol."""

    quantity: float
    unrealized_pnl: float
    venue: str | None = None
    market_value: float | None = None


class LogOrder(_Strict):
    """Seed: `{"symbol": "TSLA", "direction": "SELL", "quantity": 500, "filled": true}`."""

    symbol: str
    direction: Literal["BUY", "SELL"]
    quantity: float
    filled: bool
    venue: str | None = None
    type: str | None = None
    filled_quantity: float | None = None
    status: str | None = None
    client_order_id: str | None = None


class LogVerification(_Strict):
    """Seed: all_positions_flat, no_open_orders, final_pnl, logs_archived; then rollbot's
    per-venue detail."""

    all_positions_flat: bool
    no_open_orders: bool
    final_pnl: float | None
    logs_archived: str | None = None
    residual: dict[str, dict[str, float]] | None = None  # venue -> symbol -> quantity left
    last_known_residual: dict[str, dict[str, float]] | None = None  # where it was unreachable
    open_orders: dict[str, int] | None = None
    unreachable: list[str] | None = None
    not_checked: dict[str, list[str]] | None = None  # venue -> what could hold risk, unread
    start_nav: float | None = None
    final_nav: float | None = None
    # final_pnl told apart: drift from the session's first NAV to the hold, and from the hold
    # (step 1's NAV) to the end of the rollback
    halt_nav: float | None = None
    pnl_before_halt: float | None = None
    pnl_during_rollback: float | None = None
    currency: str | None = None
    nav_change: float | None = None
    nav_loss_exceeds_threshold: bool | None = None
    trading_state: Literal["ACTIVE", "REDUCING", "HALTED"] | None = None
    shadow_mode_active: bool | None = None
    live_trading_blocked: bool | None = None


StrategyName = Literal["MARKET_ORDERS", "LIMIT_ORDERS_WITH_TIMEOUT", "MIXED"]


class LogStep(_Strict):
    step: int = Field(ge=1, le=5)
    name: str
    start_time: Timestamp
    end_time: Timestamp
    duration_seconds: float = Field(ge=0)
    status: Literal["SUCCESS", "PARTIAL", "FAILED", "SKIPPED"]
    actions: list[str] = Field(default_factory=list)  # the seed's steps 3-5 carry none
    positions: dict[str, LogPosition] | None = None  # symbol, or venue:symbol when both hold it
    total_pnl: float | None = None
    flatten_strategy: StrategyName | None = None
    # rollbot's additions: per venue, the seed target, what went wrong on the way
    flatten_strategy_by_venue: dict[str, StrategyName] | None = None
    target_seconds: float | None = None
    errors: list[str] | None = None
    venues: dict[str, str] | None = None
    orders: list[LogOrder] | None = None
    verification: LogVerification | None = None


class RollbackLog(_Strict):
    """The IBKR seed's Rollback Log Template; the seed's own example validates against it."""

    rollback_id: str = Field(pattern=r"^rollback_\d{8}_\d{3,}$")
    timestamp: Timestamp
    trigger: str
    trigger_value: float | None
    trigger_threshold: float | None
    steps: list[LogStep]
    total_duration_seconds: float = Field(ge=0)
    final_status: Literal["SUCCESS", "PARTIAL", "FAILED", "RUNNING"]
    final_pnl: float | None
    root_cause: str | None
    remediation_plan: str | None
    incident_id: str | None = None
    reason: str | None = None

    def to_json(self) -> str:
        """The seed's layout: a step carries only the sections it has (no nulls)."""
        data = self.model_dump(mode="json")
        data["steps"] = [s.model_dump(mode="json", exclude_none=True) for s in self.steps]
        return json.dumps(data, indent=2, ensure_ascii=False)


def _log_positions(s: StepReport) -> dict[str, LogPosition] | None:
    if s.positions is None:
        return None
    held: dict[str, int] = {}
    for syms in s.positions.values():
        for sym in syms:
            held[sym] = held.get(sym, 0) + 1
    out = {}
    for venue, syms in s.positions.items():
        for sym, vals in syms.items():
            key = sym if held[sym] == 1 else f"{venue}:{sym}"
            out[key] = LogPosition(
                quantity=float(vals["quantity"]),
                unrealized_pnl=float(vals["unrealized_pnl"]),
                venue=venue,
                market_value=float(vals["market_value"]) if "market_value" in vals else None,
            )
    return out


def _log_step(s: StepReport, logs_archived: str) -> LogStep:
    orders = None
    if s.orders is not None:
        orders = [
            LogOrder(
                venue=o["venue"],
                symbol=o["symbol"],
                direction=o["side"],  # type: ignore[arg-type]
                quantity=float(o["quantity"]),
                type=o["type"],
                filled=o["status"] == "FILLED",
                filled_quantity=float(o["filled"]),
                status=o["status"],
                client_order_id=o["client_order_id"],
            )
            for o in s.orders
        ]
    strategy = None
    if s.flatten_strategy:
        chosen = set(s.flatten_strategy.values())
        strategy = chosen.pop() if len(chosen) == 1 else "MIXED"
    verification = None
    if s.verification is not None:
        v = s.verification
        verification = LogVerification.model_validate(
            {
                **v,
                "final_pnl": float(v["final_pnl"])
                if v.get("start_nav") not in (None, "0")
                else None,
                **{
                    key: float(v[key]) if v.get(key) is not None else None
                    for key in (
                        "start_nav",
                        "final_nav",
                        "halt_nav",
                        "pnl_before_halt",
                        "pnl_during_rollback",
                    )
                },
                "logs_archived": logs_archived,
            }
        )
    return LogStep(
        step=s.step,
        name=s.name,
        start_time=iso(s.start_time),
        end_time=iso(s.end_time),
        duration_seconds=s.duration_seconds,
        status=s.status.value,
        actions=s.actions,
        target_seconds=s.target_seconds,
        positions=_log_positions(s),
        total_pnl=float(s.total_pnl) if s.total_pnl is not None else None,
        flatten_strategy=strategy,  # type: ignore[arg-type]
        flatten_strategy_by_venue=s.flatten_strategy,  # type: ignore[arg-type]
        errors=s.errors or None,
        venues=s.venues or None,
        orders=orders,
        verification=verification,
    )


def build_log(app: Rollbot, incident: Incident) -> RollbackLog:
    steps = ended_steps(app, incident.id)
    rca = app.db.one("SELECT * FROM rca WHERE incident_id = ?", (incident.id,))
    archived = f"{app.db.path} (table events, incident_id = {incident.id})"
    log_steps = [_log_step(s, archived) for s in steps]
    final_pnl = None
    for ls in log_steps:
        if ls.verification and ls.verification.final_pnl is not None:
            final_pnl = ls.verification.final_pnl
    total = (steps[-1].end_time - steps[0].start_time).total_seconds() if steps else 0.0
    return RollbackLog(
        incident_id=incident.id,
        rollback_id=f"rollback_{incident.opened_at:%Y%m%d}_{incident.seq:03d}",
        timestamp=iso(incident.opened_at),
        trigger=incident.trigger or f"Manual {incident.kind}",
        trigger_value=incident.trigger_value,
        trigger_threshold=incident.trigger_threshold,
        reason=incident.reason,
        steps=log_steps,
        total_duration_seconds=round(total, 3),
        final_status=incident.final_status or "RUNNING",  # type: ignore[arg-type]
        final_pnl=final_pnl,
        root_cause=rca["root_cause"] if rca else None,
        remediation_plan=rca["recommended_actions"] if rca else None,
    )


def _checklist_rows(app: Rollbot, incident: Incident) -> list[dict[str, Any]]:
    stored = {
        r["item"]: r
        for r in app.db.query("SELECT * FROM checklist_items WHERE incident_id = ?", (incident.id,))
    }
    rows = []
    for key, label, within in CHECKLIST:
        r = stored.get(key, {})
        rows.append(
            {
                "label": label,
                "due": incident.opened_at + within,
                "window": within,
                "ticked_by": r.get("ticked_by"),
                "ticked_at": r.get("ticked_at"),
            }
        )
    return rows


def _how(order: dict[str, str]) -> str:
    head = f"{order['side']} {order['quantity']} {order['type']} → {order['status']}"
    filled, qty = Decimal(order["filled"]), Decimal(order["quantity"])
    if order["status"] != "FILLED" and filled:
        head += f" after filling {order['filled']}"
    elif order["status"] == "FILLED" and filled != qty:
        head += f" ({order['filled']})"
    return head


def venue_currencies(app: Rollbot, incident: Incident) -> dict[str, str]:
    """Each venue's account currency, as its NAV samples around the incident say."""
    steps = ended_steps(app, incident.id)
    until = steps[-1].end_time if steps else incident.opened_at
    samples = NavSamples(app.db).list(since=incident.opened_at - timedelta(days=1), until=until)
    return {s.venue: s.currency for s in samples}


def pnl_lines(v: LogVerification | None) -> list[tuple[str, str]]:
    """(label, amount) of the PnL a desk asks about, each told apart: what drifted before the
    hold, what the rollback itself cost, and the seed's final PnL (their sum)."""
    if v is None or v.final_pnl is None:
        return []
    cur = v.currency
    rows = []
    if v.pnl_before_halt is not None and v.pnl_during_rollback is not None:
        rows += [
            ("PnL before the halt (session start to the hold)", money(v.pnl_before_halt, cur)),
            (
                "PnL during the rollback (the hold to verification)",
                money(v.pnl_during_rollback, cur),
            ),
        ]
    rows.append(("Final PnL (NAV now less the session's first)", money(v.final_pnl, cur)))
    return rows


def build_markdown(app: Rollbot, incident: Incident) -> str:
    log = build_log(app, incident)
    steps = ended_steps(app, incident.id)
    currency = venue_currencies(app, incident)
    errors = [
        e for e in app.events.list(incident_id=incident.id, kinds=["ORDER_REJECTED", "VENUE_ERROR"])
    ]
    out = [f"# Rollback report {incident.id}", ""]
    out += [
        f"- **Timestamp:** {iso(incident.opened_at)}",
        f"- **Reason:** {incident.reason}",
        f"- **Trigger:** {log.trigger}"
        + (
            f" (value {log.trigger_value}, threshold {log.trigger_threshold})"
            if log.trigger_value is not None
            else ""
        ),
        f"- **Started by:** {incident.opened_by} via {incident.source}",
        f"- **Final status:** {log.final_status}",
        f"- **Total duration:** {log.total_duration_seconds:.1f} s (seed target 180 s)",
        "",
    ]
    out += [
        "## Steps",
        "",
        "| # | Step | Status | Duration | Elapsed / target |",
        "|---|---|---|---|---|",
    ]
    for s in steps:
        mark = "✅" if s.on_target else "⚠️"
        out.append(
            f"| {s.step} | {s.name} | {s.status.value} | {s.duration_seconds:.2f} s | "
            f"{s.elapsed_seconds:.2f} s / {s.cumulative_target_seconds:.0f} s {mark} |"
        )
    out.append("")
    assess = next((s for s in steps if s.step == 3), None)
    flatten = next((s for s in steps if s.step == 4), None)
    out += ["## Open positions at rollback and how they were closed", ""]
    if assess and assess.positions:
        out += [
            "| Venue | Symbol | Quantity | Unrealized PnL | Closed by |",
            "|---|---|---|---|---|",
        ]
        for venue, syms in assess.positions.items():
            strategy = (assess.flatten_strategy or {}).get(venue, "")
            for sym, vals in syms.items():
                sent = (
                    [
                        o
                        for o in (flatten.orders or [])
                        if o["venue"] == venue and o["symbol"] == sym
                    ]
                    if flatten
                    else []
                )
                how = "; ".join(_how(o) for o in sent) or "no closing order sent"
                pnl = money(vals["unrealized_pnl"], currency.get(venue))
                out.append(f"| {venue} | {sym} | {vals['quantity']} | {pnl} | {how} ({strategy}) |")
    else:
        out.append("No positions were assessed in this incident.")
    out.append("")
    out += ["## PnL at rollback", ""]
    if assess and assess.total_pnl is not None:
        units = "/".join(sorted({currency[v] for v in assess.positions or {} if v in currency}))
        out.append(f"- Unrealized PnL when assessed: {money(assess.total_pnl, units or None)}")
    verified = next((s.verification for s in log.steps if s.verification), None)
    out += [f"- {label}: {amount}" for label, amount in pnl_lines(verified)]
    out.append("")
    out += ["## Errors and issues encountered", ""]
    problems = [
        f"- Step {s.step} {s.name}: {s.status.value} — {'; '.join(s.actions)}"
        for s in steps
        if s.status.value in ("PARTIAL", "FAILED")
    ]
    problems += [
        f"- {e.kind} at {iso(e.at)} ({(e.scope or '').removeprefix('venue:')}):"
        f" {e.data.get('side', '')} {e.data.get('quantity', '')} {e.data.get('symbol', '')}"
        f" attempt {e.data.get('attempt', '?')}: {e.reason or ''}"
        for e in errors
    ]
    # rejections are listed above from their events; the rest (disconnects, failed reads...)
    problems += [
        f"- Step {s.step} {s.name}: {err}"
        for s in steps
        for err in s.errors
        if "rejected:" not in err
    ]
    out += problems or ["None."]
    out.append("")
    verify = next((s for s in steps if s.step == 5), None)
    out += ["## Verification", ""]
    if verify and verify.verification:
        v = verify.verification
        tick = {True: "✅", False: "❌"}
        out += [
            f"- {tick[bool(v['all_positions_flat'])]} All positions flat"
            + (
                ""
                if v["all_positions_flat"]
                else f": remaining {json.dumps(v['residual'])}"
                + (f"; unreachable {', '.join(v['unreachable'])}" if v["unreachable"] else "")
                + (
                    f" (last known there: {json.dumps(v['last_known_residual'])})"
                    if v.get("last_known_residual")
                    else ""
                )
            ),
            f"- {tick[bool(v['no_open_orders'])]} No open orders"
            + ("" if v["no_open_orders"] else f": {json.dumps(v['open_orders'])}")
            + (f"; NOT CHECKED {json.dumps(v['not_checked'])}" if v.get("not_checked") else ""),
            f"- {tick[v['trading_state'] == 'HALTED']} Kill switch: {v['trading_state']}",
            f"- {tick[bool(v['shadow_mode_active'])]} Shadow mode: "
            + ("ENABLED" if v["shadow_mode_active"] else "NOT enabled"),
            f"- {tick[bool(v['live_trading_blocked'])]} Live trading: "
            + ("BLOCKED" if v["live_trading_blocked"] else "NOT blocked"),
            f"- {tick[not v['nav_loss_exceeds_threshold']]} NAV change since the session start "
            f"{v['nav_change']:+.2%} (threshold -{app.settings.nav_change_threshold:.0%})",
        ]
    else:
        out.append("Verification has not run for this incident.")
    out.append("")
    out += [
        "## Next steps",
        "",
        "1. Investigate the root cause; record it with `rollbot rca` or the Slack modal.",
        "2. Fix and test the fix in shadow mode.",
        "3. Run a drill (`rollbot drill`).",
        "4. Stay in shadow at least "
        f"{app.settings.resume.min_shadow_hours:g} h, then ask a risk officer to approve"
        " `/resume`.",
        "",
    ]
    out += ["## Post-rollback checklist", ""]
    for row in _checklist_rows(app, incident):
        box = "x" if row["ticked_by"] else " "
        who = f" — ticked by {row['ticked_by']} at {row['ticked_at']}" if row["ticked_by"] else ""
        within = "1 hour" if row["window"] == timedelta(hours=1) else "24 hours"
        out.append(f"- [{box}] {row['label']} (within {within}, due {iso(row['due'])}){who}")
    out.append("")
    out += ["## Before re-enabling live trading", ""]
    out += [f"- [ ] {item}" for item in [*BEFORE_LIVE, runbook_line(app)]]
    out.append("")
    return "\n".join(out)


STEP_LABEL_GAP = 0.03  # of the axes' width: a step number and its box, with room to spare
STEP_COLORS = {
    "SUCCESS": "tab:green",
    "PARTIAL": "tab:orange",
    "FAILED": "tab:red",
    "SKIPPED": "tab:gray",
}


def build_png(app: Rollbot, incident: Incident) -> bytes:
    import matplotlib.pyplot as plt

    fig = chart(app, incident)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def chart(app: Rollbot, incident: Incident) -> Any:
    """PnL around the incident, per venue: before the halt (thin, from the first sample) and
    during the rollback (bold, from the NAV at the halt), each step a numbered band named in
    the legend. Times in UTC with the date; money in the venues' currency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    steps = ended_steps(app, incident.id)
    start = steps[0].start_time if steps else incident.opened_at
    end = steps[-1].end_time if steps else incident.opened_at
    span = max((end - start).total_seconds(), 60.0)
    samples = NavSamples(app.db).list(
        since=start - timedelta(seconds=span * 3), until=end + timedelta(seconds=span)
    )
    fig, ax = plt.subplots(figsize=(11, 5), dpi=100)
    by_venue: dict[str, list[tuple[datetime, float]]] = {}
    for s in samples:
        by_venue.setdefault(s.venue, []).append((s.at, float(s.nav)))
    currencies = sorted({s.currency for s in samples}) or ["USD"]
    currency_of = {s.venue: s.currency for s in samples}
    handles = []
    for venue, points in by_venue.items():
        before = [p for p in points if p[0] <= start]
        during = [p for p in points if p[0] >= start]
        base = points[0][1]
        if before:
            (line,) = ax.plot(
                [p[0] for p in before],
                [p[1] - base for p in before],
                linewidth=1,
                marker=".",
                label=f"{venue}: PnL before the halt (from the first sample)",
            )
            handles.append(line)
        if during:
            halt = (before[-1] if before else during[0])[1]
            (line,) = ax.plot(
                [p[0] for p in during],
                [p[1] - base for p in during],
                linewidth=2.5,
                marker="o",
                label=f"{venue}: PnL during the rollback"
                f" ({money(during[-1][1] - halt, currency_of[venue])} from the halt)",
            )
            handles.append(line)
    shown = [p[0] for points in by_venue.values() for p in points] or [start]
    left = mdates.date2num(min([*shown, start]))
    width = max(mdates.date2num(max([*shown, end])) - left, 1e-9)
    rows: list[float] = []  # the x (axes fraction) each row of step numbers has reached
    for s in steps:
        ax.axvspan(s.start_time, s.end_time, color=STEP_COLORS[s.status.value], alpha=0.18)
        # a step of a few ms starts where the next one does: its number goes a row lower
        # instead of on top of the next (the drill's "2" and "3" were one blot)
        x = (mdates.date2num(s.start_time) - left) / width
        row = next((i for i, reached in enumerate(rows) if x >= reached), len(rows))
        rows[row : row + 1] = [x + STEP_LABEL_GAP]
        ax.annotate(
            str(s.step),
            (s.start_time, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -2 - 12 * row),
            textcoords="offset points",
            va="top",
            fontsize=9,
            fontweight="bold",
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.8, "lw": 0},
        )
        handles.append(
            Patch(
                color=STEP_COLORS[s.status.value],
                alpha=0.4,
                label=f"{s.step} {s.name}: {s.status.value} in {s.duration_seconds:.2f} s",
            )
        )
    ax.set_title(f"{incident.id}: PnL around the incident — {incident.final_status or 'RUNNING'}")
    ax.set_ylabel(f"PnL ({'/'.join(currencies)})")
    days = sorted({t.astimezone(UTC).date().isoformat() for t in shown})
    ax.set_xlabel(f"time (UTC) on {' to '.join(dict.fromkeys([days[0], days[-1]]))}")
    fine = (max(shown) - min(shown)).total_seconds() < 300  # a drill lasts seconds

    def clock_label(x: float, _pos: int) -> str:
        t = mdates.num2date(x, tz=UTC)
        return f"{t:%H:%M:%S}.{t.microsecond // 1000:03d}" if fine else f"{t:%H:%M:%S}"

    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(clock_label))
    ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.2f}"))
    ax.grid(alpha=0.3)
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    else:
        ax.text(0.5, 0.5, "no NAV samples recorded", transform=ax.transAxes, ha="center")
    return fig


def render(app: Rollbot, incident_id: str, fmt: Format) -> bytes:
    incident = app.incidents.get(incident_id)
    if fmt == "json":
        return build_log(app, incident).to_json().encode()
    if fmt == "md":
        return build_markdown(app, incident).encode()
    if fmt == "png":
        return build_png(app, incident)
    raise BadInput(f"unknown report format {fmt!r}: use md, json or png")


def drill_report(app: Rollbot, drill_id: str, fmt: Format) -> Path:
    """A drill's report, written in its sandbox when it ran: DRILL-N is the main database's
    drill N."""
    number = drill_id.upper().removeprefix("DRILL-")
    row = (
        app.db.one("SELECT * FROM drills WHERE id = ?", (int(number),))
        if number.isdecimal()
        else None
    )
    if row is None:
        raise NotFound(f"unknown drill {drill_id!r} (drills are DRILL-0001, DRILL-0002, …)")
    if not row["report_path"]:
        raise NotFound(f"{drill_id} ended {row['status']} before writing its report")
    path = Path(row["report_path"]).with_suffix(f".{fmt}")
    if not path.exists():
        raise NotFound(f"{drill_id}'s report file {path} is gone")
    return path


def write_reports(
    app: Rollbot, incident_id: str, formats: tuple[Format, ...] = ("md", "json", "png")
) -> dict[str, Path]:
    """Render, store in SQLite and write under the reports directory."""
    out_dir = Path(app.settings.paths.reports_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in formats:
        content = render(app, incident_id, fmt)
        path = out_dir / f"{incident_id}.{fmt}"
        path.write_bytes(content)
        app.db.execute(
            "INSERT INTO reports (incident_id, format, path, content, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (incident_id, fmt, str(path), content, iso(app.clock.now())),
        )
        paths[fmt] = path
    return paths
