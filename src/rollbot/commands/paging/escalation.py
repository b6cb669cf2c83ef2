"""Escalation (IBKR seed, "Escalation"): page tier 1; if nobody acknowledges within the wait,
page the next tier; after the last tier, repeat the chain `repeat` more times, then say it is
exhausted. A loss above the critical threshold pages every tier at once.

The chain (contacts resolved per tier, the wait, the repeat count, the threshold) is copied into
the escalations row when the escalation starts, so editing the config later does not change a
running escalation. Each step is one write transaction: the deadline's claim, the check of the
escalation's run token / tier / round, the new state, its events, its outbox messages and the
next deadline commit together — a deadline fired twice pages once.

People are reached only through the outbox (a DM per contact, one mention in the incident
thread with an Acknowledge button) and through webhook deadlines (commands/paging/webhooks.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel

from rollbot.clock import iso, parse_iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.desk.mrkdwn import escape
from rollbot.commands.paging import ack_reminders, webhooks
from rollbot.config import Settings
from rollbot.errors import BadInput, NotFound, Refused
from rollbot.storage.db import dumps, loads
from rollbot.storage.events import Actor
from rollbot.storage.incidents import Incident
from rollbot.storage.timers import Timer, Timers

TIMER_KIND = "escalation"
ACTIVE, ACKED, EXHAUSTED = "ACTIVE", "ACKED", "EXHAUSTED"
SWEEP_WINDOW = timedelta(hours=1)  # the clock starts escalations for incidents this recent


class ChainContact(BaseModel):
    name: str
    role: str
    slack_id: str = ""
    phone: str = ""
    email: str = ""
    webhook_url: str | None = None
    webhook_format: str = "json"
    webhook_key_env: str = ""

    def card(self) -> dict[str, str]:
        """What a ping shows about a contact (never the webhook)."""
        return {
            "name": self.name,
            "role": self.role,
            "slack_id": self.slack_id,
            "phone": self.phone,
            "email": self.email,
        }

    @property
    def label(self) -> str:
        return f"<@{self.slack_id}>" if self.slack_id else f"{self.name} ({self.role})"


class ChainTier(BaseModel):
    roles: list[str]
    contacts: list[ChainContact]


class Chain(BaseModel):
    tiers: list[ChainTier]
    wait_s: float
    repeat: int
    critical_loss: Decimal
    skipped_roles: list[str] = []  # tiers dropped because no contact holds their roles

    @property
    def rounds(self) -> int:
        return 1 + self.repeat

    @property
    def roles(self) -> set[str]:
        return {r for t in self.tiers for r in t.roles}

    def contacts(self, tiers: list[int] | None = None) -> list[ChainContact]:
        chosen = range(len(self.tiers)) if tiers is None else tiers
        return [c for i in chosen for c in self.tiers[i].contacts]


class Escalation(BaseModel):
    id: int
    incident_id: str
    chain: Chain
    tier: int  # 0-based: the last tier paged
    round: int  # 0-based
    run_token: str
    status: str
    acked_by: str | None = None
    acked_at: datetime | None = None
    critical: bool = False
    loss: Decimal | None = None
    created_at: datetime

    def paged_tiers(self) -> list[int]:
        if self.critical or self.round > 0:
            return list(range(len(self.chain.tiers)))
        return list(range(min(self.tier, len(self.chain.tiers) - 1) + 1))


def snapshot_chain(settings: Settings) -> Chain:
    """Resolve each tier's roles to the configured contacts (by priority) as they are now."""
    cfg = settings.escalation
    tiers, skipped = [], []
    for tier in cfg.tiers:
        contacts = [  # stored: the webhook URL only as redact_url shows it
            ChainContact(
                **c.model_dump(exclude={"priority", "webhook_url"}),
                webhook_url=webhooks.redact_url(c.webhook_url) if c.webhook_url else None,
            )
            for role in tier.roles
            for c in sorted(
                (c for c in settings.contacts if c.role == role), key=lambda c: c.priority
            )
        ]
        if contacts:
            tiers.append(ChainTier(roles=list(tier.roles), contacts=contacts))
        else:
            skipped.extend(tier.roles)
    return Chain(
        tiers=tiers,
        wait_s=cfg.wait_minutes * 60,
        repeat=cfg.repeat,
        critical_loss=cfg.critical_loss,
        skipped_roles=skipped,
    )


def _row(row: dict[str, Any]) -> Escalation:
    return Escalation(
        id=row["id"],
        incident_id=row["incident_id"],
        chain=Chain.model_validate(loads(row["chain"])),
        tier=row["tier"],
        round=row["round"],
        run_token=row["run_token"],
        status=row["status"],
        acked_by=row["acked_by"],
        acked_at=parse_iso(row["acked_at"]) if row["acked_at"] else None,
        critical=bool(row["critical"]),
        loss=Decimal(row["loss"]) if row["loss"] is not None else None,
        created_at=parse_iso(row["created_at"]),
    )


def get_escalation(app: Rollbot, incident_id: str) -> Escalation | None:
    row = app.db.one("SELECT * FROM escalations WHERE incident_id = ?", (incident_id,))
    return _row(row) if row else None


def _money(value: Decimal) -> str:
    return f"${value:,.2f}"


def _as_loss(loss: Decimal | float | int | str) -> Decimal:
    try:
        value = Decimal(str(loss))
    except InvalidOperation:
        raise BadInput(f"loss must be a number, got {loss!r}") from None
    if not value.is_finite():
        raise BadInput(f"loss must be a finite number, got {loss!r}")
    return value


# -- state --------------------------------------------------------------------------------------
def _save(app: Rollbot, esc: Escalation, **changes: Any) -> Escalation:
    """Write the new state with a fresh run token: every deadline set before it goes stale."""
    new = esc.model_copy(update={**changes, "run_token": secrets.token_hex(8)})
    app.db.execute(
        "UPDATE escalations SET tier = ?, round = ?, run_token = ?, status = ?, acked_by = ?,"
        " acked_at = ?, critical = ?, loss = ?, updated_at = ? WHERE id = ?",
        (
            new.tier,
            new.round,
            new.run_token,
            new.status,
            new.acked_by,
            iso(new.acked_at) if new.acked_at else None,
            int(new.critical),
            str(new.loss) if new.loss is not None else None,
            iso(app.clock.now()),
            new.id,
        ),
    )
    return new


def _set_deadline(app: Rollbot, esc: Escalation) -> Timer:
    return Timers(app.db, app.clock).schedule(
        TIMER_KIND,
        esc.incident_id,
        app.clock.now() + timedelta(seconds=esc.chain.wait_s),
        {"escalation_id": esc.id, "run_token": esc.run_token, "tier": esc.tier, "round": esc.round},
    )


def _wait_text(esc: Escalation) -> str:
    minutes = esc.chain.wait_s / 60
    return f"{minutes:g} min" if minutes >= 1 else f"{esc.chain.wait_s:g} s"


def _next_text(esc: Escalation) -> str:
    """What happens if nobody acknowledges this ping."""
    last_tier = len(esc.chain.tiers) - 1
    if not esc.critical and esc.tier < last_tier:
        return f"Acknowledge within {_wait_text(esc)}, or tier {esc.tier + 2} is paged."
    if esc.round + 1 < esc.chain.rounds:
        # the round this page belongs to, not the next one: "round 2 of 3" on a first page
        # read as if a round had already gone unanswered
        return (
            f"Round {esc.round + 1} of {esc.chain.rounds}: acknowledge within"
            f" {_wait_text(esc)}, or the chain is paged again from tier 1."
        )
    return f"Last page: if nobody acknowledges within {_wait_text(esc)}, nobody else is paged."


def _details(
    esc: Escalation, incident: Incident, tiers: list[int], now: datetime
) -> dict[str, Any]:
    """What a webhook page carries (no contact details: the receiver has its own)."""
    return {
        "escalation_id": esc.id,
        "summary": f"rollbot {incident.id} ({incident.kind}): {incident.reason}",
        "reason": incident.reason,
        "kind": incident.kind,
        "scope": incident.scope,
        "tier": tiers[0] + 1,
        "tiers": [t + 1 for t in tiers],
        "round": esc.round + 1,
        "critical": esc.critical,
        "loss": str(esc.loss) if esc.loss is not None else None,
        "at": iso(now),
    }


def _ping(
    app: Rollbot,
    esc: Escalation,
    tiers: list[int],
    *,
    reason: str,
    note: str,
    lag_s: float | None = None,
) -> None:
    """Page these tiers: a DM per contact, one thread mention, a webhook per webhook contact."""
    incident = app.incidents.get(esc.incident_id)
    contacts = esc.chain.contacts(tiers)
    cards = [c.card() for c in contacts]
    mentions = list(dict.fromkeys(c.slack_id for c in contacts if c.slack_id))
    event_data: dict[str, Any] = {
        "escalation_id": esc.id,
        "tier": tiers[0] + 1,
        "tiers": [t + 1 for t in tiers],
        "round": esc.round + 1,
        "rounds": esc.chain.rounds,
        "contacts": [c.name for c in contacts],
        "critical": esc.critical,
        "reason": reason,
    }
    if lag_s is not None:
        event_data["lag_s"] = lag_s
    app.events.append(
        "ESCALATION_PINGED",
        Actor.clock(TIMER_KIND),
        incident_id=esc.incident_id,
        reason=note,
        data=event_data,
    )
    tier_text = (
        f"tier {tiers[0] + 1}"
        if len(tiers) == 1
        else "every tier (" + ", ".join(str(t + 1) for t in tiers) + ")"
    )
    base = {
        "incident_id": esc.incident_id,
        "escalation_id": esc.id,
        "tier": tiers[0] + 1,
        "tiers": [t + 1 for t in tiers],
        "round": esc.round + 1,
        "rounds": esc.chain.rounds,
        "critical": esc.critical,
        "note": note,
    }
    key = f"esc:{esc.id}:{esc.run_token}"
    for c in contacts:
        if not c.slack_id:
            continue
        app.outbox.put(
            "dm",
            incident_id=esc.incident_id,
            target=c.slack_id,
            text=f"📟 You are paged for {esc.incident_id} ({tier_text}):"
            f" {escape(incident.reason)}. {note}",
            view="escalation_ping",
            data={**base, "contact": c.card(), "contacts": [c.card()]},
            dedupe_key=f"{key}:dm:{c.slack_id}",
        )
    who = " ".join(c.label for c in contacts)
    app.outbox.put(
        "thread",
        incident_id=esc.incident_id,
        text=f"📟 Escalation {tier_text} for {esc.incident_id}: {who} — {note}",
        view="escalation_ping",
        data={**base, "mentions": mentions, "contacts": cards},
        dedupe_key=f"{key}:thread",
    )
    details = _details(esc, incident, tiers, app.clock.now())
    _queue_webhooks(app, esc.incident_id, contacts, "trigger", details)


def _queue_webhooks(
    app: Rollbot,
    incident_id: str,
    contacts: list[ChainContact],
    event: webhooks.WebhookEvent,
    details: dict[str, Any],
) -> None:
    """One page per webhook URL among these contacts (a shared PagerDuty service once)."""
    seen: set[str] = set()
    for c in contacts:
        target = c.webhook_url and webhooks.page_target(app.settings, c.name, c.webhook_url)
        if target and target not in seen:  # one page per receiver
            seen.add(target)
            webhooks.queue(app, incident_id, c.model_dump(), event, {**details, "contact": c.name})


# -- commands -----------------------------------------------------------------------------------
def start_escalation(
    app: Rollbot,
    incident_id: str,
    actor: Actor,
    loss: Decimal | float | str | None = None,
) -> Escalation:
    """Snapshot the chain, page tier 1 (every tier when `loss` > critical_loss), set the deadline.

    Idempotent per incident: a second call returns the running escalation (and, with a loss,
    applies `check_loss`). `loss` is the amount lost, a positive number.
    """
    value = _as_loss(loss) if loss is not None else None
    with app.db.write():
        incident = app.incidents.get(incident_id)
        existing = get_escalation(app, incident_id)
        if existing is not None:
            if value is not None:
                return check_loss(app, incident_id, value, actor) or existing
            return existing
        chain = snapshot_chain(app.settings)
        critical = value is not None and value > chain.critical_loss and bool(chain.tiers)
        now = app.clock.now()
        cur = app.db.execute(
            "INSERT INTO escalations (incident_id, chain, tier, round, run_token, status,"
            " critical, loss, created_at, updated_at) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?)",
            (
                incident.id,
                dumps(chain.model_dump(mode="json")),
                len(chain.tiers) - 1 if critical else 0,
                secrets.token_hex(8),
                ACTIVE if chain.tiers else EXHAUSTED,
                int(critical),
                str(value) if value is not None else None,
                iso(now),
                iso(now),
            ),
        )
        esc = get_escalation(app, incident.id)
        assert esc is not None
        app.events.append(
            "ESCALATION_STARTED",
            actor,
            incident_id=incident.id,
            data={
                "escalation_id": int(cur.lastrowid or esc.id),
                "tiers": [
                    {"roles": t.roles, "contacts": [c.name for c in t.contacts]}
                    for t in chain.tiers
                ],
                "skipped_roles": chain.skipped_roles,
                "wait_s": chain.wait_s,
                "rounds": chain.rounds,
                "critical_loss": str(chain.critical_loss),
                "loss": str(value) if value is not None else None,
                "critical": critical,
            },
        )
        if not chain.tiers:
            app.events.append(
                "ESCALATION_EXHAUSTED",
                Actor.clock(TIMER_KIND),
                incident_id=incident.id,
                reason="no escalation contacts configured",
                data={"escalation_id": esc.id, "rounds": 0},
            )
            app.outbox.put(
                "thread",
                incident_id=incident.id,
                text="⚠️ Nobody can be paged for this incident: no contact is configured for "
                f"the escalation roles ({', '.join(chain.skipped_roles) or 'none'}). "
                "Add [[contacts]] to rollbot.toml.",
            )
            return esc
        if critical:
            assert value is not None
            _ping(
                app,
                esc,
                list(range(len(chain.tiers))),
                reason="critical_loss",
                note=f"Loss {_money(value)} exceeds the critical {_money(chain.critical_loss)}: "
                f"every tier is paged at once. {_next_text(esc)}",
            )
        else:
            _ping(app, esc, [0], reason="start", note=_next_text(esc))
        if chain.skipped_roles:
            app.outbox.put(
                "thread",
                incident_id=incident.id,
                text="⚠️ No contact is configured for "
                f"{', '.join(chain.skipped_roles)}: those tiers are skipped.",
            )
        _set_deadline(app, esc)
        app.outbox.put("headline", incident_id=incident.id)
        return esc


def on_deadline(app: Rollbot, timer: Timer, lag_s: float) -> None:
    """Timer handler (inside the claim's transaction): no ack in time -> the next step."""
    p = timer.payload
    esc = get_escalation(app, timer.ref)
    current = esc is not None and (
        esc.status == ACTIVE
        and esc.run_token == p.get("run_token")
        and esc.tier == p.get("tier")
        and esc.round == p.get("round")
    )
    if esc is None or not current:
        app.events.append(
            "ESCALATION_DEADLINE_IGNORED",
            Actor.clock(TIMER_KIND),
            incident_id=timer.ref,
            reason="the escalation moved on (acknowledged, exhausted or already advanced)",
            data={"timer_id": timer.id, "status": esc.status if esc else None, "lag_s": lag_s},
        )
        return None
    last_tier = len(esc.chain.tiers) - 1
    if not esc.critical and esc.tier < last_tier:
        esc = _save(app, esc, tier=esc.tier + 1)
        _ping(app, esc, [esc.tier], reason="deadline", note=_next_text(esc), lag_s=lag_s)
        _set_deadline(app, esc)
    elif esc.round + 1 < esc.chain.rounds:
        tiers = list(range(len(esc.chain.tiers))) if esc.critical else [0]
        esc = _save(app, esc, tier=tiers[-1], round=esc.round + 1)
        app.events.append(
            "ESCALATION_REPEATED",
            Actor.clock(TIMER_KIND),
            incident_id=esc.incident_id,
            data={"escalation_id": esc.id, "round": esc.round + 1, "rounds": esc.chain.rounds},
        )
        app.outbox.put(
            "thread",
            incident_id=esc.incident_id,
            text=f"🔁 Nobody acknowledged {esc.incident_id} after every tier was paged: "
            f"paging the chain again from tier 1 (round {esc.round + 1} of {esc.chain.rounds}).",
            data={"incident_id": esc.incident_id, "round": esc.round + 1},
            dedupe_key=f"esc:{esc.id}:{esc.run_token}:repeat",
        )
        _ping(app, esc, tiers, reason="repeat", note=_next_text(esc), lag_s=lag_s)
        _set_deadline(app, esc)
    else:
        esc = _save(app, esc, status=EXHAUSTED)
        app.events.append(
            "ESCALATION_EXHAUSTED",
            Actor.clock(TIMER_KIND),
            incident_id=esc.incident_id,
            reason="nobody acknowledged",
            data={"escalation_id": esc.id, "rounds": esc.chain.rounds, "lag_s": lag_s},
        )
        phones = "; ".join(
            f"{c.name} ({c.role}) {c.phone} {c.email}".strip() for c in esc.chain.contacts()
        )
        app.outbox.put(
            "thread",
            incident_id=esc.incident_id,
            text=f"🚨 Escalation for {esc.incident_id} is exhausted: nobody acknowledged after "
            f"{esc.chain.rounds} round(s) of every tier. Call them directly: {phones}",
            data={"incident_id": esc.incident_id, "rounds": esc.chain.rounds},
            dedupe_key=f"esc:{esc.id}:exhausted",
        )
        app.outbox.put("headline", incident_id=esc.incident_id)
    return None


def may_acknowledge(app: Rollbot, esc: Escalation, actor: Actor) -> bool:
    """Anyone on the chain, or anyone holding one of its roles (settings.roles)."""
    allowed = {c.slack_id for c in esc.chain.contacts() if c.slack_id}
    for role in esc.chain.roles:
        allowed.update(app.settings.roles.get(role, []))  # type: ignore[call-overload]
    return not allowed or actor.id in allowed


def acknowledge(app: Rollbot, incident_id: str, actor: Actor) -> Escalation:
    """Stop the escalation: cancel its deadlines and say in the thread who took it, and when.

    Acknowledging twice is harmless (the first one stands). Refused for someone neither on the
    chain nor holding one of its roles; NotFound when the incident has no escalation.
    """
    with app.db.write():
        esc = get_escalation(app, incident_id)
        if esc is None:
            app.incidents.get(incident_id)  # NotFound for an unknown incident
            raise NotFound(f"{incident_id} has no escalation to acknowledge")
        if esc.status == ACKED:
            return esc
        if not may_acknowledge(app, esc, actor):
            roles = ", ".join(sorted(esc.chain.roles))
            raise Refused(
                f"{actor.label} is not on {incident_id}'s escalation chain and holds none of its "
                f"roles ({roles}): one of them must acknowledge",
                code="NOT_ON_CHAIN",
            )
        now = app.clock.now()
        cancelled = Timers(app.db, app.clock).cancel(TIMER_KIND, incident_id)
        paged = esc.paged_tiers()
        esc = _save(app, esc, status=ACKED, acked_by=actor.id, acked_at=now)
        app.events.append(
            "ESCALATION_ACKED",
            actor,
            incident_id=incident_id,
            data={
                "escalation_id": esc.id,
                "acked_by": actor.id,
                "acked_at": iso(now),
                "tier": esc.tier + 1,
                "round": esc.round + 1,
                "cancelled_timers": cancelled,
            },
        )
        app.outbox.put(
            "thread",
            incident_id=incident_id,
            text=f"✅ Acknowledged by {actor.label} at {iso(now)}: escalation stopped.",
            data={"incident_id": incident_id, "acked_by": actor.id, "acked_at": iso(now)},
            dedupe_key=f"esc:{esc.id}:ack",
        )
        app.outbox.put("headline", incident_id=incident_id)
        ack_reminders.schedule(app, incident_id, actor.id)
        details = {"escalation_id": esc.id, "acked_by": actor.id, "at": iso(now)}
        _queue_webhooks(app, incident_id, esc.chain.contacts(paged), "acknowledge", details)
        return esc


def close_incident(app: Rollbot, incident_id: str, actor: Actor, reason: str) -> Incident:
    """Close the incident, stop its escalation and reminders, and resolve its webhook pages
    (PagerDuty's incident is resolved under the same dedup key), in one transaction."""
    with app.db.write():
        incident = app.incidents.get(incident_id)
        if not incident.is_open:
            return incident
        closed = app.incidents.close(incident_id, actor, reason)
        stopped = Timers(app.db, app.clock).cancel(TIMER_KIND, incident_id)
        ack_reminders.cancel(app, incident_id)
        esc = get_escalation(app, incident_id)
        if esc is not None:
            if stopped:  # a closed incident pages nobody any more
                app.events.append(
                    "ESCALATION_STOPPED",
                    actor,
                    incident_id=incident_id,
                    reason="the incident was closed",
                    data={"escalation_id": esc.id, "cancelled_timers": stopped},
                )
            details = {"closed_by": actor.id, "reason": reason}
            _queue_webhooks(
                app, incident_id, esc.chain.contacts(esc.paged_tiers()), "resolve", details
            )
    return closed


def check_loss(
    app: Rollbot, incident_id: str, loss: Decimal | float | str, actor: Actor | None = None
) -> Escalation | None:
    """A loss above the chain's critical threshold pages every tier at once (once).

    Starts the escalation if there is none yet; a running one goes to every tier now and
    repeats as whole rounds; an acknowledged or exhausted one pages every tier once more.
    None when there is no escalation and the loss is not critical.
    """
    value = _as_loss(loss)
    who = actor or Actor.clock("loss")
    with app.db.write():
        esc = get_escalation(app, incident_id)
        if esc is None:
            if value > app.settings.escalation.critical_loss:
                return start_escalation(app, incident_id, who, loss=value)
            return None
        if esc.critical or not esc.chain.tiers or value <= esc.chain.critical_loss:
            return esc
        everyone = list(range(len(esc.chain.tiers)))
        was = esc.status
        if was == ACTIVE:
            Timers(app.db, app.clock).cancel(TIMER_KIND, incident_id)
            esc = _save(app, esc, critical=True, loss=value, tier=everyone[-1])
        else:
            esc = _save(app, esc, critical=True, loss=value)
        app.events.append(
            "ESCALATION_CRITICAL",
            who,
            incident_id=incident_id,
            data={
                "escalation_id": esc.id,
                "loss": str(value),
                "critical_loss": str(esc.chain.critical_loss),
                "status": esc.status,
            },
        )
        head = (
            f"Loss {_money(value)} exceeds the critical {_money(esc.chain.critical_loss)}: "
            "every tier is paged at once."
        )
        if was == ACTIVE:
            _ping(app, esc, everyone, reason="critical_loss", note=f"{head} {_next_text(esc)}")
            _set_deadline(app, esc)
        else:
            tail = (
                f" Already acknowledged by <@{esc.acked_by}>." if esc.acked_by else " (No repeat.)"
            )
            _ping(app, esc, everyone, reason="critical_loss", note=head + tail)
        app.outbox.put("headline", incident_id=incident_id)
        return esc


# -- losses from the venues' PnL, for the engine and the clock ----------------------------------
def _step_loss(data: dict[str, Any]) -> Decimal | None:
    """The loss a STEP_ENDED report shows: step 3's unrealized PnL, step 5's NAV change."""
    figures = [data.get("total_pnl")]
    verification = data.get("verification") or {}
    if verification.get("start_nav") not in (None, "0", "0.0"):
        figures.append(verification.get("final_pnl"))
    losses = []
    for f in figures:
        if f in (None, ""):
            continue
        try:
            pnl = Decimal(str(f))
        except InvalidOperation:
            continue
        if pnl.is_finite() and pnl < 0:
            losses.append(-pnl)
    return max(losses) if losses else None


STEP_REPORTS_SQL = (
    "SELECT data FROM events INDEXED BY events_step_ended"
    " WHERE incident_id = ? AND kind = 'STEP_ENDED' ORDER BY id"
)


def loss_from_events(app: Rollbot, incident_id: str) -> Decimal | None:
    # only the step reports' JSON, through the STEP_ENDED partial index: an open incident may
    # hold thousands of order events, and the clock's sweep asks every 30 s
    rows = app.db.query(STEP_REPORTS_SQL, (incident_id,))
    losses = [loss for r in rows if (loss := _step_loss(loads(r["data"]) or {})) is not None]
    return max(losses) if losses else None


def escalate_incident(app: Rollbot, incident_id: str, actor: Actor) -> Escalation:
    """For the engine and the clock: start (or top up) with the loss the steps reported so far."""
    return start_escalation(app, incident_id, actor, loss=loss_from_events(app, incident_id))


def loss_watcher(app: Rollbot, incident_id: str, actor: Actor) -> Callable[[Any], None]:
    """An Engine `on_step` callback: each step report's loss goes through check_loss."""

    def on_step(report: Any) -> None:
        data = report.model_dump(mode="json") if hasattr(report, "model_dump") else dict(report)
        loss = _step_loss(data)
        if loss is not None:
            check_loss(app, incident_id, loss, actor)

    return on_step


# What the sweep reads: open incidents only (the incidents_open partial index, named so that no
# statistics talk the planner into a scan of the history), so its cost is the open work's. A
# closed incident's steps are over: nothing new to page.
UNESCALATED_SQL = (
    "SELECT i.id FROM incidents i INDEXED BY incidents_open"
    " LEFT JOIN escalations e ON e.incident_id = i.id"
    " WHERE i.status = 'OPEN' AND e.id IS NULL AND i.opened_at >= ? ORDER BY i.seq"
)
LOSS_WATCH_SQL = (
    "SELECT e.incident_id FROM incidents i INDEXED BY incidents_open"
    " JOIN escalations e ON e.incident_id = i.id"
    " WHERE i.status = 'OPEN' AND e.critical = 0 AND e.status != ? ORDER BY i.seq"
)


def sweep(app: Rollbot) -> dict[str, int]:
    """The clock's safety net: escalate recent open incidents nobody escalated (opened from the
    terminal or by a monitor), and page everyone when a step reported a critical loss.
    `checked` counts the incidents whose step reports were read."""
    started = critical = checked = 0
    since = iso(app.clock.now() - SWEEP_WINDOW)
    for r in app.db.query(UNESCALATED_SQL, (since,)):
        escalate_incident(app, r["id"], Actor.clock(TIMER_KIND))
        started += 1
    for r in app.db.query(LOSS_WATCH_SQL, (EXHAUSTED,)):
        checked += 1
        loss = loss_from_events(app, r["incident_id"])
        if loss is not None:
            before = get_escalation(app, r["incident_id"])
            after = check_loss(app, r["incident_id"], loss)
            if before and after and after.critical and not before.critical:
                critical += 1
    return {"started": started, "critical": critical, "checked": checked}
