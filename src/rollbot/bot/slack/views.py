"""Block Kit renderers. Each takes plain data (from commands/ or the outbox) and returns
(fallback text, blocks). Nothing here decides anything."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from rollbot.bot.slack.ids import Action
from rollbot.clock import parse_iso
from rollbot.commands.desk.money import money
from rollbot.commands.desk.mrkdwn import escape
from rollbot.commands.rollback.engine import StepReport
from rollbot.commands.rollback.positions import VenueBook, coverage_line
from rollbot.commands.rollback.report import RollbackLog, pnl_lines

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
# Block Kit limits (api.slack.com/reference/block-kit/blocks): 3000 characters per section
# text, 50 blocks per message
SECTION_MAX = 3000
BLOCKS_MAX = 50


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[: SECTION_MAX - 10]}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[: SECTION_MAX - 10]}]}


def sections(lines: list[str], limit: int = SECTION_MAX - 100) -> Blocks:
    """Lines packed into as many sections as they need, none cut (a longer line is split)."""
    out: Blocks = []
    buf = ""
    for line in lines:
        while len(line) > limit:
            if buf:
                out.append(_section(buf))
                buf = ""
            out.append(_section(line[:limit]))
            line = line[limit:]
        if buf and len(buf) + 1 + len(line) > limit:
            out.append(_section(buf))
            buf = ""
        buf = f"{buf}\n{line}" if buf else line
    if buf:
        out.append(_section(buf))
    return out


def _text_len(block: dict[str, Any]) -> int:
    text = (block.get("text") or {}).get("text", "")
    fields = sum(len(f.get("text", "")) for f in block.get("fields") or [])
    elements = sum(len(e.get("text", "")) for e in block.get("elements") or [] if "type" in e)
    return len(text) + fields + elements


def paginate(blocks: Blocks, budget: int = 0) -> list[Blocks]:
    """Blocks split into messages Slack takes: at most 50 blocks and `budget` characters each."""
    budget = budget or MESSAGE_TEXT_MAX
    pages: list[Blocks] = [[]]
    used = 0
    for block in blocks:
        size = _text_len(block)
        if pages[-1] and (used + size > budget or len(pages[-1]) >= BLOCKS_MAX):
            pages.append([])
            used = 0
        pages[-1].append(block)
        used += size
    return pages


def _split(text: str) -> Blocks:
    """A text in as many sections as it needs: nothing cut."""
    return sections(text.splitlines())


def when(value: Any) -> str:
    """A time each reader sees in their own time zone (Slack's <!date^…> token); the fallback
    after the | is UTC, for clients that cannot render it."""
    if not value:
        return ""
    try:
        moment = value if isinstance(value, datetime) else parse_iso(str(value))
    except ValueError:
        return escape(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time_secs}}|{fallback}>"


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
    """The title says what trading is now (the scope's state), never only how the run went:
    a kill that succeeded leaves trading HALTED, and the headline says HALTED."""
    final = incident.get("final_status")
    state = incident.get("trading_state")
    emoji = STATE_EMOJI.get(state or "", "🚨")
    reason = escape(incident["reason"])
    title = f"{emoji} *{incident['id']}* — {incident['kind'].upper()} — {reason}"
    run = f"{incident['phase']}" + (
        f" — {STATUS_EMOJI.get(final, '')} steps {final}" if final else ""
    )
    lines = [
        title,
        (f"*Trading:* {state} on `{incident['scope']}`   " if state else "")
        + f"*Incident:* {incident['status']}   *Run:* {run}",
        f"*Scope:* `{incident['scope']}`   *Opened by:* {incident['opened_by_label']}"
        f" via {incident['source']} {when(incident['opened_at'])}",
    ]
    if incident.get("trigger"):
        trig = f"*Trigger:* {escape(incident['trigger'])}"
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
    text = f"{incident['id']} {incident['kind']}" + (f" — trading {state}" if state else "")
    return text + f": {reason}", [*sections(lines), _context("Updates in the thread below.")]


def _pnl_line(steps: list[dict[str, Any]]) -> str:
    parts = []
    for s in steps:
        if s.get("total_pnl") is not None:
            parts.append(f"unrealized at assessment {money(s['total_pnl'])}")
        v = s.get("verification") or {}
        if v.get("start_nav") not in (None, "0"):
            cur = v.get("currency")
            if v.get("pnl_during_rollback") is not None:
                parts.append(f"during the rollback {money(v['pnl_during_rollback'], cur)}")
                parts.append(f"before the halt {money(v['pnl_before_halt'], cur)}")
            parts.append(
                f"final {money(v['final_pnl'], cur)} ({v['nav_change']:+.2%} since the session"
                " start)"
            )
    return "*PnL:* " + "; ".join(parts) if parts else ""


def step(data: dict[str, Any]) -> tuple[str, Blocks]:
    on_target = data["elapsed_seconds"] <= data["cumulative_target_seconds"]
    head = (
        f"{STATUS_EMOJI.get(data['status'], '')} *Step {data['step']} {data['name']}: "
        f"{data['status']}* in {data['duration_seconds']:.2f} s — elapsed "
        f"{data['elapsed_seconds']:.2f} s vs seed {data['cumulative_target_seconds']:.0f} s "
        + ("(on target)" if on_target else "(*OVER TARGET*)")
    )
    body = [f"• {escape(a)}" for a in data.get("actions", [])] or ["—"]
    if data.get("by"):
        body.append(f"_by {data['by']}_")
    return f"Step {data['step']} {data['name']}: {data['status']}", [
        _section(head),
        *sections(body),
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
        lines.append("Unverified (unreachable): " + escape(", ".join(data["unreachable"])))
    if final == "SUCCESS" and inc["kind"] != "kill":
        lines.append("All flat, no open orders, trading HALTED, shadow/dry-run active.")
    lines.append(f"Report: `/rollback-report {inc['id']}`")
    return f"{inc['id']}: {final}", sections(lines)


def positions(books: list[VenueBook]) -> tuple[str, Blocks]:
    blocks: Blocks = []
    for b in books:
        if b.error:
            blocks.append(_section(f"❌ *{b.venue}*: unreachable — {escape(b.error)}"))
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
        blocks.extend(sections(rows))
    total = sum(len(b.positions) for b in books)
    return f"Positions: {total} open across {len(books)} venue(s)", blocks


def positions_pages(books: list[VenueBook], max_pages: int) -> list[tuple[str, Blocks]]:
    """/positions as messages Slack takes; past `max_pages`, the last one says where the rest is."""
    text, blocks = positions(books)
    pages = paginate(blocks)
    shown = pages[:max_pages]
    if len(pages) > max_pages:
        left = sum(len(p) for p in pages[max_pages:])
        shown[-1].append(
            _context(
                f"… {left} more section(s) of positions not shown here: `rollbot positions` at"
                " the terminal lists every one."
            )
        )
    if len(shown) == 1:
        return [(text, shown[0])]
    return [(f"{text} (part {i} of {len(shown)})", p) for i, p in enumerate(shown, start=1)]


def plan_lines(orders: list[dict[str, Any]] | list[str]) -> list[str]:
    """One line per order (numbered, with its limit rule) or per plan line; all escaped."""
    if not orders:
        return ["_nothing to close_"]
    out, n = [], 0
    for o in orders:
        if isinstance(o, str):
            out.append(f"• {escape(o)}")
            continue
        n += 1
        note = f" ({escape(o['note'])}, set from the live mark when sent)" if o.get("note") else ""
        price = f" {escape(o['limit_now'])} now" if o.get("limit_now") else ""
        out.append(
            f"{n}. {escape(o['venue'])}: {escape(o['side'])} {escape(o['quantity'])}"
            f" {escape(o['symbol'])} {escape(o['type'])}{price}{note}"
        )
    return out


def plan_size(plan: Any) -> str:
    """What the button's card says about the plan's size: "300 orders", "4 plan lines"."""
    if not isinstance(plan, list):
        return "1 plan line"
    orders = sum(1 for o in plan if isinstance(o, dict))
    if orders:
        return f"{orders} order{'s' if orders != 1 else ''}"
    return f"{len(plan)} plan line{'s' if len(plan) != 1 else ''}"


# Slack refuses a message whose blocks hold more than ~13k characters in all
# (msg_blocks_too_long, github.com/slackapi/bolt-js/issues/2509), whatever the per-block limits
MESSAGE_TEXT_MAX = 12_000
_CARD_PLAN_MAX = 7_000  # the rest of the card: head, hash, reason (cut), note, buttons
_REASON_MAX = 1_500


def _take(lines: list[str], budget: int) -> tuple[list[str], list[str]]:
    """As many whole lines as fit in `budget` characters (at least one), and the rest."""
    used, n = 0, 0
    for line in lines:
        if n and used + len(line) + 1 > budget:
            break
        used += len(line) + 1
        n += 1
    return lines[:n], lines[n:]


def _plan_parts(data: dict[str, Any]) -> list[list[str]]:
    """The plan's lines: what the card shows, then each continuation message's share."""
    plan = data.get("plan_lines") or data.get("plan") or []
    lines = plan_lines(plan if isinstance(plan, list) else [str(plan)])
    first, rest = _take(lines, _CARD_PLAN_MAX)
    parts = [first]
    while rest:
        part, rest = _take(rest, MESSAGE_TEXT_MAX - 500)
        parts.append(part)
    return parts


def approval_continuations(data: dict[str, Any]) -> list[tuple[str, Blocks]]:
    """The plan's lines that do not fit in the card, as messages posted under it in order."""
    parts = _plan_parts(data)
    ident = escape(data.get("id", ""))
    out = []
    for i, part in enumerate(parts[1:], start=2):
        head = (
            f"🔐 *{ident} plan, part {i} of {len(parts)}* (hash"
            f" `{escape(data.get('plan_hash', ''))}`):"
        )
        out.append((f"{ident} plan, part {i} of {len(parts)}", sections([head, *part])))
    return out


def _cut(text: str, limit: int) -> str:
    """User text escaped, then cut at `limit` characters without splitting an entity."""
    out, used = [], 0
    for ch in text:
        piece = escape(ch)
        if used + len(piece) > limit:
            return "".join(out) + f" … _(cut: {len(text):,} characters in all)_"
        out.append(piece)
        used += len(piece)
    return "".join(out)


def approval(data: dict[str, Any]) -> tuple[str, Blocks]:
    """A two-person request; buttons only while it is pending. The plan comes first and whole
    (every order, over as many sections as it needs, continued in messages under the card when
    one message cannot hold it), then its hash; the requester's own words come after it,
    quoted and escaped, so they can never pose as plan."""
    status = data.get("status", "PENDING")
    who = data.get("requester_label") or escape(data.get("requested_by", "?"))
    plan = data.get("plan_lines") or data.get("plan") or []
    if not isinstance(plan, list):
        plan = [str(plan)]
    size = plan_size(plan)
    head = (
        f"🔐 *{escape(data.get('action', 'action'))}* requested by {who}"
        f" — *{status}*  (`{escape(data.get('id', ''))}`) — *{size}*"
    )
    blocks: Blocks = [_section(head)]
    parts = _plan_parts(data)
    blocks += sections(["*Exactly what will run:*", *parts[0]])
    if len(parts) > 1:
        blocks.append(
            _section(
                f"⚠️ *The plan continues below this card: parts 2 to {len(parts)}, same hash."
                f" All {size} run if approved: read every part first.*"
            )
        )
    tail = []
    if "flatten" in (data.get("action_id"), data.get("action")):
        tail.append(
            "_Working orders on these symbols are cancelled first, so none can re-open a position._"
        )
    if data.get("plan_hash"):
        tail.append(f"Plan hash `{escape(data['plan_hash'])}`")
    blocks += sections(tail) if tail else []
    if data.get("reason"):
        blocks += sections(
            ["*Reason given by the requester* (their words, not part of the plan):"]
            + [f"> {line}" for line in _cut(str(data["reason"]), _REASON_MAX).splitlines() or [""]]
        )
    lines = []
    if data.get("decided_by"):
        lines.append(f"{status} by {data['decided_by']} at {when(data.get('decided_at'))}")
    if data.get("expires_at") and status == "PENDING":
        lines.append(f"Expires {when(data['expires_at'])} unless approved.")
    if data.get("note"):
        lines.append(escape(data["note"]))
    if lines:
        blocks += sections(lines)
    if status == "PENDING":
        value = str(data.get("id", ""))
        approve = _button("Approve", Action.APPROVE, value, "primary")
        approve["confirm"] = {
            "title": {"type": "plain_text", "text": "Approve and run it now?"},
            "text": {  # plain text: nothing in it is markup, so nothing needs escaping
                "type": "plain_text",
                "text": (
                    f"This runs {data.get('action', 'the action')} {value} at once:"
                    f" {size}, plan hash {str(data.get('plan_hash', ''))[:12]}."
                )[:300],
            },
            "confirm": {"type": "plain_text", "text": "Approve"},
            "deny": {"type": "plain_text", "text": "Cancel"},
            "style": "danger",
        }
        blocks.append(
            {
                "type": "actions",
                "elements": [approve, _button("Deny", Action.DENY, value, "danger")],
            }
        )
    return head.replace("*", ""), blocks


def contact_line(c: dict[str, Any]) -> str:
    """Name — role — phone — email, leaving out what is not configured (no dangling dashes)."""
    role = str(c.get("role") or "").replace("_", " ")
    parts = [str(p).strip() for p in (c.get("name"), role, c.get("phone"), c.get("email"))]
    return "• " + escape(" — ".join(p for p in parts if p) or "(unnamed contact)")


def escalation_ping(data: dict[str, Any]) -> tuple[str, Blocks]:
    who = data.get("mentions") or data.get("contact") or ""
    if isinstance(who, list):
        who = " ".join(f"<@{u}>" for u in who if u)
    elif isinstance(who, dict):
        who = escape(f"{who.get('name', '')} ({who.get('role', '')})")
    contacts = data.get("contacts") or []
    details = "\n".join(contact_line(c) for c in contacts if isinstance(c, dict))
    text = (
        f"📟 Escalation tier {data.get('tier', '?')} for *{data.get('incident_id', '')}*: {who}"
        + (f" — {escape(data['note'])}" if data.get("note") else "")
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
        label = escape(it.get("label", it.get("item", "")))
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


ISO_TIME = re.compile(r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})")


def local_times(text: str) -> str:
    """The UTC ISO times commands write ("acknowledged at 2026-…Z") as date tokens."""
    return ISO_TIME.sub(lambda m: when(m.group(0)), text)


def generic(payload: dict[str, Any]) -> tuple[str, Blocks]:
    text = payload.get("text") or "(no text)"
    return text, sections(local_times(text).splitlines())


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
    blocks.extend(
        _split(
            "*Trading state*\n"
            + "\n".join(
                f"{STATE_EMOJI[s['state']]} `{s['scope']}` {s['state']}"
                + (
                    f" — {len(s['holds'])} hold(s): "
                    + "; ".join(
                        escape(f"{h['source']} by {h['actor']}: {h['reason']}") for h in s["holds"]
                    )
                    if s["holds"]
                    else ""
                )
                for s in states
            )
        )
    )
    blocks.extend(
        _split(
            "*Open incidents*\n"
            + (
                "\n".join(
                    f"• {i['id']} {i['kind']} — {i['phase']} {i.get('final_status') or ''}"
                    f" — {escape(i['reason'])}"
                    for i in incidents
                )
                or "none"
            )
        )
    )
    blocks.extend(
        _split(
            "*Pending approvals*\n"
            + (
                "\n".join(
                    f"• `{a['id']}` {a['action']} by {escape(a['requested_by'])}"
                    f" (expires {when(a['expires_at'])})"
                    for a in approvals
                )
                or "none"
            )
        )
    )
    blocks.extend(
        _split(
            "*Live gates*\n"
            + "\n".join(("✅ " if ok else "❌ ") + escape(line) for ok, line in gates)
        )
    )
    if risk:
        blocks.extend(_split("*Risk monitors*\n" + "\n".join(escape(r) for r in risk)))
    return {"type": "home", "blocks": blocks}


def armed_banner(failing: list[tuple[str, str, str]]) -> Blocks:
    """The App Home's red banner: each armed-status check that fails (name, reason, action)."""
    if not failing:
        return []
    lines = [
        f"🔴 *{name}*: {reason}\n      _What to do:_ {action}" for name, reason, action in failing
    ]
    return [
        _section("*🚨 The kill path is not fully armed*\n" + "\n".join(lines)),
        {"type": "divider"},
    ]


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
    " incident. `/kill reducing [scope] reason…` holds REDUCING instead: only orders that shrink"
    " a position pass (exits, never entries or flips); a full /kill of the scope still halts it."
    " Either hold is cleared the same way (`rollbot kill clear`, a second person approves).",
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


def _field(label: str, value: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": f"*{label}*\n{value or '—'}"[:2000]}


def step_table(steps: list[StepReport]) -> str:
    """The steps as aligned plain text (a code block in Slack, where tables do not render)."""
    rows = [("#", "Step", "Status", "Duration", "Elapsed / seed target")]
    for s in steps:
        mark = "" if s.on_target else "  OVER"
        rows.append(
            (
                str(s.step),
                s.name,
                s.status.value,
                f"{s.duration_seconds:.2f} s",
                f"{s.elapsed_seconds:.1f} s / {s.cumulative_target_seconds:.0f} s{mark}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        "  ".join(
            cell.rjust(widths[i]) if i in (0, 3) else cell.ljust(widths[i])
            for i, cell in enumerate(r)
        ).rstrip()
        for r in rows
    ]
    return "\n".join(lines)


def report(
    incident: dict[str, Any], steps: list[StepReport], log: RollbackLog
) -> tuple[str, Blocks]:
    """/rollback-report in Block Kit: header, the facts as fields, the steps as an aligned
    table, what was closed and what was verified. The Markdown, JSON and PNG go as files."""
    v = next((s.verification for s in log.steps if s.verification), None)
    pnl = [(label.split(" (")[0], amount) for label, amount in pnl_lines(v)]
    trigger = escape(log.trigger)
    if log.trigger_value is not None:
        trigger += f" (value {log.trigger_value}, threshold {log.trigger_threshold})"
    fields = [
        _field("Final status", f"{STATUS_EMOJI.get(log.final_status, '')} {log.final_status}"),
        _field("Trading now", incident.get("trading_state") or "unknown"),
        _field("Trigger", trigger),
        _field("Reason", escape(incident.get("reason") or "")),
        _field("Started by", f"{incident['opened_by_label']} via {incident['source']}"),
        _field("Opened", when(incident.get("opened_at"))),
        _field("Total duration", f"{log.total_duration_seconds:.1f} s (seed target 180 s)"),
    ]
    # at most 10 fields in a section: the PnL lines go in one
    fields.append(
        _field("PnL", "\n".join(f"{label}: {amount}" for label, amount in pnl) or "not measured")
    )
    blocks: Blocks = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": f"Rollback report {incident['id']}"[:150]},
        },
        {"type": "section", "fields": fields},  # at most 10 fields in a section
        _section("*Steps*\n```\n" + step_table(steps)[: SECTION_MAX - 40] + "\n```"),
    ]
    closed = [o for s in log.steps for o in (s.orders or [])]
    if closed:
        filled = sum(1 for o in closed if o.filled)
        blocks.append(
            _section(
                f"*Closing orders:* {len(closed)} sent, {filled} filled, {len(closed) - filled}"
                " not filled (each one is in the attached report)."
            )
        )
    if v is not None:
        checks = [
            ("all positions flat", v.all_positions_flat),
            ("no open orders", v.no_open_orders),
        ]
        line = ", ".join(("✅ " if ok else "❌ ") + name for name, ok in checks)
        if v.unreachable:
            line += "; unverified (unreachable): " + escape(", ".join(v.unreachable))
        blocks.append(_section(f"*Verified:* {line}"))
    blocks.append(_context("Markdown, JSON and PNG of this report are attached below."))
    return f"Rollback report {incident['id']}: {log.final_status}", blocks
