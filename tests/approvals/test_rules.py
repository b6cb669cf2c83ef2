"""The two-person rule through the commands API: who may vote, when, and what runs."""

from __future__ import annotations

from decimal import Decimal

import pytest

from approvals.support import (
    OPERATOR,
    OPERATOR2,
    OUTSIDER,
    RISK,
    closing_orders,
    events,
    make_settings,
    paper,
    rule,
    slack,
    terminal,
)
from rollbot.brokers.base import CloseRequest, OrderType, Side
from rollbot.clock import ManualClock
from rollbot.commands.approvals.two_person import Approvals, Status
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.flatten import plan_flatten
from rollbot.commands.rollback.positions import read_books
from rollbot.errors import BadInput, NotFound, Refused
from rollbot.storage.db import loads
from rollbot.storage.events import Actor


async def _flatten_request(approvals: Approvals, requester=None, **params):
    return await approvals.request(
        "flatten", params or {}, requester or slack(OPERATOR), "desk is bleeding"
    )


def _refusals(app: Rollbot) -> list[str]:
    return [e.data["code"] for e in events(app, "APPROVAL_REFUSED")]


async def test_request_shows_every_order_bound_to_its_hash_and_sends_nothing(app, approvals):
    books = await read_books(app.venues())
    expected = plan_flatten(books, app.settings.flatten)

    req = await _flatten_request(approvals)

    assert req.status is Status.PENDING
    assert req.plan_hash == expected.hash
    shown = {(o["venue"], o["symbol"], o["side"], o["quantity"], o["type"]) for o in req.plan}
    assert shown == {
        (o.venue, o.symbol, o.side.value, format(o.quantity.normalize(), "f"), o.type.value)
        for o in expected.orders
    }
    assert len(shown) == 9  # the default book holds nine positions
    assert closing_orders(app) == []
    assert app.killswitch.state_of(["global"]).value == "ACTIVE"
    posted = app.db.query("SELECT kind, target, payload FROM outbox ORDER BY id")
    channel = [p for p in posted if p["kind"] == "channel"]
    assert len(channel) == 1
    payload = loads(channel[0]["payload"])
    assert payload["view"] == "approval"
    assert payload["data"]["id"] == req.id
    assert payload["data"]["status"] == "PENDING"
    assert len(payload["data"]["plan_lines"]) == 9
    dms = {p["target"] for p in posted if p["kind"] == "dm"}
    assert RISK in dms and OPERATOR2 in dms and OPERATOR not in dms  # never the requester
    assert events(app, "APPROVAL_REQUESTED")[0].data["plan_hash"] == req.plan_hash


async def test_self_approval_refused_by_slack_id(app, approvals):
    req = await _flatten_request(approvals)

    result = await approvals.vote(req.id, slack(OPERATOR), "approve")

    assert result.refused and result.code == "SELF_APPROVAL"
    assert approvals.get(req.id).status is Status.PENDING
    assert _refusals(app) == ["SELF_APPROVAL"]
    assert closing_orders(app) == []


async def test_self_approval_refused_across_faces_by_mapped_identity(app, approvals):
    # alice is U0OPERATOR: asking in Slack and approving at her terminal is still one person
    in_slack = await _flatten_request(approvals, slack(OPERATOR))
    at_terminal = await approvals.vote(in_slack.id, terminal("alice"), "approve")
    assert at_terminal.code == "SELF_APPROVAL"

    # and the other way round: asked at the terminal, approved from her Slack account
    from_terminal = await _flatten_request(approvals, terminal("alice"))
    in_slack_vote = await approvals.vote(from_terminal.id, slack(OPERATOR), "approve")
    assert in_slack_vote.code == "SELF_APPROVAL"

    # a claimed --by changes neither who asked nor who votes
    claimed = await _flatten_request(approvals, terminal("alice", by=RISK))
    spoofed = await approvals.vote(claimed.id, terminal("alice", by=RISK), "approve")
    assert spoofed.code == "SELF_APPROVAL"

    assert _refusals(app) == ["SELF_APPROVAL"] * 3
    assert closing_orders(app) == []


async def test_wrong_role_refused(app, approvals):
    req = await _flatten_request(approvals)

    outsider = await approvals.vote(req.id, slack(OUTSIDER), "approve")
    unmapped = await approvals.vote(req.id, terminal("eve"), "approve")
    # --by cannot borrow a role: mallory's OS user maps to an outsider
    borrowed = await approvals.vote(req.id, terminal("mallory", by=RISK), "approve")
    outsider_deny = await approvals.vote(req.id, slack(OUTSIDER), "deny", "no")

    assert [outsider.code, unmapped.code, borrowed.code, outsider_deny.code] == [
        "ROLE_NOT_ALLOWED"
    ] * 4
    assert "operator or risk_officer" in outsider.message
    assert approvals.get(req.id).status is Status.PENDING
    assert _refusals(app) == ["ROLE_NOT_ALLOWED"] * 4
    assert closing_orders(app) == []


async def test_expiry_refuses_late_votes_and_updates_every_copy(app, approvals, clock):
    req = await _flatten_request(approvals)
    clock.advance(minutes=10, seconds=1)

    late = await approvals.vote(req.id, slack(RISK), "approve")

    assert late.code == "EXPIRED"
    assert approvals.get(req.id).status is Status.EXPIRED
    refresh = [
        loads(r["payload"])
        for r in app.db.query("SELECT payload FROM outbox WHERE kind = 'approval'")
    ]
    assert [p["data"]["status"] for p in refresh] == ["EXPIRED"]
    assert refresh[0]["data"]["approval_id"] == req.id
    assert refresh[0]["data"]["decided_at"]
    assert _refusals(app) == ["EXPIRED"]
    assert closing_orders(app) == []

    # the clock job expires the ones nobody clicked
    other = await approvals.request("enable_gates", {}, slack(OPERATOR), "fixed")
    clock.advance(minutes=9)
    assert approvals.expire_due() == []
    clock.advance(minutes=1)
    assert [r.id for r in approvals.expire_due()] == [other.id]
    assert approvals.get(other.id).status is Status.EXPIRED
    third = await approvals.request("enable_gates", {}, slack(OPERATOR), "fixed")
    clock.advance(minutes=10)
    await approvals.sweep()  # what the clock's periodic job calls
    assert approvals.get(third.id).status is Status.EXPIRED
    assert len(events(app, "APPROVAL_EXPIRED")) == 3


async def test_expiry_minutes_is_configurable(tmp_path):
    clock = ManualClock()
    app = Rollbot.open(make_settings(tmp_path, expiry_minutes=2), clock=clock)
    try:
        approvals = Approvals(app)
        req = await approvals.request("enable_gates", {}, slack(OPERATOR), "fixed")
        assert (req.expires_at - req.created_at).total_seconds() == 120
    finally:
        await app.aclose()


async def test_deny_is_final(app, approvals):
    req = await _flatten_request(approvals)

    denied = await approvals.vote(req.id, slack(RISK), "deny", "positions are fine")
    after = await approvals.vote(req.id, slack(OPERATOR2), "approve")

    assert denied.accepted and denied.code == "DENIED"
    assert after.code == "ALREADY_DECIDED"
    final = approvals.get(req.id)
    assert final.status is Status.DENIED and final.decided_by == RISK
    view = final.view()
    assert view["status"] == "DENIED" and view["decided_by"] == f"<@{RISK}>"
    assert "positions are fine" in view["note"]
    assert closing_orders(app) == []
    assert _refusals(app) == ["ALREADY_DECIDED"]


async def test_requester_may_withdraw_own_request(app, approvals):
    req = await _flatten_request(approvals)
    result = await approvals.vote(req.id, terminal("alice"), "deny", "wrong venue")
    assert result.code == "DENIED" and "withdrawn" in result.message
    assert approvals.get(req.id).status is Status.DENIED


async def test_plan_drift_forces_a_fresh_request_and_nothing_runs(app, approvals):
    req = await _flatten_request(approvals)
    # between request and approval someone trades: AAPL is partly sold
    await paper(app).submit_close(
        CloseRequest(
            symbol="AAPL",
            side=Side.SELL,
            quantity=Decimal(100),
            type=OrderType.MARKET,
            client_order_id="desk-manual-1",
        )
    )

    result = await approvals.vote(req.id, slack(RISK), "approve")

    assert result.code == "PLAN_CHANGED"
    assert approvals.get(req.id).status is Status.SUPERSEDED
    assert closing_orders(app) == []  # nothing ran on the stale approval
    fresh = result.superseded_by
    assert fresh is not None and fresh.status is Status.PENDING
    assert fresh.replaces == req.id and approvals.get(req.id).superseded_by == fresh.id
    aapl = next(o for o in fresh.plan if isinstance(o, dict) and o["symbol"] == "AAPL")
    assert aapl["quantity"] == "300"
    assert fresh.requested_by == OPERATOR  # still hers: she still cannot approve it
    assert (await approvals.vote(fresh.id, slack(OPERATOR), "approve")).code == "SELF_APPROVAL"
    posted = [
        loads(r["payload"])["data"]["id"]
        for r in app.db.query("SELECT payload FROM outbox WHERE kind = 'channel'")
    ]
    assert posted == [req.id, fresh.id]
    assert "PLAN_CHANGED" in _refusals(app)

    # what is approved now is what runs
    done = await approvals.vote(fresh.id, slack(RISK), "approve")
    assert done.code == "EXECUTED" and done.result["residual"] == {}
    assert await paper(app).positions() == []
    sent = {(o.symbol, o.quantity) for o in closing_orders(app)}
    assert ("AAPL", Decimal(300)) in sent and len(sent) == 9


async def test_approved_flatten_runs_once_and_updates_copies(app, approvals):
    req = await _flatten_request(approvals)

    done = await approvals.vote(req.id, slack(RISK), "approve")

    assert done.executed and done.code == "EXECUTED"
    # flatten cancels the resting orders on the symbols it closes, then verifies flat
    assert done.result["final_status"] == "SUCCESS" and done.result["residual"] == {}
    assert done.result["open_orders"] == {}
    assert await paper(app).positions() == []
    assert len(closing_orders(app)) == 9
    final = approvals.get(req.id)
    assert final.status is Status.EXECUTED and final.decided_by == RISK
    incident = app.incidents.get(done.result["incident_id"])
    assert incident.dedupe_key == f"approval:{req.id}"
    states = [
        loads(r["payload"])["data"]
        for r in app.db.query("SELECT payload FROM outbox WHERE kind = 'approval' ORDER BY id")
    ]
    assert [s["state"] for s in states] == ["EXECUTING", "EXECUTED"]
    assert all(s["status"] == "APPROVED" and s["decided_by"] == f"<@{RISK}>" for s in states)
    # a retried delivery of the same click changes nothing
    again = await approvals.vote(req.id, slack(RISK), "approve")
    assert again.code == "ALREADY_DECIDED"
    assert len(closing_orders(app)) == 9


async def test_quorum_of_two_needs_two_different_people(tmp_path):
    settings = make_settings(tmp_path, flatten=rule(2, "operator", "risk_officer"))
    app = Rollbot.open(settings, clock=ManualClock())
    try:
        approvals = Approvals(app)
        req = await _flatten_request(approvals)
        first = await approvals.vote(req.id, slack(RISK), "approve")
        twice = await approvals.vote(req.id, terminal("rita"), "approve")  # same person, terminal
        assert first.code == "VOTE_RECORDED" and twice.code == "DUPLICATE_VOTE"
        assert closing_orders(app) == []
        assert "1 of 2" in approvals.get(req.id).view()["note"]
        second = await approvals.vote(req.id, slack(OPERATOR2), "approve")
        assert second.code == "EXECUTED"
        assert len(closing_orders(app)) == 9
    finally:
        await app.aclose()


async def test_bad_input_changes_nothing(app, approvals):
    with pytest.raises(BadInput, match="unknown action"):
        await approvals.request("launch", {}, slack(OPERATOR), "x")
    with pytest.raises(BadInput, match="reason"):
        await approvals.request("flatten", {}, slack(OPERATOR), "  ")
    with pytest.raises(BadInput, match="unknown venue"):
        await approvals.request("flatten", {"venue": "nyse"}, slack(OPERATOR), "x")
    with pytest.raises(BadInput, match="ZZZ"):
        await approvals.request("flatten", {"symbols": ["ZZZ"]}, slack(OPERATOR), "x")
    with pytest.raises(BadInput, match="takes no parameter"):
        await approvals.request("rollback", {"venue": "paper"}, slack(OPERATOR), "x")
    assert app.db.query("SELECT * FROM approvals") == []
    req = await _flatten_request(approvals)
    with pytest.raises(BadInput, match="approve"):
        await approvals.vote(req.id, slack(RISK), "maybe")
    with pytest.raises(NotFound, match="APR-9999"):
        await approvals.vote("APR-9999", slack(RISK), "approve")
    assert _refusals(app) == ["UNKNOWN"]  # the click on an unknown id is still recorded


async def test_flatten_subset_binds_only_those_symbols(app, approvals):
    req = await _flatten_request(approvals, symbols=["AAPL", "MSFT"])
    assert {o["symbol"] for o in req.plan} == {"AAPL", "MSFT"}
    done = await approvals.vote(req.id, slack(RISK), "approve")
    assert done.code == "EXECUTED"
    left = {p.symbol for p in await paper(app).positions()}
    assert "AAPL" not in left and "MSFT" not in left and len(left) == 7


async def test_nothing_to_do_is_refused_and_recorded(app, approvals):
    with pytest.raises(Refused) as no_hold:
        await approvals.request("clear_hold", {"scope": "global"}, slack(OPERATOR), "x")
    assert no_hold.value.code == "NOTHING_TO_DO"
    refused = events(app, "APPROVAL_REQUEST_REFUSED")
    assert [e.data["code"] for e in refused] == ["NOTHING_TO_DO"]


async def test_clear_hold_waits_for_a_risk_officer(app, approvals):
    hold, _ = app.killswitch.trigger("global", "manual stop", slack(OPERATOR))
    req = await approvals.request("clear_hold", {"scope": "global"}, slack(OPERATOR), "fixed")
    assert any(f"#{hold.id}" in line for line in req.plan)
    assert app.killswitch.state_of(["global"]).value == "HALTED"  # asking clears nothing

    operator = await approvals.vote(req.id, slack(OPERATOR2), "approve")
    assert operator.code == "ROLE_NOT_ALLOWED"  # clear_hold defaults to risk_officer
    done = await approvals.vote(req.id, slack(RISK), "approve")

    assert done.code == "EXECUTED" and done.result["cleared"] == [hold.id]
    assert app.killswitch.state_of(["global"]).value == "ACTIVE"


async def test_enable_gates_runs_on_approval(app, approvals):
    app.gates.disable(slack(OPERATOR), "rollback")
    req = await approvals.request("enable_gates", {}, slack(OPERATOR), "fix deployed")
    assert not app.gates.read().live_allowed
    done = await approvals.vote(req.id, slack(RISK), "approve")
    assert done.code == "EXECUTED" and app.gates.read().live_allowed


async def test_rollback_request_and_who_must_ask(app, approvals):
    assert approvals.needs_approval("rollback", slack(OPERATOR))
    assert not approvals.needs_approval("rollback", Actor.clock("monitor"))
    req = await approvals.request("rollback", {}, terminal("alice"), "drawdown")
    assert any("Step 4" in line for line in req.plan)
    done = await approvals.vote(req.id, slack(RISK), "approve")
    assert done.code == "EXECUTED" and done.result["final_status"] == "SUCCESS"
    assert not app.gates.read().live_allowed
    assert len(closing_orders(app)) == 9
