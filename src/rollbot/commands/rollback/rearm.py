"""Re-arming live trading: the one rule every path that could do it calls.

A scope is *armed* when the live gates allow live trading and no hold governs it (its state,
with global's and, for an account, its venue's, is ACTIVE: new risk may be opened there). The
scopes looked at are global, every configured venue and every scope a hold names. An action
*re-arms* live trading when some scope is armed after it and was not before: enabling the gates
while a scope has no hold, or clearing the last hold of a scope while the gates are live.

Only `resume` may re-arm, and only when the resume conditions (commands/rollback/resume.py) hold for
the incident it names and every incident opened since the last resume. Any other path — an
approved `enable_gates` or `clear_hold` — that would re-arm is refused, naming `/resume`, while
an incident since the last resume exists; with none (a desk that has never had one, one
resumed since, or one whose incidents were all settled before this rule existed: resume.py's
baseline) it is left to the two-person rule alone. Clearing holds while the gates are off,
or arming the gates while every scope is held, re-arms nothing and is not refused here: the
re-arm happens at the later step, which is checked then.

`execute_resume`, the one action allowed to re-arm, lives here beside the rule it obeys; the
resume conditions it checks are in resume.py, which never imports this module.
"""

from __future__ import annotations

from collections.abc import Iterable

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.trading_state import TradingState, strictest
from rollbot.commands.rollback.resume import incident_holds, incidents_since_resume, resume_blockers
from rollbot.errors import Refused
from rollbot.storage.events import Actor
from rollbot.storage.holds import Hold

RESUME_REQUIRED = "RESUME_REQUIRED"


def _governing(scope: str) -> set[str]:
    scopes = {"global", scope}
    if scope.startswith("account:"):
        scopes.add(f"venue:{scope[8:].partition('/')[0]}")
    return scopes


def armed_scopes(
    app: Rollbot, gates_live: bool, holds: list[Hold], named: Iterable[str] = ()
) -> set[str]:
    """The scopes where new risk may be opened live, given the gates and these active holds;
    `named` adds scopes to look at (those of holds about to be cleared: an account's or a
    strategy's scope is armed once its last hold goes, although no hold names it any more)."""
    if not gates_live:
        return set()
    scopes = {
        "global",
        *(f"venue:{v}" for v in app.venue_names),
        *(h.scope for h in holds),
        *named,
    }
    return {
        scope
        for scope in scopes
        if strictest([TradingState(h.state) for h in holds if h.scope in _governing(scope)])
        is TradingState.ACTIVE
    }


def newly_armed(
    app: Rollbot, *, arm_gates: bool = False, clear_ids: Iterable[int] = ()
) -> list[str]:
    """The scopes this change (arming the gates, clearing these holds) would arm."""
    holds = app.killswitch.holds.active()
    live = app.gates.live_allowed()
    cleared = set(clear_ids)
    named = {h.scope for h in holds}
    before = armed_scopes(app, live, holds, named)
    after = armed_scopes(app, live or arm_gates, [h for h in holds if h.id not in cleared], named)
    return sorted(after - before)


def check_rearm(
    app: Rollbot,
    action: str,
    *,
    arm_gates: bool = False,
    clear_ids: Iterable[int] = (),
    resume_of: str | None = None,
) -> list[str]:
    """Refuse (Refused) a change that would re-arm live trading against the rule above; else
    return the scopes it re-arms. Called at request, at approval and right before acting."""
    if resume_of is not None:
        blockers = resume_blockers(app, resume_of)
        if blockers:
            raise Refused(
                f"resume of {resume_of} refused; missing: " + "; ".join(blockers),
                code="RESUME_BLOCKED",
            )
    scopes = newly_armed(app, arm_gates=arm_gates, clear_ids=clear_ids)
    if scopes and resume_of is None:
        pending = incidents_since_resume(app)
        if pending:
            raise Refused(
                f"{action} would re-arm live trading on {', '.join(scopes)} (live gates"
                f" {'armed' if arm_gates else 'on'} and no hold left there); only a resume may,"
                f" once its conditions hold for {', '.join(pending)}: `/resume {pending[-1]}"
                f" reason…` in Slack or `rollbot resume {pending[-1]} -r …`",
                code=RESUME_REQUIRED,
            )
    return scopes


def execute_resume(app: Rollbot, incident_id: str, actor: Actor, reason: str) -> dict[str, object]:
    """Re-arm the gates and clear the incident's holds; other holds stay as they are. Refused
    (RESUME_BLOCKED) unless the conditions hold for every incident since the last resume."""
    cleared: list[int] = []
    with app.db.write():
        check_rearm(app, "resume", arm_gates=True, resume_of=incident_id)
        values = app.gates.arm(actor, reason, incident_id)
        own = [h.id for h in incident_holds(app, incident_id)]  # never another kill's hold
        if own:
            cleared = [h.id for h in app.killswitch.clear_ids(own, reason, actor)]
        app.incidents.set_phase(incident_id, "RESUMED", actor, holds_cleared=cleared)
        app.events.append(
            "TRADING_RESUMED",
            actor,
            reason=reason,
            incident_id=incident_id,
            data={"holds_cleared": cleared, "live_allowed": values.live_allowed},
        )
        app.outbox.put("headline", incident_id=incident_id)
    remaining = app.killswitch.state_of(["global"])
    return {
        "live_allowed": values.live_allowed,
        "holds_cleared": cleared,
        "global_state": remaining.value,
    }
