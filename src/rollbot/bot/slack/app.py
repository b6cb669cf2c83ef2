"""The Slack face: slack-bolt's AsyncApp wired to commands/. One asyncio loop runs bolt, the
venues, the courier and the clock.

Every listener goes through `SlackBot.listener`: a retried delivery is recognised (by the
request's trigger_id / event_id, stored in SQLite) and not run twice; the user's role and the
channel are checked; domain errors become an ephemeral sentence, anything else an ephemeral
reference number — never a traceback; ack latency and outcomes are counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.respond.internals import _build_message
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from rollbot.bot.slack import parsing
from rollbot.bot.slack.acks_first import KILL_WAIT_S, OTHER_WAIT_S, AcksFirst
from rollbot.bot.slack.courier import Courier
from rollbot.bot.slack.deliveries import Deliveries
from rollbot.bot.slack.ids import Command
from rollbot.bot.slack.metrics import Metrics
from rollbot.bot.slack.pass_batch import PassBatch
from rollbot.clock import iso
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.desk.mrkdwn import escape
from rollbot.commands.rollback.engine import Engine
from rollbot.commands.rollback.held_incident import HeldRequest, store_held_incidents
from rollbot.commands.rollback.hold_first import HOLD_FIRST_WAIT_MS
from rollbot.errors import Refused, RollbotError
from rollbot.storage.events import Actor
from rollbot.storage.incidents import Incident

log = logging.getLogger("rollbot.slack")

ACK_BY_S = 2.5  # Slack drops a request not acked within 3 s


@dataclass
class Req:
    """What a listener needs, whatever Slack delivered."""

    kind: str  # the command or action id
    user_id: str
    user_name: str
    channel_id: str
    text: str
    body: dict[str, Any]
    ack: Callable[..., Awaitable[None]]
    respond: Callable[..., Awaitable[Any]]
    client: AsyncWebClient
    acked: bool = False
    late: bool = False  # acked for the handler when it had not by ACK_BY_S
    started: float = field(default_factory=time.perf_counter)

    @property
    def actor(self) -> Actor:
        return Actor(id=self.user_id, source="slack", name=self.user_name)

    @property
    def trigger_id(self) -> str | None:
        return self.body.get("trigger_id")

    async def ack_now(self, *args: Any, **kw: Any) -> None:
        if not self.acked:
            self.acked = True
            await self.ack(*args, **kw)
        elif self.late and kw.get("text"):  # what the ack would have said, said after it
            await self.reply(kw["text"], kw.get("blocks"))

    async def reply(
        self, text: str, blocks: list[dict[str, Any]] | None = None, public: bool = False
    ) -> None:
        await self.respond(
            text=text,
            blocks=blocks,
            response_type="in_channel" if public else "ephemeral",
            replace_original=False,
        )


Handler = Callable[["SlackBot", Req], Awaitable[None]]


def pooled(respond: Any, session: Any) -> Any:
    """bolt's `respond`, over the bot's pooled HTTP session. bolt's own opens a session and a
    TCP connection per message and closes both: in a burst of /positions that was a third of
    the listeners' CPU, on the loop that acks the rest of the burst (bench/ack_latency.py).
    The message is built by bolt, as before; without a session or a response_url, bolt's."""
    url = getattr(respond, "response_url", None)
    if session is None or not url:
        return respond

    async def send(**kw: Any) -> Any:
        client = AsyncWebhookClient(url=url, proxy=respond.proxy, ssl=respond.ssl, session=session)
        return await client.send_dict(_build_message(**kw))

    return send


def _user(body: dict[str, Any]) -> tuple[str, str]:
    if "user_id" in body:  # slash command
        return body["user_id"], body.get("user_name", "")
    user = body.get("user") or {}
    return user.get("id", ""), user.get("username") or user.get("name", "")


def _channel(body: dict[str, Any]) -> str:
    if "channel_id" in body:
        return body["channel_id"]
    return (body.get("channel") or {}).get("id", "") or (body.get("container") or {}).get(
        "channel_id", ""
    )


HELD_PER_WRITE = 100  # kills per transaction: a storm of them is still a moment's write


class SlackBot:
    def __init__(
        self,
        app: Rollbot,
        client: AsyncWebClient,
        *,
        identity: dict[str, Any] | None = None,
        signing_secret: str | None = None,
        http_mode: bool = False,
    ) -> None:
        self.rb = app
        self.client = client
        self.deliveries = Deliveries(app.db)
        # the kills that reach their hold in one pass of the loop store it in one transaction
        self.held: PassBatch[HeldRequest, tuple[Incident, bool]] = PassBatch(
            self._store_held, HELD_PER_WRITE
        )
        client.retry_handlers.extend(
            [
                AsyncRateLimitErrorRetryHandler(max_retry_count=3),
                AsyncConnectionErrorRetryHandler(max_retry_count=1),
            ]
        )
        identity = identity or {}
        token = client.token or ""

        async def authorize(**_: Any) -> AuthorizeResult:
            # from the auth.test made once at start: a request never waits on Slack's API to be
            # authorized, so /kill works while the Web API is down
            return AuthorizeResult(
                enterprise_id=identity.get("enterprise_id"),
                team_id=identity.get("team_id"),
                bot_user_id=identity.get("user_id"),
                bot_id=identity.get("bot_id"),
                bot_token=token,
            )

        bolt_client = AsyncWebClient(
            token=None,
            base_url=client.base_url,
            session=client.session,
            retry_handlers=list(client.retry_handlers),
        )
        self.bolt = AsyncApp(
            client=bolt_client,
            authorize=authorize,
            signing_secret=signing_secret or "",
            request_verification_enabled=http_mode,
            logger=logging.getLogger("rollbot.bolt"),
            # bolt awaits `listen`, which returns at the ack (the rest runs on as a task):
            # without it bolt looks for the ack every 10 ms, 5 ms late on average
            process_before_response=True,
        )
        channel = app.settings.slack.ops_channel
        self.acks = AcksFirst()
        self.courier = Courier(app, client, channel)
        self.courier.yield_to = self.acks.after_acks
        self.metrics = Metrics(app)
        self.courier.on_set_aside = lambda error: self.metrics.undeliverable.labels(error).inc()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.handling: set[asyncio.Task[Any]] = set()  # listeners' handlers, past their ack too
        from rollbot.bot.slack.listeners import actions, commands, events

        commands.register(self)
        actions.register(self)
        events.register(self)

    # -- background work ------------------------------------------------------------------------
    def spawn(self, coro: Awaitable[Any], *, req: Req | None = None) -> asyncio.Task[Any]:
        """Heavy work after the ack. Errors are logged and told to the user, never lost."""

        async def run() -> Any:
            try:
                return await coro
            except RollbotError as exc:
                if req:
                    await self._tell(req, escape(str(exc)))
            except Exception:
                ref = uuid.uuid4().hex[:8]
                log.exception("background task failed (ref %s)", ref)
                if req:
                    await self._tell(
                        req, f"Something went wrong (ref `{ref}`); the bot's log has the details."
                    )
            finally:
                self.courier.kick()

        task = asyncio.create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _tell(self, req: Req, text: str) -> None:
        try:
            await req.reply(text)
        except Exception:  # the user's response_url may be gone; the log has it
            log.warning("could not tell %s: %s", req.user_id, text)

    def run_incident(
        self, engine: Engine, incident: Incident, steps: tuple[int, ...], req: Req | None
    ) -> None:
        """Run the engine after the ack. The run itself pages the chain and watches each step's
        loss (RunContext.escalate, RunContext.watch_loss), by every path alike."""
        self.spawn(engine.run(incident, steps), req=req)

    # -- the one listener wrapper ---------------------------------------------------------------
    async def is_retry(self, req: Req) -> bool:
        """Seen this delivery before? (Socket Mode redelivers; HTTP retries with a header.)"""
        key = (
            req.trigger_id
            or req.body.get("event_id")
            or (req.body.get("actions") or [{}])[0].get("action_ts")
        )
        if not key:
            return False
        at = iso(self.rb.clock.now())
        kill = req.kind == Command.KILL
        return not await self.deliveries.first_time(f"{req.kind}:{key}", at, kill=kill)

    def require(self, req: Req, roles: list[str], what: str) -> None:
        allowed = self.rb.settings.slack.allowed_channels
        if allowed and req.channel_id and req.channel_id not in allowed:
            self.refuse(
                req,
                "CHANNEL_NOT_ALLOWED",
                f"{what} is not allowed in this channel; use channel " + ", ".join(allowed),
            )
        have = self.rb.settings.roles_of(req.user_id)
        if not have & set(roles):
            self.refuse(
                req,
                "ROLE_REQUIRED",
                f"{what} needs the {' or '.join(roles)} role; you have "
                + (", ".join(sorted(have)) if have else "no rollbot role"),
            )

    def may_view(self, user_id: str) -> bool:
        """The book, incidents, gates and reports are for the desk ([slack] view_roles)."""
        return bool(self.rb.settings.roles_of(user_id) & set(self.rb.settings.slack.view_roles))

    def require_view(self, req: Req, what: str) -> None:
        self.require(req, list(self.rb.settings.slack.view_roles), what)

    def refuse(self, req: Req, code: str, message: str) -> None:
        self.rb.events.append(
            "SLACK_REFUSED",
            req.actor,
            reason=message,
            data={
                "code": code,
                "request": req.kind,
                "channel": req.channel_id,
                "text": req.text[:200],
            },
        )
        raise Refused(message, code=code)

    def listener(
        self, kind: str, handler: Handler, *, ack_first: bool = True
    ) -> Callable[..., Awaitable[None]]:
        async def listen(
            ack: Any, body: dict[str, Any], respond: Any, client: AsyncWebClient
        ) -> None:
            user_id, user_name = _user(body)
            text = parsing.storable(body.get("text") or "")
            req = Req(
                kind=kind,
                user_id=user_id,
                user_name=user_name,
                channel_id=_channel(body),
                text=text,
                body=body,
                ack=ack,
                respond=pooled(respond, self.client.session),
                client=client,
            )

            loop = asyncio.get_running_loop()
            acked: asyncio.Future[None] = loop.create_future()
            wait_s = KILL_WAIT_S if kind == Command.KILL else OTHER_WAIT_S

            def resolve(*_: Any) -> None:
                if not acked.done():
                    acked.set_result(None)

            async def timed_ack(*args: Any, **kw: Any) -> None:
                await ack(*args, **kw)
                self.record_ack_latency(kind, time.perf_counter() - req.started)
                resolve()
                await self.acks.after_acks(wait_s)  # the rest of a burst is acked first

            req.ack = timed_ack
            task = asyncio.create_task(self._serve(kind, handler, req, ack_first))
            for running in (self.tasks, self.handling):
                running.add(task)
                task.add_done_callback(running.discard)
            task.add_done_callback(resolve)
            late = loop.call_later(ACK_BY_S, resolve)
            try:
                await acked
            finally:
                late.cancel()
            if not req.acked:  # still working at ACK_BY_S: ack, and say the rest after
                req.acked = req.late = True
                await ack(text="Still working on it; the answer follows here.")

        return listen

    async def _serve(self, kind: str, handler: Handler, req: Req, ack_first: bool) -> None:
        outcome = "ok"
        try:
            if await self.is_retry(req):
                outcome = "duplicate"
                await req.ack_now()
                return
            if ack_first:
                await req.ack_now()
            await handler(self, req)
        except RollbotError as exc:
            outcome = "refused" if isinstance(exc, Refused) else "bad_input"
            # an error may quote what the user typed: plain text, escaped like any user text
            if not req.acked:
                await req.ack_now(text=escape(str(exc)), response_type="ephemeral")
            else:
                await self._tell(req, escape(str(exc)))
        except Exception:
            outcome = "error"
            ref = uuid.uuid4().hex[:8]
            log.exception("%s failed (ref %s)", kind, ref)
            message = f"Something went wrong (ref `{ref}`); the bot's log has the details."
            if not req.acked:
                await req.ack_now(text=message, response_type="ephemeral")
            else:
                await self._tell(req, message)
        finally:
            if not req.acked:
                await req.ack_now()
            self.metrics.commands.labels(kind, outcome).inc()
            self.courier.kick()

    def _store_held(self, requests: list[HeldRequest]) -> list[tuple[Incident, bool]]:
        """The holds of the kills that reached their store in one pass: one transaction, as
        many statements as one kill's. Another process's writer is waited for
        HOLD_FIRST_WAIT_MS; then each kill cancels first (listeners/commands.py)."""
        with self.rb.db.patience(HOLD_FIRST_WAIT_MS):
            return store_held_incidents(self.rb, requests)

    def record_ack_latency(self, kind: str, seconds: float) -> None:
        self.metrics.ack_latency.labels(kind).observe(seconds)
