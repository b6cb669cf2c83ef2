"""Rollback reports, built from the event log (never from memory): the IBKR seed's Rollback Log
Template as JSON, the Live -> Shadow seed's step-8 report as Markdown, and a NAV chart."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from rollbot.clock import iso
from rollbot.commands.context import Rollbot
from rollbot.commands.rollback import StepReport
from rollbot.errors import BadInput
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


class LogOrder(BaseModel):
    venue: str
    symbol: str
    direction: str
    quantity: float
    type: str
    filled: bool
    filled_quantity: float
    status: str
    client_order_id: str


class LogStep(BaseModel):
    step: int
    name: str
    start_time: str
    end_time: str
    duration_seconds: float
    status: Literal["SUCCESS", "PARTIAL", "FAILED", "SKIPPED"]
    actions: list[str]
    target_seconds: float
    positions: dict[str, dict[str, dict[str, float]]] | None = None
    total_pnl: float | None = None
    flatten_strategy: dict[str, str] | None = None
    orders: list[LogOrder] | None = None
    verification: dict[str, Any] | None = None


class RollbackLog(BaseModel):
    """The IBKR seed's Rollback Log Template."""

    rollback_id: str
    timestamp: str
    trigger: str
    trigger_value: float | None
    trigger_threshold: float | None
    reason: str
    steps: list[LogStep] = Field(min_length=0)
    total_duration_seconds: float
    final_status: Literal["SUCCESS", "PARTIAL", "FAILED", "RUNNING"]
    final_pnl: float | None
    root_cause: str | None
    remediation_plan: str | None


def _steps(app: Rollbot, incident_id: str) -> list[StepReport]:
    return [
        StepReport.model_validate(e.data)
        for e in app.events.list(incident_id=incident_id, kinds=["STEP_ENDED"])
    ]


def _log_step(s: StepReport) -> LogStep:
    positions = None
    if s.positions is not None:
        positions = {
            v: {sym: {k: float(x) for k, x in vals.items()} for sym, vals in syms.items()}
            for v, syms in s.positions.items()
        }
    orders = None
    if s.orders is not None:
        orders = [
            LogOrder(
                venue=o["venue"],
                symbol=o["symbol"],
                direction=o["side"],
                quantity=float(o["quantity"]),
                type=o["type"],
                filled=o["status"] == "FILLED",
                filled_quantity=float(o["filled"]),
                status=o["status"],
                client_order_id=o["client_order_id"],
            )
            for o in s.orders
        ]
    return LogStep(
        step=s.step,
        name=s.name,
        start_time=iso(s.start_time),
        end_time=iso(s.end_time),
        duration_seconds=s.duration_seconds,
        status=s.status.value,
        actions=s.actions,
        target_seconds=s.target_seconds,
        positions=positions,
        total_pnl=float(s.total_pnl) if s.total_pnl is not None else None,
        flatten_strategy=s.flatten_strategy,
        orders=orders,
        verification=s.verification,
    )


def build_log(app: Rollbot, incident: Incident) -> RollbackLog:
    steps = _steps(app, incident.id)
    rca = app.db.one("SELECT * FROM rca WHERE incident_id = ?", (incident.id,))
    final_pnl = None
    for s in steps:
        if s.verification and s.verification.get("start_nav") not in (None, "0"):
            final_pnl = float(s.verification["final_pnl"])
    total = (steps[-1].end_time - steps[0].start_time).total_seconds() if steps else 0.0
    return RollbackLog(
        rollback_id=f"rollback_{incident.opened_at:%Y%m%d}_{incident.seq:03d}",
        timestamp=iso(incident.opened_at),
        trigger=incident.trigger or f"Manual {incident.kind}",
        trigger_value=incident.trigger_value,
        trigger_threshold=incident.trigger_threshold,
        reason=incident.reason,
        steps=[_log_step(s) for s in steps],
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


def build_markdown(app: Rollbot, incident: Incident) -> str:
    log = build_log(app, incident)
    steps = _steps(app, incident.id)
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
                how = (
                    "; ".join(
                        f"{o['side']} {o['quantity']} {o['type']} → {o['status']}" for o in sent
                    )
                    or "not closed"
                )
                out.append(
                    f"| {venue} | {sym} | {vals['quantity']} | {vals['unrealized_pnl']} |"
                    f" {how} ({strategy}) |"
                )
    else:
        out.append("No positions were assessed in this incident.")
    out.append("")
    out += ["## PnL at rollback", ""]
    if assess and assess.total_pnl is not None:
        out.append(f"- Unrealized PnL when assessed: {float(assess.total_pnl):,.2f}")
    if log.final_pnl is not None:
        out.append(f"- NAV change over the rollback (final PnL): {log.final_pnl:,.2f}")
    out.append("")
    out += ["## Errors and issues encountered", ""]
    problems = [
        f"- Step {s.step} {s.name}: {s.status.value} — {'; '.join(s.actions)}"
        for s in steps
        if s.status.value in ("PARTIAL", "FAILED")
    ]
    problems += [
        f"- {e.kind} at {iso(e.at)}: {e.reason or ''} {e.data.get('symbol', '')}" for e in errors
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
            ),
            f"- {tick[bool(v['no_open_orders'])]} No open orders"
            + ("" if v["no_open_orders"] else f": {json.dumps(v['open_orders'])}"),
            f"- {tick[v['trading_state'] == 'HALTED']} Kill switch: {v['trading_state']}",
            f"- {tick[bool(v['shadow_mode_active'])]} Shadow mode: "
            + ("ENABLED" if v["shadow_mode_active"] else "NOT enabled"),
            f"- {tick[bool(v['live_trading_blocked'])]} Live trading: "
            + ("BLOCKED" if v["live_trading_blocked"] else "NOT blocked"),
            f"- {tick[not v['nav_loss_exceeds_threshold']]} NAV change "
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
    return "\n".join(out)


def build_png(app: Rollbot, incident: Incident) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = _steps(app, incident.id)
    start = steps[0].start_time if steps else incident.opened_at
    end = steps[-1].end_time if steps else incident.opened_at
    span = max((end - start).total_seconds(), 60.0)
    samples = NavSamples(app.db).list(
        since=start - timedelta(seconds=span * 3), until=end + timedelta(seconds=span)
    )
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    by_venue: dict[str, list[tuple[datetime, float]]] = {}
    for s in samples:
        by_venue.setdefault(s.venue, []).append((s.at, float(s.nav)))
    for venue, points in by_venue.items():
        base = points[0][1]
        ax.plot([p[0] for p in points], [p[1] - base for p in points], marker=".", label=venue)
    colors = {
        "SUCCESS": "tab:green",
        "PARTIAL": "tab:orange",
        "FAILED": "tab:red",
        "SKIPPED": "tab:gray",
    }
    for i, s in enumerate(steps):
        ax.axvline(s.start_time, color=colors[s.status.value], linestyle="--", linewidth=1)
        ax.annotate(
            f"{s.step} {s.name}",
            (s.start_time, 1.0 - 0.16 * (i % 3)),  # staggered: fast steps sit close together
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=7,
        )
    ax.set_title(
        f"{incident.id}: PnL (NAV change) around the incident"
        f" — {incident.final_status or 'RUNNING'}"
    )
    ax.set_ylabel("PnL vs first sample")
    ax.grid(alpha=0.3)
    if by_venue:
        ax.legend(loc="lower left")
    else:
        ax.text(0.5, 0.5, "no NAV samples recorded", transform=ax.transAxes, ha="center")
    fig.autofmt_xdate()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def render(app: Rollbot, incident_id: str, fmt: Format) -> bytes:
    incident = app.incidents.get(incident_id)
    if fmt == "json":
        return build_log(app, incident).model_dump_json(indent=2).encode()
    if fmt == "md":
        return build_markdown(app, incident).encode()
    if fmt == "png":
        return build_png(app, incident)
    raise BadInput(f"unknown report format {fmt!r}: use md, json or png")


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
