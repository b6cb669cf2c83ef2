"""The real bot (slack-bolt, courier, SQLite, paper venues) in this process, against the
loopback Slack: what the ack and kill benchmarks drive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fakes.rollbot_harness import secrets_for
from fakes.slack import FakeSlack

from rollbot.bot.slack.server import Server
from rollbot.config import Settings


@dataclass
class Bot:
    server: Server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.bound_port}/slack/events"


@asynccontextmanager
async def running_bot(slack: FakeSlack, settings: Settings) -> AsyncIterator[Bot]:
    server = Server(settings, secrets_for(slack), http=True, port=0, start_clock=False)
    await server.start()
    try:
        yield Bot(server)
    finally:
        await server.stop()


def outbox_pending(server: Server) -> int:
    assert server.rb is not None
    row = server.rb.db.one("SELECT COUNT(*) AS n FROM outbox WHERE delivered_at IS NULL")
    return int(row["n"]) if row else 0


async def settle(server: Server, timeout: float = 30) -> None:
    """Until the background work (kill runs, replies) is done and the outbox is delivered."""
    assert server.bot is not None
    deadline = time.monotonic() + timeout
    while server.bot.tasks or outbox_pending(server):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"bot still busy after {timeout:g} s: {len(server.bot.tasks)} tasks,"
                f" {outbox_pending(server)} messages to deliver"
            )
        server.bot.courier.kick()
        await asyncio.sleep(0.05)
