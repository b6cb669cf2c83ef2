"""A kill storm through the Slack face (Socket Mode, the real bot): the kills that reach their
hold in one pass of the event loop are stored in one transaction (SlackBot._store_held), and
each is still acked with its own incident, held, cancelled and reported; a bad kill among them
is told what is wrong and stops none of the others; with the database locked by another
process, every one of them cancels at once and is held once it can. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from fakes.rollbot_harness import OPERATOR, OPS, bot_settings, running, seeded_paper, settled
from fakes.slack import FakeSlack
from pg_server import BOTH

from rollbot.bot.slack import app as slack_app
from rollbot.brokers.paper.venue import PaperVenue
from rollbot.commands.killswitch.trading_state import TradingState
from rollbot.storage.audit import verify


@pytest.fixture(params=BOTH)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many kills each of the bot's hold transactions stored."""
    sizes: list[int] = []
    store = slack_app.SlackBot._store_held

    def counted(self: slack_app.SlackBot, requests: list[Any]) -> Any:
        sizes.append(len(requests))
        return store(self, requests)

    monkeypatch.setattr(slack_app.SlackBot, "_store_held", counted)
    return sizes


async def storm(slack: FakeSlack, texts: list[str]) -> list[str]:
    """These /kill commands delivered at once; each one's ack text."""
    sent = await asyncio.gather(
        *(
            slack.deliver_slash_command("/kill", text, user_id=OPERATOR, channel_id=OPS)
            for text in texts
        )
    )
    acks = await asyncio.gather(*(slack.wait_for_ack(d.envelope_id) for d in sent))
    assert all(a.latency < 3.0 for a in acks)
    return [str(a.payload.get("text") or "") for a in acks]


async def test_a_storm_of_kills_each_acked_with_its_own_incident_and_a_bad_one_told_why(
    slack: FakeSlack, tmp_path, batches: list[int]
) -> None:
    async with running(slack, bot_settings(tmp_path)) as server:
        rb = server.rb
        texts = [f"desk storm {i}" for i in range(8)]
        texts.insert(3, "venue:nowhere wrong scope")
        texts.insert(6, "reducing paper exits only")
        said = await storm(slack, texts)
        assert "unknown venue 'nowhere'" in said[3]
        ids = [re.search(r"INC-\d{4}", text) for text in said]
        assert ids[3] is None
        named = [m.group(0) for i, m in enumerate(ids) if i != 3 and m is not None]
        assert len(named) == 9 and len(set(named)) == 9, said
        assert "REDUCING" in said[6]
        await settled(slack, rb, 9, timeout=30)
        assert sum(batches) == 9
        holds = rb.killswitch.holds.active()
        assert sorted(h.incident_id for h in holds) == sorted(named)
        assert {h.scope: h.state for h in holds if h.scope != "global"} == {
            "venue:paper": "REDUCING"
        }
        reasons = {i.id: i.reason for i in rb.incidents.list()}
        expected = [text.removeprefix("reducing paper ") for text in texts]
        assert [reasons[m.group(0)] for m in ids if m is not None] == [
            reason for reason, m in zip(expected, ids, strict=True) if m is not None
        ]
        assert rb.killswitch.state_of(["global"]) is TradingState.HALTED
        paper = rb.venue("paper")
        assert isinstance(paper, PaperVenue)
        assert paper.book.order_rows("WHERE status IN ('OPEN', 'PARTIALLY_FILLED')") == []
        headlines = {m.ts for m in slack.messages(OPS, include_replies=False)}
        assert len(headlines) == 9, "one headline, one thread per incident"
        assert {i.slack_ts for i in rb.incidents.list()} == headlines
        assert verify(rb.db).intact


async def test_a_storm_while_another_process_holds_the_database_cancels_and_holds_every_kill(
    slack: FakeSlack, tmp_path, write_lock
) -> None:
    settings = bot_settings(tmp_path)
    async with running(slack, settings) as server:
        rb = server.rb
        paper = await seeded_paper(rb)
        with write_lock(settings.database):
            said = await storm(slack, [f"locked storm {i}" for i in range(4)])
            assert all("locked by another process" in text for text in said), said
            await slack.wait_until(
                lambda: not paper.book.order_rows("WHERE status IN ('OPEN', 'PARTIALLY_FILLED')"),
                timeout=4,
            )
            assert rb.db.query("SELECT * FROM holds") == []
        await settled(slack, rb, 4, timeout=30)
        assert sorted(i.reason for i in rb.incidents.list()) == [
            f"locked storm {i}" for i in range(4)
        ]
        assert len(rb.killswitch.holds.active()) == 4
        assert rb.killswitch.state_of(["global"]) is TradingState.HALTED
        assert verify(rb.db).intact
