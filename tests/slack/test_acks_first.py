"""Acks before the work that can wait (bot/slack/acks_first.py), and an ack that is never lost:
a request whose answer is not ready by ACK_BY_S is acked with "still working", and the answer
follows on its response_url."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fakes.rollbot_harness import OPERATOR, OPS, bot_settings, events_url, running
from fakes.slack import FakeSlack

from rollbot.bot.slack import app as slack_app
from rollbot.bot.slack import deliveries
from rollbot.bot.slack.acks_first import AcksFirst


async def test_work_after_an_ack_waits_until_no_request_waits_for_its_ack() -> None:
    acks = AcksFirst()
    order: list[str] = []

    async def follow_up() -> None:
        await acks.after_acks(at_most=5)
        order.append("follow-up")

    with acks.acking():
        task = asyncio.create_task(follow_up())
        await asyncio.sleep(0.05)
        assert order == []  # a request still waits for its ack
        order.append("acked")
    await asyncio.wait_for(task, 1)
    assert order == ["acked", "follow-up"]


async def test_work_after_an_ack_waits_at_most_its_bound() -> None:
    acks = AcksFirst()
    with acks.acking():
        started = asyncio.get_running_loop().time()
        await acks.after_acks(at_most=0.05)  # a request that never acks holds nothing back
        waited = asyncio.get_running_loop().time() - started
    assert 0.04 <= waited < 1
    await asyncio.wait_for(acks.after_acks(at_most=5), 0.1)  # none waiting: at once


async def test_while_another_process_holds_the_database_requests_are_acked_within_slacks_limit(
    slack: FakeSlack, tmp_path: Path, write_lock
) -> None:
    """SQLite waits for a lock with the event loop stopped, every ack with it: a request that
    cannot record its delivery tries again with the loop free between tries, and says after
    RECORD_BY_S that nothing was done, not after the busy timeout (5 s here, past Slack's 3 s);
    a /kill at the same moment is acked at once."""
    settings = bot_settings(tmp_path)
    async with running(slack, settings, http=True) as server:
        url = events_url(server)
        with write_lock(settings.database):
            positions, kill = await asyncio.gather(
                slack.http_slash_command(url, "/positions", user_id=OPERATOR, channel_id=OPS),
                slack.http_slash_command(url, "/kill", "locked", user_id=OPERATOR, channel_id=OPS),
            )
            assert kill.status == 200 and kill.latency < 1.0
            assert "locked by another process" in kill.response_text
            assert positions.status == 200
            assert deliveries.RECORD_BY_S <= positions.latency < 3.0
            assert "locked by another process; nothing was done" in positions.response_text
        again = await slack.http_slash_command(url, "/positions", user_id=OPERATOR, channel_id=OPS)
        assert again.status == 200 and "locked" not in again.response_text
        await slack.wait_until(lambda: [r for r in slack.responses() if "Positions:" in r.text])


async def test_a_lock_held_for_moments_delays_a_click_and_loses_nothing(
    slack: FakeSlack, tmp_path: Path, write_lock
) -> None:
    """Two hosts share the database: the other one's writes hold the lock for moments. A
    request waits them out (in tries) instead of being refused."""
    settings = bot_settings(tmp_path)
    async with running(slack, settings, http=True) as server:
        url = events_url(server)

        async def lock_briefly() -> None:
            with write_lock(settings.database):
                await asyncio.sleep(1.0)

        locking = asyncio.create_task(lock_briefly())
        await asyncio.sleep(0.3)  # the locker is up and holds the lock
        ack = await slack.http_slash_command(url, "/positions", user_id=OPERATOR, channel_id=OPS)
        await locking
        assert ack.status == 200 and "locked" not in ack.response_text
        assert 0.3 < ack.latency < 2.0  # it waited the lock out
        await slack.wait_until(lambda: [r for r in slack.responses() if "Positions:" in r.text])


async def test_an_answer_not_ready_in_time_is_acked_as_still_working_and_follows(
    slack: FakeSlack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bolt no longer times the ack out itself (it awaits the listener up to the ack): a
    handler still waiting at ACK_BY_S gets "still working" sent for it, and what it would have
    acked follows on the response_url."""
    monkeypatch.setattr(slack_app, "ACK_BY_S", 0.2)
    async with running(slack, bot_settings(tmp_path), http=True) as server:
        bot = server.bot

        async def slow(bot: slack_app.SlackBot, req: slack_app.Req) -> None:
            await asyncio.sleep(0.6)
            await req.ack_now(text="the slow answer")

        bot.bolt.command("/slow")(bot.listener("/slow", slow, ack_first=False))
        url = events_url(server)
        ack = await slack.http_slash_command(url, "/slow", user_id=OPERATOR, channel_id=OPS)
        assert ack.status == 200 and ack.latency < 0.5
        assert "Still working on it" in ack.response_text
        posted = await slack.wait_until(
            lambda: [r for r in slack.responses() if "the slow answer" in r.text], timeout=5
        )
        assert len(posted) == 1
