"""The escalation rules, driven by a ManualClock: tiers, repeat, exhaustion, ack, critical loss,
the chain snapshot and exactly-once firing."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from escalation.helpers import (
    CTO,
    DESK,
    DEVOPS,
    OPERATOR,
    OUTSIDER,
    RISK,
    TIER1,
    TIER2,
    dm_targets,
    events,
    make_settings,
    open_incident,
    operator,
    outbox,
    thread_pings,
    thread_texts,
)
from rollbot.clock import ManualClock, iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.paging.escalation import (
    ACKED,
    ACTIVE,
    EXHAUSTED,
    acknowledge,
    check_loss,
    get_escalation,
    start_escalation,
)
from rollbot.commands.rollback.timers import claim_and_fire, fire_due
from rollbot.config import Contact
from rollbot.errors import BadInput, NotFound, Refused
from rollbot.storage.events import Actor
from rollbot.storage.timers import Timers


def slack(user: str) -> Actor:
    return Actor(id=user, source="slack")


async def test_tier1_then_tier2_after_15_minutes_then_repeat_then_exhausted(
    app: Rollbot, clock: ManualClock
) -> None:
    inc = open_incident(app)
    esc = start_escalation(app, inc, operator())
    assert esc.status == ACTIVE
    assert set(dm_targets(app)) == TIER1
    [ping] = thread_pings(app)
    assert ping["tier"] == 1 and set(ping["mentions"]) == TIER1
    assert {c["phone"] for c in ping["contacts"]} == {"+1-555-0101", "+1-555-0102"}
    dm = outbox(app, kind="dm", target=RISK)[0]["payload"]["data"]
    assert dm["contact"] == {
        "name": "Rita Risk",
        "role": "risk_officer",
        "slack_id": RISK,
        "phone": "+1-555-0101",
        "email": "risk@desk.example",
    }
    assert dm["incident_id"] == inc and dm["escalation_id"] == esc.id and dm["tier"] == 1

    clock.advance(minutes=14, seconds=59)
    assert await fire_due(app) == []
    assert len(dm_targets(app)) == 2  # nobody new before the wait is over

    clock.advance(seconds=1)
    [fired] = await fire_due(app)
    assert fired.lag_s == 0
    assert set(dm_targets(app)[2:]) == TIER2
    assert thread_pings(app)[-1]["tier"] == 2
    assert get_escalation(app, inc).tier == 1  # type: ignore[union-attr]

    clock.advance(minutes=15)  # after the last tier: the chain again from tier 1
    await fire_due(app)
    assert set(dm_targets(app)[4:]) == TIER1
    assert any("round 2 of 2" in t and "again from tier 1" in t for t in thread_texts(app, inc))
    assert [e.data["round"] for e in events(app, "ESCALATION_REPEATED")] == [2]

    clock.advance(minutes=15)
    await fire_due(app)
    assert set(dm_targets(app)[6:]) == TIER2

    clock.advance(minutes=15)  # repeat = 1: two rounds done, nobody answered
    await fire_due(app)
    assert get_escalation(app, inc).status == EXHAUSTED  # type: ignore[union-attr]
    exhausted = [t for t in thread_texts(app, inc) if "is exhausted: nobody acknowledged" in t]
    assert len(exhausted) == 1 and "+1-555-0103" in exhausted[0]
    assert len(events(app, "ESCALATION_EXHAUSTED")) == 1

    clock.advance(hours=3)
    assert await fire_due(app) == []
    assert len(dm_targets(app)) == 8
    pinged = [(e.data["tier"], e.data["round"]) for e in events(app, "ESCALATION_PINGED")]
    assert pinged == [(1, 1), (2, 1), (1, 2), (2, 2)]


async def test_an_ack_stops_the_escalation_and_the_thread_says_who_and_when(
    app: Rollbot, clock: ManualClock
) -> None:
    inc = open_incident(app)
    start_escalation(app, inc, operator())
    clock.advance(minutes=15)
    await fire_due(app)  # tier 2 paged
    clock.advance(minutes=2)
    acked_at = clock.now()

    esc = acknowledge(app, inc, slack(CTO))
    assert esc.status == ACKED and esc.acked_by == CTO and esc.acked_at == acked_at
    assert f"Acknowledged by <@{CTO}> at {iso(acked_at)}" in thread_texts(app, inc)[-1]
    assert Timers(app.db, app.clock).pending(kind="escalation") == []
    [ev] = events(app, "ESCALATION_ACKED")
    assert ev.actor == CTO and ev.data["tier"] == 2

    acknowledge(app, inc, slack(DEVOPS))  # a second click changes nothing
    assert sum("Acknowledged by" in t for t in thread_texts(app, inc)) == 1
    assert get_escalation(app, inc).acked_by == CTO  # type: ignore[union-attr]

    sent = len(outbox(app))
    clock.advance(hours=2)
    # no tier is paged again; only the acker is reminded that the incident is still open
    assert [f.timer.kind for f in await fire_due(app)] == ["ack_reminder"]
    added = outbox(app)[sent:]
    assert [(m["kind"], m["target"]) for m in added] == [("thread", None), ("dm", CTO)]
    assert all(f"<@{CTO}>: {inc} is still open" in m["payload"]["text"] for m in added)


async def test_an_ack_before_the_wait_stops_tier_2_from_being_paged(
    app: Rollbot, clock: ManualClock
) -> None:
    inc = open_incident(app)
    start_escalation(app, inc, operator())
    clock.advance(minutes=5)
    acknowledge(app, inc, slack(DESK))
    clock.advance(minutes=30)
    await fire_due(app)
    assert set(dm_targets(app)) == TIER1


def test_only_people_on_the_chain_or_holding_its_roles_can_ack(app: Rollbot) -> None:
    inc = open_incident(app)
    start_escalation(app, inc, operator())
    with pytest.raises(Refused) as refused:
        acknowledge(app, inc, slack(OUTSIDER))
    assert refused.value.code == "NOT_ON_CHAIN" and OUTSIDER in str(refused.value)
    assert get_escalation(app, inc).status == ACTIVE  # type: ignore[union-attr]
    assert events(app, "ESCALATION_ACKED") == []
    with pytest.raises(Refused):
        acknowledge(app, inc, slack(OPERATOR))  # operator is not an escalation role
    # a risk officer who is not a configured contact still holds a role of the chain
    assert acknowledge(app, inc, slack("U0RISK2")).status == ACKED
    # a CTO not yet paged is on the chain, so may take it too (already acked: no change)
    assert acknowledge(app, inc, slack(CTO)).acked_by == "U0RISK2"


def test_ack_without_escalation_is_not_found(app: Rollbot) -> None:
    inc = open_incident(app)
    with pytest.raises(NotFound, match="no escalation"):
        acknowledge(app, inc, slack(RISK))
    with pytest.raises(NotFound, match="INC-9999"):
        acknowledge(app, "INC-9999", slack(RISK))


async def test_a_loss_above_10k_pages_every_tier_at_once(app: Rollbot, clock: ManualClock) -> None:
    inc = open_incident(app)
    esc = start_escalation(app, inc, operator(), loss=Decimal("12500"))
    assert esc.critical
    assert set(dm_targets(app)) == TIER1 | TIER2
    [ping] = thread_pings(app)
    assert ping["tiers"] == [1, 2] and set(ping["mentions"]) == TIER1 | TIER2
    assert "$12,500.00" in ping["note"] and "$10,000.00" in ping["note"]
    # the repeat of a critical escalation is every tier again
    clock.advance(minutes=15)
    await fire_due(app)
    assert set(dm_targets(app)[4:]) == TIER1 | TIER2
    clock.advance(minutes=15)
    await fire_due(app)
    assert get_escalation(app, inc).status == EXHAUSTED  # type: ignore[union-attr]


def test_a_loss_of_exactly_10k_is_not_critical(app: Rollbot) -> None:
    inc = open_incident(app)
    start_escalation(app, inc, operator(), loss="10000")
    assert set(dm_targets(app)) == TIER1


async def test_check_loss_takes_a_running_escalation_to_every_tier_once(
    app: Rollbot, clock: ManualClock
) -> None:
    inc = open_incident(app)
    start_escalation(app, inc, operator())
    assert check_loss(app, inc, 9000) is not None
    assert set(dm_targets(app)) == TIER1
    esc = check_loss(app, inc, Decimal("15000.5"))
    assert esc is not None and esc.critical and esc.loss == Decimal("15000.5")
    assert set(dm_targets(app)[2:]) == TIER1 | TIER2
    check_loss(app, inc, 30000)  # already critical: nobody paged again
    assert len(dm_targets(app)) == 6
    assert len(events(app, "ESCALATION_CRITICAL")) == 1
    # the tier-1 deadline set before the loss is stale: only the critical round's deadline fires
    clock.advance(minutes=15)
    await fire_due(app)
    assert set(dm_targets(app)[6:]) == TIER1 | TIER2
    with pytest.raises(BadInput, match="loss must be a number"):
        check_loss(app, inc, "lots")


def test_check_loss_starts_a_critical_escalation_when_none_runs(app: Rollbot) -> None:
    inc = open_incident(app)
    assert check_loss(app, inc, 500) is None
    assert outbox(app, kind="dm") == []
    esc = check_loss(app, inc, 20000)
    assert esc is not None and esc.critical
    assert set(dm_targets(app)) == TIER1 | TIER2


def test_a_critical_loss_after_the_ack_pages_everyone_once_without_deadline(
    app: Rollbot,
) -> None:
    inc = open_incident(app)
    start_escalation(app, inc, operator())
    acknowledge(app, inc, slack(RISK))
    esc = check_loss(app, inc, 11000)
    assert esc is not None and esc.status == ACKED and esc.critical
    assert set(dm_targets(app)[2:]) == TIER1 | TIER2
    assert f"Already acknowledged by <@{RISK}>" in thread_pings(app)[-1]["note"]
    assert Timers(app.db, app.clock).pending(kind="escalation") == []


async def test_the_chain_is_a_snapshot_a_config_edit_does_not_change_it(
    tmp_path: Path, app: Rollbot, clock: ManualClock
) -> None:
    inc = open_incident(app)
    start_escalation(app, inc, operator())
    # the config changes: a new CTO, a longer wait; a new process opens the same database
    edited = make_settings(tmp_path, repeat=1, wait_minutes=60)
    edited.contacts[2] = Contact(name="New CTO", role="cto", slack_id="U0NEWCTO")
    other = Rollbot.open(edited, clock=clock)
    try:
        clock.advance(minutes=15)
        await fire_due(other)
        assert "U0NEWCTO" not in dm_targets(other)
        assert set(dm_targets(other)[2:]) == TIER2
        # a new incident takes the chain as it is now
        inc2 = open_incident(other)
        start_escalation(other, inc2, operator())
        assert outbox(other, kind="dm", incident_id=inc2)[0]["target"] == RISK
        clock.advance(minutes=15)
        await fire_due(other)
        assert "U0NEWCTO" not in [r["target"] for r in outbox(other, incident_id=inc2)]
    finally:
        other.db.close()


def test_starting_twice_keeps_one_escalation(app: Rollbot) -> None:
    inc = open_incident(app)
    first = start_escalation(app, inc, operator())
    again = start_escalation(app, inc, operator())
    assert again.id == first.id
    assert len(dm_targets(app)) == 2 and len(events(app, "ESCALATION_STARTED")) == 1


def test_start_for_an_unknown_incident_is_not_found(app: Rollbot) -> None:
    with pytest.raises(NotFound):
        start_escalation(app, "INC-0404", operator())
    assert app.db.query("SELECT * FROM escalations") == []


def test_without_contacts_the_thread_says_nobody_can_be_paged(
    tmp_path: Path, clock: ManualClock
) -> None:
    settings = make_settings(tmp_path)
    settings.contacts = []
    rb = Rollbot.open(settings, clock=clock)
    try:
        inc = open_incident(rb)
        esc = start_escalation(rb, inc, operator())
        assert esc.status == EXHAUSTED
        assert "Nobody can be paged" in thread_texts(rb, inc)[0]
        assert Timers(rb.db, rb.clock).pending() == []
    finally:
        rb.db.close()


def test_a_tier_without_contacts_is_skipped_and_said(tmp_path: Path, clock: ManualClock) -> None:
    settings = make_settings(tmp_path)
    settings.contacts = [c for c in settings.contacts if c.role in ("cto", "devops")]
    rb = Rollbot.open(settings, clock=clock)
    try:
        inc = open_incident(rb)
        start_escalation(rb, inc, operator())
        assert set(dm_targets(rb)) == TIER2
        assert any("risk_officer, trading_desk_manager" in t for t in thread_texts(rb, inc))
    finally:
        rb.db.close()


async def test_a_deadline_fired_twice_pages_once(app: Rollbot, clock: ManualClock) -> None:
    inc = open_incident(app)
    start_escalation(app, inc, operator())
    [timer] = Timers(app.db, app.clock).pending(kind="escalation")
    clock.advance(minutes=15)
    assert claim_and_fire(app, timer.id, timer.token, "scheduler") is not None
    assert claim_and_fire(app, timer.id, timer.token, "auditor") is None
    await fire_due(app, via="auditor")
    assert set(dm_targets(app)) == TIER1 | TIER2 and len(dm_targets(app)) == 4
    assert len(events(app, "TIMER_FIRED")) == 1


async def test_two_processes_racing_for_one_deadline_page_once(
    tmp_path: Path, app: Rollbot, clock: ManualClock
) -> None:
    inc = open_incident(app)
    start_escalation(app, inc, operator())
    [timer] = Timers(app.db, app.clock).pending(kind="escalation")
    clock.advance(minutes=16)
    # two more connections to the same file, as two clock processes would have
    rbs = [Rollbot.open(make_settings(tmp_path, repeat=1), clock=clock) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: list[object] = []

    def race(rb: Rollbot) -> None:
        barrier.wait()
        results.append(claim_and_fire(rb, timer.id, timer.token, "scheduler"))

    try:
        await asyncio.gather(*(asyncio.to_thread(race, rb) for rb in rbs))
    finally:
        for rb in rbs:
            rb.db.close()
    assert sum(r is not None for r in results) == 1
    assert sorted(dm_targets(app)) == sorted(TIER1 | TIER2)
    [fired] = events(app, "TIMER_FIRED")
    assert fired.data["lag_s"] == 60.0


async def test_a_deadline_made_stale_by_the_ack_does_not_page(
    app: Rollbot, clock: ManualClock
) -> None:
    inc = open_incident(app)
    start_escalation(app, inc, operator())
    [timer] = Timers(app.db, app.clock).pending(kind="escalation")
    acknowledge(app, inc, slack(RISK))
    clock.advance(minutes=15)
    assert claim_and_fire(app, timer.id, timer.token, "scheduler") is None  # cancelled
    # an un-cancelled deadline whose run token is old is claimed but pages nobody
    app.db.execute("UPDATE timers SET cancelled_at = NULL WHERE id = ?", (timer.id,))
    assert claim_and_fire(app, timer.id, timer.token, "scheduler") is not None
    assert len(dm_targets(app)) == 2
    assert len(events(app, "ESCALATION_DEADLINE_IGNORED")) == 1
