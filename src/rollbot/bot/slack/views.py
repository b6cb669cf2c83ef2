"""Block Kit renderers. Each takes plain data (from commands/ or the outbox) and returns
(fallback text, blocks). Nothing here decides anything."""

from __future__ import annotations

from typing import Any

from rollbot.bot.slack.ids import Action
from rollbot.commands.positions import VenueBook, coverage_line

Blocks = list[dict[str, Any]]
STATUS_EMOJI = {
    "SUCCESS": "✅",
    "PARTIAL": "⚠️",
    "FAILED": "❌",
    "SKIPPED": "⏭️",
    "RUNNING": "⏳",
    None: "⏳",
}
STATE_EMOJI = {"ACTIVE": "🟢", "REDUCING": "🟡", "HALTED": "🔴"}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:2990]}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:2990]}]}


def _button(text: str, action: Action, value: str, style: str | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action.value,
        "value": value,
    }
    if style:
        b["style"] = style
    return b


def headline(
    incident: dict[str, Any], steps: list[dict[str, Any]], extra: list[str]
) -> tuple[str, Blocks]:
    final = incident.get("final_status")
    emoji = STATUS_EMOJI.get(final, "⏳") if incident.get("phase") == "DONE" else "🚨"
    title = f"{emoji} *{incident['id']}* — {incident['kind'].upper()} — {incident['reason']}"
    lines = [
        title,
        f"*State:* {incident['status']} / {incident['phase']}" + (f" — *{final}*" if final else ""),
        f"*Scope:* `{incident['scope']}`   *Opened by:* {incident['opened_by_label']}"
        f" via {incident['source']} at {incident['opened_at']}",
    ]
    if incident.get("trigger"):
        trig = f"*Trigger:* {incident['trigger']}"
        if incident.get("trigger_value") is not None:
            trig += (
                f" (value {incident['trigger_value']}, threshold {incident['trigger_threshold']})"
            )
        lines.append(trig)
    for s in steps:
        lines.append(
            f"{STATUS_EMOJI.get(s['status'], '')} Step {s['step']} {s['name']}: {s['status']}"
            f" in {s['duration_seconds']:.2f} s (elapsed {s['elapsed_seconds']:.1f} s /"
            f" seed {s['cumulative_target_seconds']:.0f} s)"
        )
    pnl = _pnl_line(steps)
    if pnl:
        lines.append(pnl)
    lines += extra
    text = f"{incident['id']} {incident['kind']}: {incident['reason']}"
    return text, [_section("\n".join(lines)), _context("Updates in the thread below.")]


def _pnl_line(steps: list[dict[str, Any]]) -> str:
    parts = []
    for s in steps:
        if s.get("total_pnl") is not None:
            parts.append(f"unrealized at assessment {float(s['total_pnl']):,.2f}")
        v = s.get("verification") or {}
        if v.get("start_nav") not in (None, "0"):
            parts.append(f"NAV change {float(v['final_pnl']):,.2f} ({v['nav_change']:+.2%})")
    return "*PnL:* " + "; ".join(parts) if parts else ""


def step(data: dict[str, Any]) -> tuple[str, Blocks]:
    on_target = data["elapsed_seconds"] <= data["cumulative_target_seconds"]
    head = (
        f"{STATUS_EMOJI.get(data['status'], '')} *Step {data['step']} {data['name']}: "
        f"{data['status']}* in {data['duration_seconds']:.2f} s — elapsed "
        f"{data['elapsed_seconds']:.2f} s vs seed {data['cumulative_target_seconds']:.0f} s "
        + ("(on target)" if on_target else "(*OVER TARGET*)")
    )
    body = "\n".join(f"• {a}" for a in data.get("actions", []))
    if data.get("by"):
        body += f"\n_by {data['by']}_"
    return f"Step {data['step']} {data['name']}: {data['status']}", [
        _section(head),
        _section(body or "—"),
    ]


def outcome(data: dict[str, Any]) -> tuple[str, Blocks]:
    inc = data["incident"]
    final = data["final_status"]
    lines = [f"{STATUS_EMOJI.get(final, '')} *{inc['id']} {inc['kind']}: {final}*"]
    for venue, syms in (data.get("residual") or {}).items():
        lines.append(f"Still open at *{venue}*: " + ", ".join(f"{s} {q}" for s, q in syms.items()))
    for venue, n in (data.get("open_orders") or {}).items():
        lines.append(f"Open orders at *{venue}*: {n}")
    if data.get("unreachable"):
        lines.append("Unverified (unreachable): " + ", ".join(data["unreachable"]))
    if final == "SUCCESS" and inc["kind"] != "kill":
        lines.append("All flat, no open orders, trading HALTED, shadow/dry-run active.")
    lines.append(f"Report: `/rollback-report {inc['id']}`")
    return f"{inc['id']}: {final}", [_section("\n".join(lines))]


def positions(books: list[VenueBook]) -> tuple[str, Blocks]:
    blocks: Blocks = []
    for b in books:
        if b.error:
            blocks.append(_section(f"❌ *{b.venue}*: unreachable — {b.error}"))
            continue
        nav = f"NAV {b.account.nav:,.2f} {b.account.currency}" if b.account else ""
        rows = [
            f"*{b.venue}* — {nav} — exposure {b.exposure:,.2f} — unrealized PnL "
            f"{b.unrealized_pnl:,.2f}"
        ]
        rows += [
            f"`{p.symbol:<10}` {p.quantity:>10}  @ {p.market_price}  PnL {p.unrealized_pnl:,.2f}"
            for p in b.positions
        ] or ["no positions"]
        rows.append(
            f"{len(b.orders)} open orders"
            + (
                ": "
                + ", ".join(
                    f"{o.side.value} {o.remaining} {o.symbol} {o.type.value}" for o in b.orders[:15]
                )
                if b.orders
                else ""
            )
        )
        if len(b.orders) > 15:
            rows.append(f"… and {len(b.orders) - 15} more")
        if coverage_line(b):
            rows.append(coverage_line(b))
        blocks.append(_section("\n".join(rows)))
    total = sum(len(b.positions) for b in books)
    return f"Positions: {total} open across {len(books)} venue(s)", blocks


def plan_lines(orders: list[dict[str, Any]] | list[str]) -> str:
    if not orders:
        return "_nothing to close_"
    out = []
    for o in orders:
        out.append(
            f"• {o}"
            if isinstance(o, str)
            else f"• {o['venue']}: {o['side']} {o['quantity']} {o['symbol']} {o['type']}"
        )
    return "\n".join(out)


def approval(data: dict[str, Any]) -> tuple[str, Blocks]:
    """A two-person request; buttons only while it is pending."""
    status = data.get("status", "PENDING")
    who = data.get("requester_label") or data.get("requested_by", "?")
    head = (
        f"🔐 *{data.get('action', 'action')}* requested by {who}"
        f" — *{status}*  (`{data.get('id', '')}`)"
    )
    lines = [head]
    if data.get("reason"):
        lines.append(f"Reason: {data['reason']}")
    plan = data.get("plan_lines") or data.get("plan") or []
    if isinstance(plan, list):
        lines.append("*Exactly what will run:*\n" + plan_lines(plan))
    elif plan:
        lines.append(f"*Exactly what will run:* {plan}")
    if data.get("action") == "flatten":
        lines.append(
            "_Working orders on these symbols are cancelled first, so none can re-open a position._"
        )
    if data.get("plan_hash"):
        lines.append(f"Plan hash `{str(data['plan_hash'])[:12]}`")
    if data.get("decided_by"):
        lines.append(f"{status} by {data['decided_by']} at {data.get('decided_at', '')}")
    if data.get("expires_at") and status == "PENDING":
        lines.append(f"Expires at {data['expires_at']}")
    if data.get("note"):
        lines.append(data["note"])
    blocks: Blocks = [_section("\n".join(lines))]
    if status == "PENDING":
        value = str(data.get("id", ""))
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    _button("Approve", Action.APPROVE, value, "primary"),
                    _button("Deny", Action.DENY, value, "danger"),
                ],
            }
        )
    return head.replace("*", ""), blocks


def escalation_ping(data: dict[str, Any]) -> tuple[str, Blocks]:
    who = data.get("mentions") or data.get("contact") or ""
    if isinstance(who, list):
        who = " ".join(f"<@{u}>" for u in who if u)
    elif isinstance(who, dict):
        who = f"{who.get('name', '')} ({who.get('role', '')})"
    contacts = data.get("contacts") or []
    details = "\n".join(
        f"• {c.get('name', '')} — {c.get('role', '')} — {c.get('phone', '')} {c.get('email', '')}"
        for c in contacts
        if isinstance(c, dict)
    )
    text = (
        f"📟 Escalation tier {data.get('tier', '?')} for *{data.get('incident_id', '')}*: {who}"
        + (f" — {data['note']}" if data.get("note") else "")
    )
    blocks: Blocks = [_section(text)]
    if details:
        blocks.append(_section(details))
    blocks.append(
        {
            "type": "actions",
            "elements": [
                _button(
                    "Acknowledge",
                    Action.ESCALATION_ACK,
                    str(data.get("incident_id", "")),
                    "primary",
                )
            ],
        }
    )
    return text.replace("*", ""), blocks


def checklist(data: dict[str, Any]) -> tuple[str, Blocks]:
    incident = data.get("incident_id", "")
    items = data.get("items", [])
    options, initial = [], []
    for it in items:
        label = it.get("label", it.get("item", ""))
        due = it.get("due_at", "")
        opt = {
            "text": {"type": "mrkdwn", "text": f"{label}"[:75]},
            "description": {
                "type": "mrkdwn",
                "text": (
                    f"due {due}"
                    + (
                        f" — ✔ {it['ticked_by']} at {it.get('ticked_at', '')}"
                        if it.get("ticked_by")
                        else ""
                    )
                )[:75],
            },
            "value": f"{incident}|{it.get('item', '')}",
        }
        options.append(opt)
        if it.get("ticked_by"):
            initial.append(opt)
    title = data.get("title") or f"Post-rollback checklist for {incident}"
    blocks: Blocks = [_section(f"📋 *{title}*")]
    for chunk in range(0, len(options), 10):  # Slack allows 10 options per checkbox group
        element: dict[str, Any] = {
            "type": "checkboxes",
            "action_id": f"{Action.CHECKLIST_TICK.value}_{chunk // 10}",
            "options": options[chunk : chunk + 10],
        }
        sel = [o for o in initial if o in options[chunk : chunk + 10]]
        if sel:
            element["initial_options"] = sel
        blocks.append({"type": "actions", "elements": [element]})
    return title, blocks


def risk_alert(data: dict[str, Any]) -> tuple[str, Blocks]:
    text = (
        f"⚠️ *Risk alert: {data.get('trigger', '?')}* on {data.get('venue', 'all venues')} — value "
        f"{data.get('value')} vs threshold {data.get('threshold')}"
    )
    figures = data.get("figures") or {}
    lines = [text] + [f"• {k}: {v}" for k, v in figures.items()]
    if data.get("note"):
        lines.append(data["note"])
    value = str(data.get("alert_id") or data.get("id") or data.get("trigger", ""))
    return text.replace("*", ""), [
        _section("\n".join(lines)),
        {
            "type": "actions",
            "elements": [
                _button("Roll back now", Action.RISK_ROLLBACK, value, "danger"),
                _button("Acknowledge", Action.RISK_ACK, value),
            ],
        },
    ]


def generic(payload: dict[str, Any]) -> tuple[str, Blocks]:
    text = payload.get("text") or "(no text)"
    return text, [_section(text)]


RENDERERS = {
    "step": step,
    "outcome": outcome,
    "approval": approval,
    "escalation_ping": escalation_ping,
    "checklist": checklist,
    "risk_alert": risk_alert,
}


def render_payload(payload: dict[str, Any]) -> tuple[str, Blocks]:
    view = payload.get("view")
    data = payload.get("data")
    if view in RENDERERS and isinstance(data, dict):
        text, blocks = RENDERERS[view](data)
        return payload.get("text") or text, blocks
    return generic(payload)


def app_home(
    states: list[dict[str, Any]],
    incidents: list[dict[str, Any]],
    approvals: list[dict[str, Any]],
    gates: list[tuple[bool, str]],
    risk: list[str],
) -> dict[str, Any]:
    blocks: Blocks = [{"type": "header", "text": {"type": "plain_text", "text": "rollbot"}}]
    blocks.append(
        _section(
            "*Trading state*\n"
            + "\n".join(
                f"{STATE_EMOJI[s['state']]} `{s['scope']}` {s['state']}"
                + (
                    f" — {len(s['holds'])} hold(s): "
                    + "; ".join(f"{h['source']} by {h['actor']}: {h['reason']}" for h in s["holds"])
                    if s["holds"]
                    else ""
                )
                for s in states
            )
        )
    )
    blocks.append(
        _section(
            "*Open incidents*\n"
            + (
                "\n".join(
                    f"• {i['id']} {i['kind']} — {i['phase']} {i.get('final_status') or ''}"
                    f" — {i['reason']}"
                    for i in incidents
                )
                or "none"
            )
        )
    )
    blocks.append(
        _section(
            "*Pending approvals*\n"
            + (
                "\n".join(
                    f"• `{a['id']}` {a['action']} by {a['requested_by']}"
                    f" (expires {a['expires_at']})"
                    for a in approvals
                )
                or "none"
            )
        )
    )
    blocks.append(
        _section(
            "*Live gates*\n" + "\n".join(("✅ " if ok else "❌ ") + line for ok, line in gates)
        )
    )
    if risk:
        blocks.append(_section("*Risk monitors*\n" + "\n".join(risk)))
    return {"type": "home", "blocks": blocks}


def app_home_closed(roles: list[str]) -> dict[str, Any]:
    """The home tab of someone outside the desk: why it is empty, and how to get in."""
    return {
        "type": "home",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "rollbot"}},
            _section(
                f"The trading state is shown to the {' or '.join(roles)} roles only, and you"
                " have none of them. Ask whoever keeps rollbot's config to add your Slack user"
                " ID under `[roles]`."
            ),
        ],
    }


HELP = {
    "kill": "`/kill [scope] reason…` — halt trading now (scope: global, a venue, venue:V, "
    "account:V/ID, strategy:S). Never waits: holds HALTED, cancels every order, opens an"
    " incident.",
    "positions": "`/positions [venue] [public]` — positions, open orders, exposure and PnL per"
    " venue.",
    "flatten": "`/flatten [venue|all]` — show every closing order that would be sent, then ask a "
    "second person to approve.",
    "rollback": "`/rollback reason…` — halt, disconnect, assess, flatten, verify; each step posted "
    "in the incident thread.",
    "rollback-report": "`/rollback-report [incident]` — the report in the thread, JSON and PNG as"
    " files.",
    "incident": "`/incident [list|status ID|ack ID|rca ID|close ID reason…]` — `rca` opens the"
    " root-cause analysis form.",
    "gates": "`/gates [status|disable]` — the live trading gates.",
    "resume": "`/resume INCIDENT reason…` — back to live trading: needs 24 h in shadow, a recorded "
    "root-cause analysis and a passed drill, then a risk officer's approval.",
}
