"""`rollbot serve`: Socket Mode by default, HTTP with --http. One asyncio loop runs bolt, the
venues, the outbox courier and the clock."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from rollbot.bot.loop_lag import LoopLagProbe
from rollbot.bot.slack.app import SlackBot
from rollbot.bot.slack.unverified import UnverifiedRequests
from rollbot.clock import Clock
from rollbot.commands.approvals.recover import resume_unfinished
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.risk import preflight
from rollbot.config import Secrets, Settings
from rollbot.errors import ConfigError
from rollbot.storage.events import Actor

log = logging.getLogger("rollbot.serve")
DEFAULT_API = "https://slack.com/api/"


def check_tokens(secrets: Secrets, settings: Settings, http: bool) -> None:
    missing = []
    if not secrets.slack_bot_token:
        missing.append("SLACK_BOT_TOKEN (the bot token, xoxb-…)")
    if http and not secrets.slack_signing_secret:
        missing.append("SLACK_SIGNING_SECRET (HTTP mode verifies Slack's signatures with it)")
    if not http and not secrets.slack_app_token:
        missing.append(
            "SLACK_APP_TOKEN (an app-level token, xapp-…, with connections:write, "
            "for Socket Mode; or run with --http)"
        )
    if missing:
        raise ConfigError(
            "cannot start: missing environment variable(s):\n  " + "\n  ".join(missing)
        )
    if not settings.slack.ops_channel:
        raise ConfigError(
            "cannot start: [slack] ops_channel is not set in the config "
            "(the channel where incidents are posted)"
        )


STARTUP_TIMEOUT_S = 15.0  # every start-up check answers, or serve exits, well within 20 s


async def authenticate(client: AsyncWebClient) -> dict[str, Any]:
    try:
        resp = await asyncio.wait_for(client.auth_test(), STARTUP_TIMEOUT_S)
    except SlackApiError as exc:
        error = exc.response.get("error", "") if exc.response else str(exc)
        raise ConfigError(f"SLACK_BOT_TOKEN was refused by Slack's auth.test: {error}") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ConfigError(
            f"cannot reach Slack at {client.base_url} (auth.test): {exc or 'no answer'}"
        ) from None
    return dict(resp.data) if isinstance(resp.data, dict) else {}


async def check_app_token(client: AsyncWebClient, app_token: str) -> None:
    """The Socket Mode client retries a refused app token forever; ask once, and stop."""
    app_client = AsyncWebClient(base_url=client.base_url, session=client.session)
    try:
        await asyncio.wait_for(
            app_client.apps_connections_open(app_token=app_token), STARTUP_TIMEOUT_S
        )
    except SlackApiError as exc:
        error = exc.response.get("error", "") if exc.response else str(exc)
        raise ConfigError(
            f"SLACK_APP_TOKEN was refused by Slack's apps.connections.open: {error} (it must be"
            " an app-level token, xapp-…, with connections:write; or run with --http)"
        ) from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ConfigError(
            f"cannot reach Slack at {client.base_url} (apps.connections.open): {exc or 'no answer'}"
        ) from None


UNVERIFIED = web.AppKey("unverified", UnverifiedRequests)


def web_app(bot: SlackBot, *, slack_routes: bool) -> web.Application:
    app = web.Application()
    app[UNVERIFIED] = unverified = UnverifiedRequests(bot)

    async def events(request: web.Request) -> web.Response:
        with bot.acks.acking():
            bolt_req = await to_bolt_request(request)
            bolt_resp = await bot.bolt.async_dispatch(bolt_req)
        if bolt_resp.status == 401:  # bolt refused the signature: say why, in the event log
            unverified(bolt_req.headers, bolt_req.body)
        return await to_aiohttp_response(bolt_resp)

    async def healthz(_: web.Request) -> web.Response:
        """503 while Slack refuses what rollbot posts: a message nobody sees is an outage."""
        pending = bot.rb.db.one("SELECT COUNT(*) AS n FROM outbox WHERE delivered_at IS NULL")
        set_aside = bot.rb.outbox.count_set_aside()
        problems = []
        if bot.courier.channel_problem:
            problems.append(bot.courier.channel_problem)
        if set_aside:
            problems.append(f"{set_aside} message(s) Slack refused, retried until it takes them")
        # the armed status (commands/risk/preflight.py): a kill path that cannot work is an outage
        failing = {c.name: c.reason for c in preflight.latest(bot.rb) if not c.ok}
        problems += [f"armed status: {name} fails: {why}" for name, why in failing.items()]
        body = {
            "ok": not problems,
            "outbox_pending": pending["n"] if pending else 0,
            "outbox_set_aside": set_aside,
            "problems": problems,
            "armed_failing": failing,
        }
        return web.json_response(body, status=200 if not problems else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=bot.metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    if slack_routes:
        app.router.add_post("/slack/events", events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


class Server:
    """Everything `serve` runs, startable and stoppable from tests in the same loop."""

    def __init__(
        self,
        settings: Settings,
        secrets: Secrets,
        *,
        http: bool = False,
        port: int | None = None,
        host: str = "127.0.0.1",
        clock: Clock | None = None,
        start_clock: bool = True,
        guard_port: int | None = None,
        guard_socket: Path | None = None,
    ) -> None:
        self.settings = settings
        self.secrets = secrets
        self.http = http
        self.port = port
        self.host = host
        self.clock = clock
        self.start_clock = start_clock
        self.stop_event = asyncio.Event()
        self.bound_port: int | None = None
        self.identity: dict[str, Any] = {}
        self.channel_problem: str | None = None
        self._runner: web.AppRunner | None = None
        self._handler: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._session: aiohttp.ClientSession | None = None
        self.rb: Rollbot | None = None
        self.bot: SlackBot | None = None
        self.clockwork: Any = None
        self.guard_port, self.guard_socket = guard_port, guard_socket
        self.guard: Any = None  # bot/guard_service.GuardService, when asked for
        self.loop_lag = LoopLagProbe()

    async def start(self) -> None:
        check_tokens(self.secrets, self.settings, self.http)
        guard_token = None
        if self.guard_port is not None or self.guard_socket is not None:
            from rollbot.bot.guard_service import guard_token as read_guard_token

            guard_token = read_guard_token()  # missing: refuse to start, before anything runs
        token = (
            self.secrets.slack_bot_token.get_secret_value() if self.secrets.slack_bot_token else ""
        )
        # one pooled session: a new TCP connection per API call was half the courier's time
        self._session = aiohttp.ClientSession()
        client = AsyncWebClient(
            token=token, base_url=self.secrets.slack_api_url or DEFAULT_API, session=self._session
        )
        try:
            self.identity = await authenticate(client)
            if not self.http:
                await check_app_token(client, self._app_token())
        except BaseException:
            await self._session.close()
            self._session = None
            raise
        self.rb = rb = Rollbot.open(self.settings, clock=self.clock, secrets=self.secrets)
        signing = (
            self.secrets.slack_signing_secret.get_secret_value()
            if self.secrets.slack_signing_secret
            else None
        )
        self.bot = bot = SlackBot(
            rb, client, identity=self.identity, signing_secret=signing, http_mode=self.http
        )
        self.channel_problem = await bot.courier.probe()
        if self.channel_problem:
            # /kill still works from Slack and the terminal; what it posts waits for the fix
            log.error("cannot post in the ops channel: %s", self.channel_problem)
        self._tasks.append(asyncio.create_task(bot.courier.run(self.stop_event)))
        self.loop_lag.register(bot.metrics.registry)  # issue 18: what holds the loop shows
        self._tasks.append(asyncio.create_task(self.loop_lag.run(self.stop_event)))
        self._tasks.append(asyncio.create_task(self._recover()))
        if self.start_clock:
            self._start_clockwork()
        if guard_token is not None:
            from rollbot.bot.guard_service import GuardService

            self.guard = GuardService(rb, guard_token)
            await self.guard.start(host=self.host, port=self.guard_port, socket=self.guard_socket)
        if self.http or self.port is not None:
            self._runner = web.AppRunner(web_app(bot, slack_routes=self.http))
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port or 0)
            await site.start()
            sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
            self.bound_port = sockets[0].getsockname()[1] if sockets else self.port
        if not self.http:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            self._handler = AsyncSocketModeHandler(bot.bolt, self._app_token())
            await self._handler.connect_async()

    def _app_token(self) -> str:
        token = self.secrets.slack_app_token
        return token.get_secret_value() if token else ""

    def _start_clockwork(self) -> None:
        """The escalation/monitor clock (bot/scheduler.py)."""
        from rollbot.bot.scheduler import Clockwork

        assert self.rb is not None
        from rollbot.bot.slack.probe import slack_probe

        assert self.bot is not None
        self.clockwork = Clockwork(self.rb, slack_probe=slack_probe(self.rb, self.bot.client))
        self.clockwork.yield_to = self.bot.acks.after_acks
        self._tasks.append(asyncio.create_task(self.clockwork.run(self.stop_event)))

    async def _recover(self) -> None:
        assert self.rb is not None and self.bot is not None
        try:
            await resume_unfinished(self.rb, Actor(id="rollbot", source="system"))
        except Exception:
            log.exception("recovering unfinished incidents failed")
        self.bot.courier.kick()

    async def stop(self) -> None:
        self.stop_event.set()
        if self.guard is not None:
            await self.guard.stop()
        if self._handler is not None:
            with contextlib.suppress(Exception):
                await self._handler.close_async()
        if self._runner is not None:
            with contextlib.suppress(Exception):  # what a flood left counted is recorded too
                self._runner.app[UNVERIFIED].flush(self.rb.clock.now())  # type: ignore[union-attr]
            await self._runner.cleanup()
        if self.bot is not None:
            for task in list(self.bot.tasks):
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(task, 10)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.rb is not None:
            await self.rb.aclose()
        if self._session is not None:
            await self._session.close()

    def describe(self) -> str:
        who = self.identity.get("user") or self.identity.get("user_id") or "?"
        team = self.identity.get("team") or self.identity.get("team_id") or "?"
        mode = f"HTTP on {self.host}:{self.bound_port}" if self.http else "Socket Mode"
        extra = (
            f", metrics on {self.host}:{self.bound_port}"
            if not self.http and self.bound_port
            else ""
        )
        ready = f"rollbot ready: {mode}{extra} as @{who} in {team}"
        if self.channel_problem:
            ready += (
                f"\nWARNING: rollbot cannot post in the ops channel"
                f" {self.settings.slack.ops_channel}: {self.channel_problem}"
            )
        return ready


def freeze_startup_objects() -> None:
    """What start-up allocated (modules, pydantic schemas, bolt, the config: ~300,000 objects)
    lives as long as the process. Left to the collector, every generation-2 collection walked
    all of it: 100-450 ms with the event loop stopped, in the middle of a burst of /kill acks
    (bench/ack_latency.py). Frozen, a full collection walks only what was made since."""
    # what a kill's run imports on first use (kept lazy for the terminal's fast kill), here,
    # so the first /kill after a start does not pay it in the middle of acking
    import tomlkit  # noqa: F401  (commands/killswitch/gates.py writes the trading system's files with it)

    gc.collect()
    gc.freeze()


async def serve(
    settings: Settings,
    *,
    http: bool,
    port: int | None,
    host: str,
    guard_port: int | None = None,
    guard_socket: Path | None = None,
) -> None:
    """Until SIGTERM/SIGINT, which stop it cleanly at any point, start-up included."""
    server = Server(
        settings,
        Secrets(),
        http=http,
        port=port,
        host=host,
        guard_port=guard_port,
        guard_socket=guard_socket,
    )
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, done.set)
    starting = asyncio.create_task(server.start())
    signalled = asyncio.create_task(done.wait())
    try:
        await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a refused token: ConfigError, after the cleanup below
            freeze_startup_objects()
            print(server.describe(), flush=True)
            if server.guard is not None:
                print(server.guard.describe(), flush=True)
            await done.wait()
        else:
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
    finally:
        signalled.cancel()
        if done.is_set():
            print("rollbot stopping…", file=sys.stderr, flush=True)
            if server.clockwork is not None:  # a stop a person asked for disarms the countdowns
                for note in await server.clockwork.disarm_dead_mans_switch(
                    "rollbot serve stopped by a signal"
                ):
                    print(note, file=sys.stderr, flush=True)
        await server.stop()
