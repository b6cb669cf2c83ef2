"""One thread per incident (issue 16 item 4), through the real Slack face on a manual clock:
the /kill's headline is the incident's only top-level post; the /flatten and /rollback asked
for while it is open, their approvals, steps, pages and the report all land in its thread; an
approved flatten or rollback continues that incident (no second incident, no second page of
tier 1); and paging and the loss watcher start the moment an incident opens, by any path."""

from __future__ import annotations

from pathlib import Path

from fakes.rollbot_harness import (
    OPERATOR,
    OPS,
    RISK,
    approval_buttons,
    bot_settings,
    click,
    no_rollback_approval,
    running,
)
from fakes.slack import FakeSlack

from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.config import Contact, PaperVenueConfig

DESK = "U0DESK"
CTO = "U0CTO"
CONTACTS = [
    Contact(name="Rita Risk", role="risk_officer", slack_id=RISK),
    Contact(name="Dan Desk", role="trading_desk_manager", slack_id=DESK),
    Contact(name="Cleo CTO", role="cto", slack_id=CTO),
]


def losing_book(tmp_path: Path) -> Path:
    """Long 1,000 AAPL bought at 200, marked at 180: 20,000 down, above critical_loss."""
    path = tmp_path / "losing.toml"
    path.write_text(
        'name = "losing"\n[account]\ncash = 1000000\ncurrency = "USD"\n'
        '[[positions]]\nsymbol = "AAPL"\nquantity = 1000\navg_price = 200\nmark = 180\n',
        encoding="utf-8",
    )
    return path


def settings_for(tmp_path: Path, *, losing: bool = False):  # type: ignore[no-untyped-def]
    settings = bot_settings(tmp_path, contacts=CONTACTS)
    if losing:
        settings.venues = [
            PaperVenueConfig(book_path=tmp_path / "paper.db", scenario=losing_book(tmp_path))
        ]
    return settings


async def slash(slack: FakeSlack, command: str, text: str, user: str = OPERATOR) -> None:
    d = await slack.deliver_slash_command(command, text, user_id=user, channel_id=OPS)
    await slack.wait_for_ack(d.envelope_id)


async def quiet(slack: FakeSlack, rb: Rollbot) -> None:
    """Every run done, every approval decided and carried out, every message posted."""
    await slack.wait_until(
        lambda: (
            all(i.phase == "DONE" for i in rb.incidents.list())
            and not rb.db.query("SELECT 1 FROM approvals WHERE status IN ('PENDING', 'EXECUTING')")
            and rb.outbox.pending() == []
        ),
        timeout=20,
    )


def pages(rb: Rollbot) -> list[tuple[str, str]]:
    """(who, when) for every page (an escalation DM) queued, oldest first."""
    rows = rb.db.query(
        "SELECT target, at FROM outbox WHERE kind = 'dm' AND payload LIKE '%escalation_ping%'"
        " ORDER BY id"
    )
    return [(r["target"], r["at"]) for r in rows if r["target"] in {RISK, DESK, CTO}]


async def test_kill_then_flatten_and_rollback_approved_stay_in_the_kills_thread(
    slack: FakeSlack, tmp_path: Path
) -> None:
    clock = ManualClock()
    async with running(slack, settings_for(tmp_path), clock=clock) as server:
        rb = server.rb
        await slash(slack, "/kill", "runaway orders")
        await quiet(slack, rb)
        [headline] = slack.messages(OPS, include_replies=False)
        [incident] = rb.incidents.list()
        assert incident.slack_ts == headline.ts
        opened = rb.db.one("SELECT at FROM events WHERE kind = 'INCIDENT_OPENED'")["at"]
        assert {(who, at) for who, at in pages(rb)} == {(RISK, opened), (DESK, opened)}

        clock.advance(seconds=90)
        await slash(slack, "/flatten", "paper")
        await slack.wait_until(lambda: approval_buttons(slack, OPS), timeout=10)
        await click(slack, OPS, "approval_approve", RISK)
        await quiet(slack, rb)
        await slash(slack, "/rollback", "still bleeding", user=OPERATOR)
        await slack.wait_until(lambda: approval_buttons(slack, OPS), timeout=10)
        await click(slack, OPS, "approval_approve", RISK)
        await quiet(slack, rb)
        statuses = [r["status"] for r in rb.db.query("SELECT status FROM approvals ORDER BY id")]
        assert statuses == ["EXECUTED", "EXECUTED"]

        # one incident, one top-level post; every message of it is in the headline's thread
        assert [i.id for i in rb.incidents.list()] == [incident.id]
        assert [m.ts for m in slack.messages(OPS, include_replies=False)] == [headline.ts]
        replies = [m for m in slack.messages(OPS) if m.ts != headline.ts]
        assert replies and all(m.thread_ts == headline.ts for m in replies)
        said = " ".join(m.text for m in replies)
        for words in (
            "Step 2 Disconnect",  # the kill's
            "APR-0001",  # the flatten's request card, in the thread
            "Flatten of venue:paper continues INC-0001",
            "Step 4 Flatten Positions",  # the approved flatten's steps
            "APR-0002",
            "Rollback of global continues INC-0001",
            "Step 5 Verify Recovery",
        ):
            assert words in said, words
        assert await rb.venue("paper").positions() == []
        # the headline says what ran in the incident; each run's outcome names its own kind
        title = slack.message(OPS, headline.ts).blocks[0]["text"]["text"]
        assert "KILL → FLATTEN → ROLLBACK" in title, title
        assert f"{incident.id} flatten: SUCCESS" in said and f"{incident.id} rollback:" in said
        # the flatten and the rollback paged nobody again: tier 1 once, at the open
        assert {(who, at) for who, at in pages(rb)} == {(RISK, opened), (DESK, opened)}
        assert len(rb.db.query("SELECT 1 FROM escalations")) == 1

        await slash(slack, "/rollback-report", incident.id, user=RISK)
        await slack.wait_until(lambda: slack.uploads(), timeout=10)
        replies = [m for m in slack.messages(OPS) if m.ts != headline.ts]
        assert all(m.thread_ts == headline.ts for m in replies)
        assert [m.ts for m in slack.messages(OPS, include_replies=False)] == [headline.ts]


async def test_an_approved_rollback_pages_at_the_open_and_a_critical_loss_pages_everyone(
    slack: FakeSlack, tmp_path: Path
) -> None:
    """No incident open: the approved rollback opens one; tier 1 is paged at that moment (not
    on the clock's sweep 30 s later) and its step 3's 20,000 loss pages every tier at once."""
    clock = ManualClock()
    async with running(slack, settings_for(tmp_path, losing=True), clock=clock) as server:
        rb = server.rb
        await slash(slack, "/rollback", "drawdown")
        await slack.wait_until(lambda: approval_buttons(slack, OPS), timeout=10)
        clock.advance(seconds=40)
        await click(slack, OPS, "approval_approve", RISK)
        await quiet(slack, rb)
        [incident] = rb.incidents.list()
        opened = rb.db.one("SELECT at FROM events WHERE kind = 'INCIDENT_OPENED'")["at"]
        esc = rb.db.one("SELECT created_at, critical, loss FROM escalations")
        assert esc["created_at"] == opened
        assert esc["critical"] == 1 and esc["loss"] == "20000"
        assert {who for who, _ in pages(rb)} == {RISK, DESK, CTO}
        assert all(at == opened for _, at in pages(rb))
        head = rb.incidents.get(incident.id).slack_ts
        assert [m.ts for m in slack.messages(OPS, include_replies=False)][-1] == head


async def test_a_rollback_started_alone_continues_the_open_kill(
    slack: FakeSlack, tmp_path: Path
) -> None:
    """Where a person may start /rollback alone, it too continues the open incident."""
    clock = ManualClock()
    settings = no_rollback_approval(settings_for(tmp_path))
    async with running(slack, settings, clock=clock) as server:
        rb = server.rb
        await slash(slack, "/kill", "runaway orders")
        await quiet(slack, rb)
        [headline] = slack.messages(OPS, include_replies=False)
        clock.advance(seconds=30)
        await slash(slack, "/rollback", "close it all")
        await slack.wait_until(
            lambda: any("Step 5 Verify Recovery" in m.text for m in slack.messages(OPS)),
            timeout=20,
        )
        await quiet(slack, rb)
        assert len(rb.incidents.list()) == 1
        assert [m.ts for m in slack.messages(OPS, include_replies=False)] == [headline.ts]
        assert all(m.thread_ts == headline.ts for m in slack.messages(OPS) if m.ts != headline.ts)
        assert len(pages(rb)) == 2  # tier 1, once, at the kill
        assert await rb.venue("paper").positions() == []
