"""Issue 18.3: the guard service answers what check_order answers (the same code), over HTTP
and a Unix socket, refuses a wrong token with 401 and an audited event, names the field of a bad
request, and streams a HALTED change the moment a kill stores its hold."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rollbot.bot.guard_service import AUDIT_BURST, GuardService
from rollbot.brokers.paper.scenario import Scenario, ScenarioAccount, ScenarioPosition
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.killswitch.gates import Gates
from rollbot.commands.killswitch.trading_state import TradingState
from rollbot.config import Settings
from rollbot.storage.events import Actor

TOKEN = "guard-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALICE = Actor(id="U0ALICE", source="slack")
HALTED, REDUCING = TradingState.HALTED, TradingState.REDUCING


class Running:
    def __init__(self, service: GuardService, rb: Rollbot, socket: Path) -> None:
        self.service, self.rb, self.socket = service, rb, socket
        self.url = f"http://127.0.0.1:{service.bound_port}"


@pytest.fixture
async def running(settings: Settings, tmp_path: Path) -> AsyncIterator[Running]:
    seeded = Rollbot.open(settings)
    seeded.venue("paper").seed(  # type: ignore[attr-defined]
        Scenario(
            account=ScenarioAccount(cash=Decimal(100000)),
            positions=[
                ScenarioPosition(symbol="AAPL", quantity=Decimal(400), avg_price=Decimal(100))
            ],
            marks={"MSFT": Decimal(300)},
        )
    )
    seeded.db.close()
    rb = Rollbot.open(settings, clock=ManualClock(), create=False)
    service = GuardService(rb, TOKEN)
    socket = tmp_path / "guard.sock"
    await service.start(port=0, socket=socket)
    try:
        yield Running(service, rb, socket)
    finally:
        await service.stop()
        await rb.aclose()


async def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/guard", data=data, headers=AUTH if headers is None else headers) as r,
    ):
        return r.status, await r.json()


ORDERS: list[dict[str, Any]] = [
    {"venue": "paper", "symbol": "AAPL", "side": "BUY", "quantity": 10},
    {"venue": "paper", "symbol": "AAPL", "side": "SELL", "quantity": "100"},
    {"venue": "paper", "symbol": "AAPL", "side": "SELL", "quantity": 401, "position": 1000},
    {"venue": "paper", "symbol": "MSFT", "side": "SELL", "quantity": 5, "position": 5},
    {"venue": "paper", "symbol": "AAPL", "side": "BUY", "quantity": 1, "cancel": True},
    {"venue": "paper", "symbol": "AAPL", "side": "BUY", "quantity": 1, "strategy": "ma"},
    {"venue": "paper", "symbol": "AAPL", "side": "BUY", "quantity": 1, "strategy": "MA"},
    {"venue": "paper", "symbol": "AAPL", "side": "SELL", "quantity": 1, "account": "DU1"},
    {"venue": "paper", "symbol": "AAPL", "side": "BUY", "quantity": 1, "account": "DU2"},
    {"venue": "PAPER", "symbol": "AAPL", "side": "BUY", "quantity": 1},
    {"venue": "paper", "symbol": "AAPL", "side": "HOLD", "quantity": 1},
    {"venue": "paper", "symbol": "AAPL", "side": "BUY", "quantity": "NaN"},
    {"venue": "paper", "symbol": "AAPL", "side": "BUY", "quantity": -1},
]


def states(rb: Rollbot) -> list[tuple[str, Any]]:
    """Every state and scope a hold can put the guard in (each applied after the previous)."""
    ks = rb.killswitch
    gates = Gates(rb.settings.paths.live_environment, rb.settings.paths.shadow_config)
    return [
        ("gates off, no hold", lambda: None),
        ("live, no hold", lambda: gates.arm(ALICE, "live")),
        ("venue REDUCING", lambda: ks.trigger("venue:paper", "r", ALICE, state=REDUCING)),
        ("strategy HALTED", lambda: ks.trigger("strategy:ma", "s", ALICE)),
        ("account HALTED", lambda: ks.trigger("account:paper/DU1", "a", ALICE)),
        ("global HALTED", lambda: ks.trigger("global", "g", ALICE)),
    ]


async def test_every_decision_over_http_and_the_socket_is_check_orders(
    running: Running, settings: Settings
) -> None:
    # another process's connection, on the service's clock (so "read at" texts match): it
    # sets the holds and answers in-process
    other = Rollbot.open(settings, clock=running.rb.clock)
    unix = aiohttp.UnixConnector(path=str(running.socket))
    compared = 0
    async with aiohttp.ClientSession(connector=unix) as over_socket:
        for name, apply in states(other):
            apply()
            for i, order in enumerate(ORDERS):
                ask = order | {"order_id": f"{name}-{i}"}
                status, http = await post(running.url, ask)
                running.rb.killswitch.guard.release(ask["order_id"], "test")
                async with over_socket.post("http://guard/guard", json=ask, headers=AUTH) as r:
                    status_unix, unix_json = r.status, await r.json()
                running.rb.killswitch.guard.release(ask["order_id"], "test")
                local = other.killswitch.check_order(**ask).model_dump(mode="json")
                other.killswitch.guard.release(ask["order_id"], "test")
                for answer in (http, unix_json):
                    answer.pop("reservation_id")
                local.pop("reservation_id")
                assert (status, status_unix) == (200, 200)
                assert http == local == unix_json, (name, order)
                compared += 1
    assert compared == len(ORDERS) * 6
    other.db.close()


async def test_the_reducing_rule_holds_through_the_service(
    running: Running, settings: Settings
) -> None:
    other = Rollbot.open(settings, clock=running.rb.clock)
    Gates(settings.paths.live_environment, settings.paths.shadow_config).arm(ALICE, "live")
    other.killswitch.trigger("venue:paper", "de-risk", ALICE, state=REDUCING)
    sell = {"venue": "paper", "symbol": "AAPL", "side": "SELL", "quantity": 400, "position": 400}
    _, first = await post(running.url, sell | {"order_id": "S1"})
    _, second = await post(running.url, sell | {"order_id": "S2"})
    # another process (its own thread, no event loop), the same reservations
    local = await asyncio.to_thread(other.killswitch.check_order, **sell)
    assert (first["allowed"], first["code"]) == (True, "OK_REDUCES")
    assert (second["allowed"], second["code"]) == (False, "REDUCING_RESERVED")
    assert (local.allowed, local.code) == (False, "REDUCING_RESERVED")
    async with (
        aiohttp.ClientSession() as session,
        session.post(running.url + "/guard/release", json={"order_id": "S1"}, headers=AUTH) as r,
    ):
        assert (r.status, (await r.json())["released"]) == (200, 1)
    _, third = await post(running.url, sell | {"order_id": "S3"})
    assert third["allowed"]
    other.db.close()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        ({"venue": "paper", "symbol": "AAPL", "quantity": 1}, "side"),
        ({"venue": "paper", "symbol": "AAPL", "side": "BUY", "quantity": [1]}, "quantity"),
        ({"venue": "paper", "symbol": "AAPL", "side": "BUY", "quantity": 1, "qty": 2}, "qty"),
        (
            {"venue": "paper", "symbol": "AAPL", "side": "BUY", "quantity": 1, "cancel": "x"},
            "cancel",
        ),
        ([1, 2], "body"),
    ],
)
async def test_a_bad_request_is_400_naming_the_field(
    running: Running, body: Any, field: str
) -> None:
    status, answer = await post(running.url, body)
    assert status == 400
    assert answer["field"] == field and answer["error"].startswith(f"{field}: ")


async def test_a_wrong_or_missing_token_is_401_and_audited_a_flood_only_counted(
    running: Running,
) -> None:
    order = ORDERS[0]
    status, answer = await post(running.url, order, headers={})
    assert (status, answer["code"]) == (401, "NO_TOKEN")
    for _ in range(AUDIT_BURST + 4):
        status, answer = await post(
            running.url, order, headers={"Authorization": "Bearer not-the-token"}
        )
        assert (status, answer["code"]) == (401, "BAD_TOKEN")
    async with (
        aiohttp.ClientSession() as session,
        session.get(running.url + "/guard/events", headers={}) as r,
    ):
        assert r.status == 401
    refused = running.rb.events.list(kinds=["GUARD_REFUSED"])
    assert len(refused) == AUDIT_BURST  # the rest are counted, not written one by one
    assert [e.data["code"] for e in refused[:2]] == ["NO_TOKEN", "BAD_TOKEN"]
    assert all(TOKEN not in json.dumps(e.data) for e in refused)
    running.rb.clock.advance(61)  # type: ignore[attr-defined]
    await post(running.url, order, headers={"Authorization": "Bearer x"})
    summary = running.rb.events.list(kinds=["GUARD_REFUSED"])[AUDIT_BURST]
    counts = {"BAD_TOKEN": 5, "NO_TOKEN": 1}  # the stream asked for without a token too
    assert summary.data == {"code": "COUNTED", "counts": counts, "total": 6}


async def test_the_event_stream_carries_halted_the_moment_a_kill_is_stored(
    running: Running, rollbot: Any
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(running.url + "/guard/events", headers=AUTH) as stream,
    ):
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        first = await _next_event(stream)
        assert first["scopes"]["global"] == "ACTIVE" and first["available"]
        kill = await asyncio.to_thread(rollbot, "kill", "trigger", "--reason", "runaway")
        assert kill.returncode == 0, kill.stdout + kill.stderr
        changed = await _next_event(stream)
        while changed["scopes"]["global"] != "HALTED":  # the gates may change first
            changed = await _next_event(stream)
        assert changed["scopes"]["venue:paper"] == "HALTED"


async def _next_event(stream: aiohttp.ClientResponse) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            line = (await stream.content.readline()).decode()
            if line.startswith("data: "):
                return json.loads(line[6:])


async def test_rollbot_serve_answers_the_guard_on_its_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakes.rollbot_harness import bot_settings, secrets_for
    from fakes.slack import FakeSlack

    from rollbot.bot.slack.server import Server

    monkeypatch.setenv("ROLLBOT_GUARD_TOKEN", TOKEN)
    socket = tmp_path / "serve-guard.sock"
    async with FakeSlack() as slack:
        server = Server(
            bot_settings(tmp_path),
            secrets_for(slack),
            http=True,
            port=0,
            start_clock=False,
            guard_socket=socket,
        )
        await server.start()
        try:
            server.rb.killswitch.trigger("global", "stop", ALICE)  # type: ignore[union-attr]
            async with (
                aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket))) as s,
                s.post("http://guard/guard", json=ORDERS[0], headers=AUTH) as r,
            ):
                answer = await r.json()
            assert (r.status, answer["allowed"], answer["code"]) == (200, False, "HALTED")
        finally:
            await server.stop()
    assert not socket.exists()


def test_guard_serve_needs_its_token_and_answers_over_the_socket(
    rollbot: Any, settings: Settings, tmp_path: Path
) -> None:
    Rollbot.open(settings).db.close()
    missing = rollbot("guard", "serve", "--socket", str(tmp_path / "g.sock"))
    assert missing.returncode == 2 and "ROLLBOT_GUARD_TOKEN" in missing.stderr

    socket = tmp_path / "g.sock"
    proc = rollbot.popen(
        "guard", "serve", "--socket", str(socket), env={"ROLLBOT_GUARD_TOKEN": TOKEN}
    )
    try:
        assert proc.stdout is not None
        assert "rollbot guard service on unix:" in proc.stdout.readline()

        async def ask() -> tuple[int, Any]:
            async with (
                aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket))) as s,
                s.post("http://guard/guard", json=ORDERS[0], headers=AUTH) as r,
            ):
                return r.status, await r.json()

        status, answer = asyncio.run(ask())
        assert (status, answer["code"]) == (200, "LIVE_GATES_DISABLED")
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0 and not socket.exists()


async def test_a_head_parsed_and_token_checked_once_is_still_one_services_alone(
    running: Running, tmp_path: Path
) -> None:
    """The service parses a repeated head and checks its token once (guard_http.head_of): the
    same bytes, right for one service's token, stay refused by a service with another."""
    body = json.dumps(ORDERS[0]).encode()
    raw = (
        f"POST /guard HTTP/1.1\r\nHost: guard\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    other = GuardService(running.rb, "another-token-0123456789abcdef")
    await other.start(socket=tmp_path / "other.sock")
    try:
        for socket, status in [(running.socket, 200), (tmp_path / "other.sock", 401)] * 2:
            reader, writer = await asyncio.open_unix_connection(str(socket))
            writer.write(raw + raw)  # twice on one connection: the second from the cache
            for _ in range(2):
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
            writer.close()
    finally:
        await other.stop()


async def test_every_open_stream_carries_each_change_whenever_it_was_opened(
    running: Running, rollbot: Any
) -> None:
    """The watch sleeps while no stream is open: a stream opened after the last one closed gets
    the next change, and so does every stream open at once, whenever each was opened."""
    async with aiohttp.ClientSession() as session:
        async with session.get(running.url + "/guard/events", headers=AUTH) as early:
            assert (await _next_event(early))["scopes"]["global"] == "ACTIVE"
        await asyncio.sleep(0.05)  # no stream open: the watch goes idle
        async with session.get(running.url + "/guard/events", headers=AUTH) as first:
            assert (await _next_event(first))["scopes"]["global"] == "ACTIVE"
            running.rb.killswitch.trigger("global", "stop", ALICE)
            async with session.get(running.url + "/guard/events", headers=AUTH) as second:
                assert (await _next_event(second))["scopes"]["global"] == "HALTED"
                changed = await _next_event(first)
                while changed["scopes"]["global"] != "HALTED":
                    changed = await _next_event(first)
                kill = await asyncio.to_thread(rollbot, "kill", "trigger", "--reason", "again")
                assert kill.returncode == 0, kill.stdout + kill.stderr
                running.rb.killswitch.clear("global", "ok", ALICE)
                for stream in (first, second):  # HALTED (the CLI's kill), then ACTIVE again
                    seen = await _next_event(stream)
                    while seen["scopes"]["global"] == "HALTED":
                        seen = await _next_event(stream)
