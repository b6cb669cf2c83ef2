"""The fake Slack behaves like Slack toward the real slack_sdk / slack-bolt (no mocks)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.error import BoltError
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from .loopback import serve_post
from .slack import (
    BOT_USER_ID,
    FakeSlack,
    block_action_body,
    signed_headers,
    slash_command_body,
    with_retry_headers,
)

pytestmark = pytest.mark.timeout(30)

USER = "U0ALICE01"
CHANNEL = "C0OPS0001"


def web_client(slack: FakeSlack, **kwargs: Any) -> AsyncWebClient:
    return AsyncWebClient(token=slack.bot_token, base_url=slack.api_url, **kwargs)


def quiet_logger() -> logging.Logger:
    logger = logging.getLogger("test_fake_slack.bolt")
    logger.setLevel(logging.WARNING)
    return logger


@asynccontextmanager
async def socket_mode_app(
    slack: FakeSlack, setup: Callable[[AsyncApp], None], *, ping_interval: float = 10
) -> AsyncIterator[AsyncSocketModeHandler]:
    """A real AsyncApp connected through the real aiohttp Socket Mode client."""
    # NB: AsyncApp takes the token from the client when both are given (token= is ignored).
    app = AsyncApp(client=web_client(slack), logger=quiet_logger())
    setup(app)
    handler = AsyncSocketModeHandler(app, slack.app_token, ping_interval=ping_interval)
    await handler.connect_async()
    try:
        await slack.wait_connected()
        yield handler
    finally:
        await handler.close_async()  # before the fake goes away, or the SDK keeps reconnecting


# ------------------------------------------------------------------------------- Web API


async def test_post_message_then_update_are_recorded_with_params() -> None:
    async with FakeSlack() as slack:
        client = web_client(slack)
        posted = await client.chat_postMessage(channel=CHANNEL, text="rolling back strat-7")
        updated = await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="rolled back")

        post_call, update_call = slack.calls("chat.postMessage")[0], slack.calls("chat.update")[0]
        assert post_call.params == {"channel": CHANNEL, "text": "rolling back strat-7"}
        assert post_call.token == slack.bot_token and post_call.ok
        assert update_call.params == {"channel": CHANNEL, "ts": posted["ts"], "text": "rolled back"}
        assert post_call.seq < update_call.seq and post_call.at <= update_call.at
        assert posted["channel"] == CHANNEL and updated["ts"] == posted["ts"]

        [msg] = slack.messages(CHANNEL)
        assert msg.text == "rolled back" and msg.edits == [
            {"text": "rolling back strat-7", "blocks": None, "attachments": None}
        ]

        # unique, increasing ts; threads by thread_ts
        reply = await client.chat_postMessage(
            channel=CHANNEL, text="step 1", thread_ts=posted["ts"]
        )
        second = await client.chat_postMessage(channel=CHANNEL, text="other")
        assert len({posted["ts"], reply["ts"], second["ts"]}) == 3
        assert float(posted["ts"]) < float(reply["ts"]) < float(second["ts"])
        assert [m.text for m in slack.thread(CHANNEL, posted["ts"])] == ["step 1"]
        assert [m.text for m in slack.messages(CHANNEL, include_replies=False)] == [
            "rolled back",
            "other",
        ]

        with pytest.raises(SlackApiError) as missing:
            await client.chat_update(channel=CHANNEL, ts="1.000001", text="x")
        assert missing.value.response["error"] == "message_not_found"


async def test_auth_test_with_bad_token_fails_invalid_auth() -> None:
    async with FakeSlack() as slack:
        ok = await web_client(slack).auth_test()
        assert ok["user_id"] == BOT_USER_ID and ok["team_id"] == slack.team_id
        assert ok.headers["x-oauth-scopes"]

        bad = AsyncWebClient(token="xoxb-not-a-real-token", base_url=slack.api_url)
        with pytest.raises(SlackApiError) as err:
            await bad.auth_test()
        assert err.value.response["error"] == "invalid_auth"
        assert [c.error for c in slack.calls("auth.test")] == [None, "invalid_auth"]

        with pytest.raises(SlackApiError) as wrong_type:
            await AsyncWebClient(token=slack.app_token, base_url=slack.api_url).auth_test()
        assert wrong_type.value.response["error"] == "not_allowed_token_type"


async def test_unknown_method_is_recorded() -> None:
    async with FakeSlack() as slack:
        with pytest.raises(SlackApiError) as err:
            await web_client(slack).api_call("reactions.add", json={"name": "eyes"})
        assert err.value.response["error"] == "unknown_method"
        assert slack.calls("reactions.add")[0].params == {"name": "eyes"}


async def test_rate_limit_then_success_with_retry_handler() -> None:
    async with FakeSlack() as slack:
        client = web_client(
            slack, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)]
        )
        slack.rate_limit_next(1, retry_after=0)  # the handler sleeps Retry-After + random()
        resp = await client.chat_postMessage(channel=CHANNEL, text="kill switch armed")
        assert resp["ok"]

        refused, accepted = slack.calls("chat.postMessage")
        assert refused.rate_limited and refused.http_status == 429 and not refused.ok
        assert refused.error == "ratelimited"
        assert accepted.ok and accepted.params == refused.params
        assert slack.calls("chat.postMessage", ok=True) == [accepted]
        assert len(slack.messages(CHANNEL)) == 1

        # without a retry handler slack_sdk surfaces the 429
        slack.rate_limit_next(1, retry_after=7)
        with pytest.raises(SlackApiError) as err:
            await web_client(slack, retry_handlers=[]).chat_postMessage(channel=CHANNEL, text="x")
        assert err.value.response.status_code == 429
        assert err.value.response.headers["Retry-After"] == "7"


async def test_go_down_refuses_connections_and_come_back_restores_same_url() -> None:
    async with FakeSlack() as slack:
        client = web_client(slack, retry_handlers=[])
        url_before = slack.api_url
        await client.chat_postMessage(channel=CHANNEL, text="before")

        await slack.go_down()
        with pytest.raises(aiohttp.ClientConnectionError):
            await client.chat_postMessage(channel=CHANNEL, text="during")
        await slack.come_back()

        assert slack.api_url == url_before
        resp = await client.chat_postMessage(channel=CHANNEL, text="after")
        assert resp["ok"]
        assert [c.params["text"] for c in slack.calls("chat.postMessage")] == ["before", "after"]

        await slack.go_down("503")
        with pytest.raises(SlackApiError) as err:
            await client.chat_postMessage(channel=CHANNEL, text="503")
        assert err.value.response.status_code == 503
        await slack.come_back()


async def test_files_upload_v2_round_trip() -> None:
    async with FakeSlack() as slack:
        client = web_client(slack)
        parent = await client.chat_postMessage(channel=CHANNEL, text="report")
        resp = await client.files_upload_v2(
            channel=CHANNEL,
            content="pnl,-1234\n",
            filename="pnl.csv",
            title="PnL",
            initial_comment="post-mortem",
            thread_ts=parent["ts"],
        )
        [upload] = slack.uploads()
        assert resp["file"]["id"] == upload.file_id
        assert upload.content == b"pnl,-1234\n" and upload.length == len(upload.content)
        assert upload.completed and upload.title == "PnL" and upload.channels == [CHANNEL]
        assert [c.method for c in slack.calls()][-2:] == [
            "files.getUploadURLExternal",
            "files.completeUploadExternal",
        ]
        [shared] = slack.thread(CHANNEL, parent["ts"])
        assert (
            shared.text == "post-mortem" and shared.files and shared.files[0]["name"] == "pnl.csv"
        )


async def test_dm_ephemeral_views_and_users() -> None:
    async with FakeSlack() as slack:
        client = web_client(slack)
        slack.add_user(USER, "alice", real_name="Alice Trader", tz="Europe/London")
        dm = await client.conversations_open(users=USER)
        assert dm["channel"]["id"] == slack.dm_channel(USER)
        await client.chat_postMessage(channel=USER, text="you paused strat-7")
        assert [m.text for m in slack.messages(dm["channel"]["id"])] == ["you paused strat-7"]

        await client.chat_postEphemeral(channel=CHANNEL, user=USER, text="only you")
        assert [e.text for e in slack.ephemeral_to(USER)] == ["only you"]

        info = await client.users_info(user=USER)
        assert info["user"]["real_name"] == "Alice Trader" and info["user"]["tz"] == "Europe/London"
        with pytest.raises(SlackApiError):
            await client.users_info(user="U0NOBODY0")

        home = await client.views_publish(user_id=USER, view={"type": "home", "blocks": []})
        assert slack.home_view(USER) is not None and home["view"]["id"] == slack.home_view(USER).id

        trigger = slack.new_trigger_id()
        modal = {"type": "modal", "title": {"type": "plain_text", "text": "Confirm"}, "blocks": []}
        opened = await client.views_open(trigger_id=trigger, view=modal)
        with pytest.raises(SlackApiError) as reused:
            await client.views_open(trigger_id=trigger, view=modal)
        assert reused.value.response["error"] == "exchanged_trigger_id"
        with pytest.raises(SlackApiError) as unknown:
            await client.views_open(trigger_id="123.456.abc", view=modal)
        assert unknown.value.response["error"] == "invalid_trigger_id"

        updated = await client.views_update(
            view_id=opened["view"]["id"], hash=opened["view"]["hash"], view=modal
        )
        with pytest.raises(SlackApiError) as conflict:
            await client.views_update(
                view_id=opened["view"]["id"], hash=opened["view"]["hash"], view=modal
            )
        assert conflict.value.response["error"] == "hash_conflict"
        assert updated["view"]["hash"] != opened["view"]["hash"]


# ------------------------------------------------------------------------------- Socket Mode


async def test_bolt_socket_mode_slash_command_is_acked_and_posts() -> None:
    async with FakeSlack() as slack:

        def setup(app: AsyncApp) -> None:
            @app.command("/ping")
            async def ping(ack: Any, respond: Any, command: dict[str, Any], client: Any) -> None:
                await ack()
                await respond(f"pong {command['text']}")
                await client.chat_postMessage(channel=command["channel_id"], text="pong!")

        async with socket_mode_app(slack, setup):
            [conn] = slack.connections()
            assert conn.ticket is not None  # came through apps.connections.open
            assert slack.calls("apps.connections.open")[0].token == slack.app_token

            delivery = await slack.deliver_slash_command("/ping", "hi", USER, CHANNEL)
            ack = await slack.wait_for_ack(delivery.envelope_id)
            assert ack.envelope_id == delivery.envelope_id and ack.payload is None
            assert 0 <= ack.latency < 3.0  # Slack's ack deadline

            post = await slack.wait_for("chat.postMessage", lambda c: c.params["text"] == "pong!")
            assert post.params["channel"] == CHANNEL and post.token == slack.bot_token
            await slack.wait_until(lambda: slack.responses())
            [response] = slack.responses()
            assert response.text == "pong hi" and response.target is not None
            assert response.target.user_id == USER
            assert [e.text for e in slack.ephemeral_to(USER)] == ["pong hi"]
            # bolt's single-team authorization calls auth.test once, on the first request
            assert len(slack.calls("auth.test")) == 1


async def test_ack_with_text_and_unhandled_envelopes() -> None:
    async with FakeSlack() as slack:

        def setup(app: AsyncApp) -> None:
            @app.command("/status")
            async def status(ack: Any) -> None:
                await ack(text="all venues live")

        async with socket_mode_app(slack, setup):
            delivery = await slack.deliver_slash_command("/status", user_id=USER)
            ack = await slack.wait_for_ack(delivery.envelope_id)
            assert ack.payload == {"text": "all venues live"}
            assert [(e.text, e.source) for e in slack.ephemeral_to(USER)] == [
                ("all venues live", "ack")
            ]

            # bolt answers 404 for a command without listener: the SDK sends NO ack at all
            unhandled = await slack.deliver_slash_command("/nope", user_id=USER)
            with pytest.raises(TimeoutError):
                await slack.wait_for_ack(unhandled.envelope_id, timeout=0.5)


async def test_block_action_and_view_submission_round_trip() -> None:
    async with FakeSlack() as slack:
        seen: list[str] = []

        def setup(app: AsyncApp) -> None:
            @app.action("confirm_rollback")
            async def confirm(ack: Any, body: dict[str, Any], respond: Any, client: Any) -> None:
                await ack()
                seen.append(body["actions"][0]["value"])
                await client.views_open(
                    trigger_id=body["trigger_id"],
                    view={
                        "type": "modal",
                        "callback_id": "reason",
                        "title": {"type": "plain_text", "text": "Why?"},
                        "blocks": [],
                    },
                )
                await respond(replace_original=True, text="rollback confirmed")

            @app.view("reason")
            async def reason(ack: Any, view: dict[str, Any]) -> None:
                await ack(response_action="errors", errors={"r": "too short"})

        async with socket_mode_app(slack, setup):
            client = web_client(slack)
            original = await client.chat_postMessage(channel=CHANNEL, text="Roll back?")
            payload = slack.block_action_payload(
                "confirm_rollback",
                "strat-7",
                user_id=USER,
                channel_id=CHANNEL,
                message_ts=original["ts"],
            )
            delivery = await slack.deliver_block_action(payload)
            assert delivery.envelope.accepts_response_payload is False
            await slack.wait_for_ack(delivery.envelope_id)
            await slack.wait_for("views.open", lambda c: c.ok)
            await slack.wait_until(lambda: slack.responses())
            assert seen == ["strat-7"]
            assert slack.message(CHANNEL, original["ts"]).text == "rollback confirmed"

            sub = await slack.deliver_view_submission(
                slack.view_submission_payload("reason", {"r": {"r": {"value": "x"}}}, user_id=USER)
            )
            ack = await slack.wait_for_ack(sub.envelope_id)
            assert ack.payload == {"response_action": "errors", "errors": {"r": "too short"}}


async def test_redelivered_event_reaches_bolt_again_with_retry_headers() -> None:
    async with FakeSlack() as slack:
        retries: list[tuple[str | None, str | None]] = []

        def setup(app: AsyncApp) -> None:
            @app.event("app_mention")
            async def mention(request: AsyncBoltRequest) -> None:
                num = request.headers.get("x-slack-retry-num", [None])[0]
                reason = request.headers.get("x-slack-retry-reason", [None])[0]
                retries.append((num, reason))

        async with socket_mode_app(slack, setup):
            event = {
                "type": "app_mention",
                "user": USER,
                "text": f"<@{BOT_USER_ID}> status",
                "channel": CHANNEL,
                "ts": "1700000000.000100",
            }
            first = await slack.deliver_event(event)
            await slack.wait_for_ack(first.envelope_id)
            again = await slack.redeliver(first.envelope_id)
            assert again.envelope_id == first.envelope_id and again.retry_attempt == 1
            ack2 = await slack.wait_for_ack(first.envelope_id, count=2)
            assert ack2.delivery is again
            await slack.wait_until(lambda: len(retries) == 2)
            # bolt does not dedupe: both deliveries run the listener; attempt 0 is visible too
            assert retries == [("0", ""), ("1", "timeout")]


async def test_disconnect_message_and_dropped_socket_make_the_sdk_reconnect() -> None:
    async with FakeSlack() as slack:
        handled: list[str] = []

        def setup(app: AsyncApp) -> None:
            @app.command("/ping")
            async def ping(ack: Any, command: dict[str, Any]) -> None:
                await ack()
                handled.append(command["text"])

        async with socket_mode_app(slack, setup):
            await slack.send_disconnect("refresh_requested")
            await slack.wait_connected(count=2)
            assert len(slack.calls("apps.connections.open")) == 2
            d = await slack.deliver_slash_command("/ping", "after-disconnect")
            await slack.wait_for_ack(d.envelope_id)

            await slack.drop_connections()
            await slack.wait_connected(count=3)
            d = await slack.deliver_slash_command("/ping", "after-drop")
            await slack.wait_for_ack(d.envelope_id)
            assert handled == ["after-disconnect", "after-drop"]
            assert len(slack.active_connections()) == 1


async def test_socket_mode_survives_an_outage_of_both_servers() -> None:
    async with FakeSlack() as slack:
        handled: list[str] = []

        def setup(app: AsyncApp) -> None:
            @app.command("/ping")
            async def ping(ack: Any, command: dict[str, Any]) -> None:
                await ack()
                handled.append(command["text"])

        # the SDK re-checks its session every ping_interval, so recovery takes ~1-2 intervals
        async with socket_mode_app(slack, setup, ping_interval=0.3):
            await slack.go_down(socket=True)
            assert slack.active_connections() == []
            with pytest.raises(TimeoutError):
                await slack.deliver_slash_command("/ping", "lost", timeout=0.3)
            await slack.come_back()
            await slack.wait_connected(count=2, timeout=10)
            d = await slack.deliver_slash_command("/ping", "back")
            await slack.wait_for_ack(d.envelope_id)
            assert handled == ["back"]


def test_bolt_ignores_token_when_given_a_tokenless_client() -> None:
    # Quirk: AsyncApp(token=..., client=...) takes the token from the client only.
    with pytest.raises(BoltError):
        AsyncApp(token="xoxb-x", client=AsyncWebClient(base_url="http://127.0.0.1:9/api/"))


# ------------------------------------------------------------------------------- HTTP mode


@asynccontextmanager
async def http_mode_app(
    app: AsyncApp,
) -> AsyncIterator[str]:
    async def endpoint(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    async with serve_post("/slack/events", endpoint) as base:
        yield f"{base}/slack/events"


def test_signature_helpers_match_slack_sdk_verifier() -> None:
    body = slash_command_body("/ping", "a b&c", response_url="http://x/response/1")
    headers = signed_headers(body, "s3cret", timestamp=int(time.time()))
    verifier = SignatureVerifier("s3cret")
    assert verifier.is_valid(
        body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )
    ts, signature = headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    assert not verifier.is_valid(body + "x", ts, signature)
    assert "text=a+b%26c" in body
    retried = with_retry_headers(headers, 2, "http_error")
    assert retried["X-Slack-Retry-Num"] == "2" and retried["X-Slack-Retry-Reason"] == "http_error"
    assert block_action_body({"type": "block_actions"}).startswith("payload=%7B")


async def test_bolt_http_mode_verifies_signatures_and_sees_retries() -> None:
    async with FakeSlack() as slack:
        app = AsyncApp(
            signing_secret=slack.signing_secret, client=web_client(slack), logger=quiet_logger()
        )
        events: list[str | None] = []

        @app.command("/ping")
        async def ping(ack: Any, respond: Any) -> None:
            await ack("pong")
            await respond(text="later", response_type="in_channel")

        @app.action("b")
        async def button(ack: Any) -> None:
            await ack()

        @app.event("app_mention")
        async def mention(request: AsyncBoltRequest) -> None:
            events.append(request.headers.get("x-slack-retry-num", [None])[0])

        async with http_mode_app(app) as url:
            resp = await slack.http_slash_command(url, "/ping", user_id=USER, channel_id=CHANNEL)
            assert resp.status == 200 and resp.response_text == "pong"
            await slack.wait_until(lambda: slack.messages(CHANNEL))
            assert [m.text for m in slack.messages(CHANNEL)] == ["later"]

            forged = await slack.post_to_app(
                url, slack.slash_command_body("/ping"), signing_secret="wrong"
            )
            assert forged.status == 401

            act = await slack.http_interactive(url, slack.block_action_payload("b", "v"))
            assert act.status == 200

            ev = {"type": "app_mention", "user": USER, "text": "hi", "channel": CHANNEL}
            assert (await slack.http_event(url, ev, event_id="Ev1")).status == 200
            assert (await slack.http_event(url, ev, event_id="Ev1", retry_num=1)).status == 200
            await slack.wait_until(lambda: len(events) == 2)
            assert events == [None, "1"]  # HTTP first attempts carry no retry header


# ------------------------------------------------------------------------------- knobs


async def test_fail_next_latency_and_custom_method() -> None:
    async with FakeSlack() as slack:
        client = web_client(slack)
        slack.fail_next("chat.postMessage", "channel_not_found")
        with pytest.raises(SlackApiError) as err:
            await client.chat_postMessage(channel=CHANNEL, text="x")
        assert err.value.response["error"] == "channel_not_found"
        assert (await client.chat_postMessage(channel=CHANNEL, text="x"))["ok"]

        slack.set_latency(0.2, method="auth.test")
        started = time.monotonic()
        await client.auth_test()
        assert time.monotonic() - started >= 0.2
        slack.set_latency(0, method="auth.test")

        async def permalink(params: dict[str, Any]) -> dict[str, Any]:
            return {"ok": True, "permalink": f"https://x/{params['message_ts']}"}

        handler: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] = permalink
        slack.on_method("chat.getPermalink", handler)
        link = await client.chat_getPermalink(channel=CHANNEL, message_ts="1.2")
        assert link["permalink"] == "https://x/1.2"


async def test_deliver_without_connection_times_out() -> None:
    async with FakeSlack() as slack:
        with pytest.raises(TimeoutError):
            await slack.deliver_slash_command("/ping", timeout=0.1)


async def test_channel_membership_scopes_and_block_kit_limits_answer_as_slack_does() -> None:
    """not_in_channel without chat:write.public (docs: chat:write.public scope), missing_scope for
    a method without its scope, invalid_blocks past 50 blocks or 3000 characters in a section,
    msg_blocks_too_long past ~13k characters in all."""
    async with FakeSlack(scopes="chat:write,commands") as slack:
        client = web_client(slack)
        with pytest.raises(SlackApiError) as err:
            await client.chat_postMessage(channel=CHANNEL, text="x")
        assert err.value.response["error"] == "not_in_channel"
        slack.join(CHANNEL)
        assert (await client.chat_postMessage(channel=CHANNEL, text="x"))["ok"]
        assert (await client.chat_postMessage(channel=USER, text="a DM"))["ok"]
        with pytest.raises(SlackApiError) as err:
            await client.chat_postMessage(channel="G0PRIVATE", text="x")
        assert err.value.response["error"] == "channel_not_found"
        with pytest.raises(SlackApiError) as err:
            await client.files_getUploadURLExternal(filename="a.txt", length=1)
        assert err.value.response["error"] == "missing_scope"
        assert err.value.response["needed"] == "files:write"

        def section(n: int) -> dict[str, Any]:
            return {"type": "section", "text": {"type": "mrkdwn", "text": "x" * n}}

        for blocks, error in (
            ([section(1)] * 51, "invalid_blocks"),
            ([section(3001)], "invalid_blocks"),
            ([section(2900)] * 5, "msg_blocks_too_long"),
        ):
            with pytest.raises(SlackApiError) as err:
                await client.chat_postMessage(channel=CHANNEL, text="x", blocks=blocks)
            assert err.value.response["error"] == error
        assert (await client.chat_postMessage(channel=CHANNEL, text="x", blocks=[section(3000)]))[
            "ok"
        ]
