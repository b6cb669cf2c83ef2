"""Slack's side of HTTP mode, lean enough to measure the bot rather than itself: signed slash
commands (the loopback Slack's bodies, trigger ids and response URLs; its v0 signature) sent
over one pooled aiohttp session.

FakeSlack.http_slash_command opens a new ClientSession per request; in a burst of 50 that costs
the sender tens of milliseconds of its own loop, which a latency figure would then charge to
the bot. Here the body is built and signed first, the clock starts at the send and stops when
the response has been read.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import aiohttp
from fakes.slack import FakeSlack, signed_headers

FORM = "application/x-www-form-urlencoded"


@dataclass
class Sent:
    command: str
    status: int
    text: str
    latency: float  # seconds, send to response read


class SignedSender:
    def __init__(self, slack: FakeSlack, url: str) -> None:
        self.slack = slack
        self.url = url
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=10),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.session is not None:
            await self.session.close()

    async def send(self, command: str, text: str, *, user_id: str, channel_id: str) -> Sent:
        assert self.session is not None
        body = self.slack.slash_command_body(
            command, text, user_id=user_id, channel_id=channel_id
        ).encode()
        headers = signed_headers(body, self.slack.signing_secret, content_type=FORM)
        started = time.perf_counter()
        async with self.session.post(self.url, data=body, headers=headers) as resp:
            answer = await resp.text()
        return Sent(command, resp.status, answer, time.perf_counter() - started)

    async def burst(
        self, commands: list[tuple[str, str]], *, user_id: str, channel_id: str
    ) -> list[Sent]:
        """Every command at once, as a desk hitting Slack together."""
        return list(
            await asyncio.gather(
                *(self.send(c, t, user_id=user_id, channel_id=channel_id) for c, t in commands)
            )
        )
