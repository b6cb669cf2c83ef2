"""Webhook pages on a loopback aiohttp server: the JSON POST, the PagerDuty Events v2 shape,
a retry after a 500, no retry after a 400, and a page that survives its sender."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from fakes.loopback import serve_post

from escalation.helpers import (
    CTO,
    RISK,
    dm_targets,
    events,
    make_settings,
    open_incident,
    operator,
    outbox,
    thread_texts,
)
from rollbot.bot.scheduler import Clockwork
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.paging.escalation import acknowledge, close_incident, start_escalation
from rollbot.commands.paging.webhooks import post_json
from rollbot.commands.rollback.timers import fire_due
from rollbot.config import Contact, Settings
from rollbot.storage.events import Actor


@dataclass
class Receiver:
    """A loopback webhook endpoint answering from a script of status codes (then 202)."""

    script: list[int] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(json.loads(await request.text()))
        self.headers.append(dict(request.headers))
        status = self.script.pop(0) if self.script else 202
        return web.json_response({"status": "ok" if status < 300 else "error"}, status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    async with serve_post("/hook/{token}", rec.handle) as base:
        rec.url = f"{base}/hook/s3cr3t"
        yield rec


def with_webhook(tmp_path: Path, url: str, fmt: str = "json", **escalation: Any) -> Settings:
    settings = make_settings(tmp_path, webhook_retries=3, webhook_backoff_s=2.0, **escalation)
    risk = settings.contacts[0]
    settings.contacts[0] = Contact(
        **{
            **risk.model_dump(),
            "webhook_url": url,
            "webhook_format": fmt,
            "webhook_key_env": "ROLLBOT_TEST_PD_KEY" if fmt == "pagerduty" else "",
        }
    )
    return settings


async def test_a_webhook_contact_gets_the_post_with_a_retry_after_a_500(
    tmp_path: Path, receiver: Receiver, clock: ManualClock
) -> None:
    receiver.script = [500]
    rb = Rollbot.open(with_webhook(tmp_path, receiver.url), clock=clock)
    try:
        inc = open_incident(rb)
        start_escalation(rb, inc, operator())
        assert receiver.received == []  # queued as a deadline, sent by the clock
        before = clock.now()
        [fired] = await fire_due(rb)
        assert fired.timer.kind == "webhook"
        assert len(receiver.received) == 2  # the 500, then the retry that was taken
        first, retry = receiver.received
        assert first == retry
        assert retry["event"] == "escalation.page" and retry["incident_id"] == inc
        assert retry["tier"] == 1 and retry["contact"] == "Rita Risk"
        assert retry["summary"] == f"rollbot {inc} (rollback): PnL -6% today"
        assert receiver.headers[0]["Idempotency-Key"] == receiver.headers[1]["Idempotency-Key"]
        assert (clock.now() - before).total_seconds() == 2.0  # one backoff of 2 s
        [sent] = events(rb, "WEBHOOK_SENT")
        assert sent.data["attempts"] == 2 and sent.data["status"] == 202
        assert sent.data["host"].startswith("127.0.0.1:")
        assert "s3cr3t" not in json.dumps(sent.data)  # the URL's path (a token) is not logged
        assert await fire_due(rb) == []  # sent once
        assert len(receiver.received) == 2
    finally:
        rb.db.close()


async def test_pagerduty_events_v2_trigger_and_acknowledge(
    tmp_path: Path, receiver: Receiver, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLLBOT_TEST_PD_KEY", "R0UT1NGKEY")
    rb = Rollbot.open(with_webhook(tmp_path, receiver.url, "pagerduty"), clock=clock)
    try:
        inc = open_incident(rb)
        start_escalation(rb, inc, operator(), loss=25000)
        await fire_due(rb)
        [trigger] = receiver.received
        assert trigger["routing_key"] == "R0UT1NGKEY"
        assert trigger["event_action"] == "trigger"
        assert trigger["dedup_key"] == f"rollbot-{inc}"
        payload = trigger["payload"]
        assert payload["severity"] == "critical"
        assert payload["source"] == "rollbot"
        assert inc in payload["summary"]
        assert payload["custom_details"]["loss"] == "25000"
        # the routing key is a secret: not in the database
        dump = "\n".join(str(r) for r in rb.db.query("SELECT * FROM timers"))
        dump += "\n".join(str(r) for r in rb.db.query("SELECT * FROM events"))
        dump += "\n".join(str(r) for r in rb.db.query("SELECT * FROM escalations"))
        assert "R0UT1NGKEY" not in dump

        acknowledge(rb, inc, Actor(id=CTO, source="slack"))
        await fire_due(rb)
        ack = receiver.received[-1]
        assert ack["event_action"] == "acknowledge"
        assert ack["dedup_key"] == f"rollbot-{inc}" and ack["routing_key"] == "R0UT1NGKEY"
    finally:
        rb.db.close()


async def test_a_missing_routing_key_is_said_in_the_thread(
    tmp_path: Path, receiver: Receiver, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROLLBOT_TEST_PD_KEY", raising=False)
    rb = Rollbot.open(with_webhook(tmp_path, receiver.url, "pagerduty"), clock=clock)
    try:
        inc = open_incident(rb)
        start_escalation(rb, inc, operator())
        await fire_due(rb)
        assert receiver.received == []
        [failed] = events(rb, "WEBHOOK_FAILED")
        assert "ROLLBOT_TEST_PD_KEY" in failed.data["error"]
        assert any("webhook page to Rita Risk" in t for t in thread_texts(rb, inc))
    finally:
        rb.db.close()


async def test_post_gives_up_after_the_retries_and_does_not_retry_a_400(
    receiver: Receiver, clock: ManualClock
) -> None:
    receiver.script = [503, 503, 503]
    result = await post_json(receiver.url, {"a": 1}, retries=2, backoff_s=1, clock=clock)
    assert not result.ok and result.attempts == 3 and result.status == 503
    assert len(receiver.received) == 3
    receiver.script = [400]
    result = await post_json(receiver.url, {"a": 1}, retries=5, backoff_s=1, clock=clock)
    assert not result.ok and result.attempts == 1 and "HTTP 400" in (result.error or "")
    # nobody listening: a transport error, retried, then reported
    result = await post_json(
        "http://127.0.0.1:9/nothing", {"a": 1}, retries=1, backoff_s=0, clock=clock
    )
    assert not result.ok and result.attempts == 2 and result.status is None


async def test_a_page_queued_by_one_process_is_sent_by_the_clock_of_another(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The page is a row, not a task: the Slack process may die right after queueing it."""
    settings = with_webhook(tmp_path, receiver.url)
    clock = ManualClock()
    queuer = Rollbot.open(settings, clock=clock)
    inc = open_incident(queuer)
    start_escalation(queuer, inc, operator())
    queuer.db.close()  # gone before sending anything

    rb = Rollbot.open(settings, clock=clock)
    cw = Clockwork(rb)
    try:
        await cw.start()  # due at once: fired at start
        assert [r["contact"] for r in receiver.received] == ["Rita Risk"]
        assert events(rb, "TIMER_FIRED")[0].data["via"] == "startup"
        assert RISK in dm_targets(rb)  # and over Slack, through the outbox
    finally:
        cw.shutdown()
        rb.db.close()


async def test_a_page_lost_by_an_earlier_process_with_this_pid_is_sent_again(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bot restarted in its container gets its old pid back (often 1). The page its earlier
    life claimed, and died before sending, is not this process's page in flight: it is sent
    again, once, under the same idempotency key."""
    from rollbot.commands.desk import liveness
    from rollbot.commands.paging import webhooks
    from rollbot.commands.rollback.timers import claim_and_fire
    from rollbot.storage.timers import Timers

    rb = Rollbot.open(with_webhook(tmp_path, receiver.url), clock=ManualClock())
    try:
        start_escalation(rb, open_incident(rb), operator())
        [page] = Timers(rb.db, rb.clock).pending(kind=webhooks.TIMER_KIND)
        with monkeypatch.context() as earlier_life:  # same host, same pid, an earlier start
            earlier_life.setitem(liveness.ME, "started", "an-earlier-boot:4242")
            fired = claim_and_fire(rb, page.id, page.token, "scheduler")
        assert fired is not None and fired.follow_up is not None  # claimed; its POST never ran
        assert events(rb, "TIMER_FIRED")[0].data["pid"] == liveness.ME["pid"]
        assert receiver.received == []

        resent = await webhooks.resend_lost(rb)
        again = await webhooks.resend_lost(rb)

        assert [d.ok for d in resent] == [True] and again == []
        assert [r["contact"] for r in receiver.received] == ["Rita Risk"]
        assert len(events(rb, "WEBHOOK_RESENT")) == len(events(rb, "WEBHOOK_SENT")) == 1
    finally:
        rb.db.close()


async def test_pagerduty_incident_resolved_when_rollbot_closes_it(
    tmp_path: Path, receiver: Receiver, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLLBOT_TEST_PD_KEY", "R0UT1NGKEY")
    rb = Rollbot.open(with_webhook(tmp_path, receiver.url, "pagerduty"), clock=clock)
    try:
        inc = open_incident(rb)
        start_escalation(rb, inc, operator())
        await fire_due(rb)
        close_incident(rb, inc, Actor(id=RISK, source="slack"), "positions flat, RCA filed")
        close_incident(rb, inc, Actor(id=RISK, source="slack"), "closed twice")  # no-op
        await fire_due(rb)
        assert [r["event_action"] for r in receiver.received] == ["trigger", "resolve"]
        resolve = receiver.received[-1]
        assert resolve["dedup_key"] == f"rollbot-{inc}" and resolve["routing_key"] == "R0UT1NGKEY"
        assert "payload" not in resolve  # Events v2: resolve carries no payload
        # the escalation's next deadline was cancelled: nobody is paged after the close
        clock.advance(hours=2)
        assert [f.timer.kind for f in await fire_due(rb)] == []
        assert [e.kind for e in events(rb, "ESCALATION_STOPPED")] == ["ESCALATION_STOPPED"]
    finally:
        rb.db.close()


async def test_an_acknowledged_incident_left_open_reminds_the_acker(
    tmp_path: Path, receiver: Receiver, clock: ManualClock
) -> None:
    rb = Rollbot.open(with_webhook(tmp_path, receiver.url, ack_reminder_minutes=45), clock=clock)
    try:
        inc = open_incident(rb)
        start_escalation(rb, inc, operator())
        await fire_due(rb)
        acknowledge(rb, inc, Actor(id=CTO, source="slack"))
        await fire_due(rb)
        clock.advance(minutes=44)
        assert [f.timer.kind for f in await fire_due(rb)] == []
        clock.advance(minutes=1)
        assert [f.timer.kind for f in await fire_due(rb)] == ["ack_reminder"]
        reminders = [t for t in thread_texts(rb, inc) if t.startswith("⏰")]
        assert reminders == [
            f"⏰ <@{CTO}>: {inc} is still open, 45 min after you acknowledged it (0.8 h since"
            f" it opened). Close it with `/incident close {inc} what was done`, or hand it to"
            " someone."
        ]
        [dm] = outbox(rb, kind="dm", target=CTO)
        assert dm["payload"]["text"] == reminders[0]
        clock.advance(minutes=45)  # still open: reminded again
        assert [f.timer.kind for f in await fire_due(rb)] == ["ack_reminder"]
        close_incident(rb, inc, Actor(id=CTO, source="slack"), "done")
        await fire_due(rb)
        assert receiver.received[-1]["event"] == "incident.closed"
        clock.advance(hours=3)  # closed: no more reminders
        assert [f.timer.kind for f in await fire_due(rb)] == []
        assert len([t for t in thread_texts(rb, inc) if t.startswith("⏰")]) == 2
    finally:
        rb.db.close()
