"""Step 2, Disconnect: on a global kill the live gates off (and read back, never assumed), every
venue's automatic reconnect off (reads stay possible), and the guard asked, for each probe of
the scope, whether it now refuses new orders as strictly as the kill asked.
"""

from __future__ import annotations

from typing import Any

from rollbot.brokers.base import Side, VenueError
from rollbot.commands.killswitch.kill_scope import guard_probes
from rollbot.commands.rollback.run_context import RunContext, held_state
from rollbot.commands.rollback.run_model import StepStatus


async def disconnect(run: RunContext) -> dict[str, Any]:
    app, incident = run.app, run.incident
    actions = []
    ok = True
    if incident.scope == "global":
        try:
            values = app.gates.disable(run.actor, incident.reason, incident.id)
            values = await app.gates.settle(values)  # the gates agent's, elsewhere
        except Exception as exc:  # reported, and the venues below are still switched off
            ok = False
            actions.append(f"Live gates could NOT be disabled: {type(exc).__name__}: {exc}")
        else:
            ok = values.shadow_active and not values.pending
            if ok:
                actions.append(
                    "Live gates disabled: enable_live_trading=false, live_mode_armed=false,"
                    " live_dry_run_mode=true; shadow mode enabled"
                )
            else:  # read back, not assumed: the agent's report or the files say otherwise
                actions.append(
                    "Live gates NOT confirmed disabled: "
                    + (values.pending or values.problem or "shadow mode is not active")
                )
    for name, venue in run.venues.items():
        try:
            venue.set_reconnect(False)
        except VenueError as exc:  # contained: the other venues and the gates still count
            actions.append(f"{name}: automatic reconnect could NOT be switched off: {exc}")
            continue
        actions.append(f"{name}: automatic reconnect switched off (reads stay possible)")
    wanted = held_state(app, incident)
    for probe in guard_probes(incident.scope, app.venue_names):
        decision = app.killswitch.check_order(
            probe.venue, "ANY", Side.BUY, 1, account=probe.account, strategy=probe.strategy
        )
        if decision.allowed or decision.state.strictness < wanted.strictness:
            # refused for another reason (gates off) is no proof that the hold governs
            ok = False
            verdict = "ALLOWS" if decision.allowed else f"refuses ({decision.code}) but"
            actions.append(
                f"Guard {verdict} new orders{probe.label} not {wanted.value}: check the holds"
            )
        else:
            actions.append(f"Guard refuses new orders{probe.label} ({decision.code})")
    return {"status": StepStatus.SUCCESS if ok else StepStatus.FAILED, "actions": actions}
