"""A webhook URL's secrets (user:pass@, the token in its path, its query) are never stored or
shown: not in events, the timers table, the escalation snapshot, nor the Slack thread (issue 14,
item 12). The page itself still goes to the real URL, read from rollbot.toml at send time.
`rollbot kill trigger` in a subprocess opens the incident; the clock's sweep and timer firing
run in-process; a loopback receiver answers 404 (a final failure, reported in the thread)."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
from aiohttp import web
from fakes.loopback import serve_post

from rollbot.commands.desk.context import Rollbot
from rollbot.commands.paging import escalation
from rollbot.commands.rollback.timers import fire_due
from rollbot.config import Contact, Settings, SlackConfig

Run = Callable[..., CompletedProcess[str]]
SECRETS = ("pa55w0rd", "t0k3nABC", "q5ecret", "pager:")


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[web.Request]]]:
    seen: list[web.Request] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request)
        return web.json_response({"error": "no such route"}, status=404)

    async with serve_post("/hook/{token}", handle) as base:
        host = base.removeprefix("http://")
        yield f"http://pager:pa55w0rd@{host}/hook/t0k3nABC?key=q5ecret", seen


@pytest.fixture
def settings(settings: Settings, receiver: tuple[str, list[Any]]) -> Settings:
    url, _ = receiver
    return settings.model_copy(
        update={
            "contacts": [
                Contact(name="Rita Risk", role="risk_officer", slack_id="U0RISK", webhook_url=url)
            ],
            "slack": SlackConfig(ops_channel="C0OPS"),
        }
    )


def stored_text(db: Path) -> str:
    """Every value of every row of every table, as one text."""
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return json.dumps(
            {t: [list(map(str, row)) for row in conn.execute(f"SELECT * FROM {t}")] for t in tables}
        )


async def test_a_webhook_urls_secrets_are_never_stored_or_shown(
    settings: Settings, rollbot: Run, receiver: tuple[str, list[web.Request]]
) -> None:
    url, seen = receiver
    killed = rollbot("kill", "trigger", "--reason", "runaway")
    assert killed.returncode == 0, killed.stdout + killed.stderr

    rb = Rollbot.open(settings)  # the clock: send the page the terminal's kill queued
    try:
        # the kill paged as it opened its incident: the clock's sweep has nothing to start
        assert escalation.get_escalation(rb, "INC-0001") is not None
        assert escalation.sweep(rb)["started"] == 0
        fired = await fire_due(rb)
        assert [f.timer.kind for f in fired] == ["webhook"]
        (failed,) = rb.events.list(kinds=["WEBHOOK_FAILED"])
    finally:
        await rb.aclose()

    # the real URL was used: its path, query and credentials reached the receiver
    (request,) = seen
    assert request.path_qs == "/hook/t0k3nABC?key=q5ecret"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(
        b"pager:pa55w0rd"
    ).decode("ascii")
    # and nothing stored holds a secret: events, timers, escalations, outbox (the Slack thread)
    text = stored_text(settings.database.path)
    assert [s for s in SECRETS if s in text] == []
    assert failed.data["host"] == url.split("@")[1].split("/")[0]  # 127.0.0.1:PORT, no more
    assert f"({failed.data['host']}) failed" in text  # the thread says which receiver failed


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:p@hooks.example.com/services/T0/B0/XyZ", "https://hooks.example.com/…"),
        ("https://events.pagerduty.com/v2/enqueue", "https://events.pagerduty.com/…"),
        ("http://h.example:8080/", "http://h.example:8080"),
        ("http://h.example?token=abc", "http://h.example/…"),
        ("http://[::1]:9000/t", "http://[::1]:9000/…"),
        ("http://h.example:notaport/x", "(unparsable URL)"),
    ],
)
def test_redact_url_keeps_scheme_host_and_port_only(url: str, shown: str) -> None:
    from rollbot.commands.paging.webhooks import redact_url

    assert redact_url(url) == shown
    assert redact_url(shown) == shown or shown == "(unparsable URL)"  # idempotent
