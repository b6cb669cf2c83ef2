"""Bad input: property tests (hypothesis) over the slash-command parsers, Block Kit action
payloads and config files; forged, replayed and unauthorised requests. Every one gets a clear
sentence — never a traceback or an internal error — and changes nothing; the unauthorised ones
are refused and audited (SLACK_REFUSED / APPROVAL_REFUSED events)."""

from __future__ import annotations

import asyncio
import logging
import string
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from escalation.helpers import contacts
from fakes.rollbot_harness import running
from fakes.slack import FakeSlack, signed_headers
from hypothesis import HealthCheck, assume, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from reliability.figures import record
from reliability.support import (
    DEVOPS,
    OPERATORS,
    OPS,
    RISK,
    SlackDriver,
    settings_for,
    write_book,
)
from rollbot.bot.slack import parsing
from rollbot.bot.slack.ids import Action, Command
from rollbot.clock import ManualClock, iso
from rollbot.commands.approvals.two_person import Approvals
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.paging import escalation
from rollbot.commands.rollback import checklist
from rollbot.commands.rollback.engine import Engine
from rollbot.config import EscalationConfig, EscalationTier, Settings, load_settings
from rollbot.errors import BadInput, ConfigError
from rollbot.storage.events import Actor
from rollbot.storage.risk import Firings

VENUES = ["paper", "ibkr", "bybit"]
WORDS = [
    *VENUES,
    "all",
    "global",
    "public",
    "help",
    "?",
    "venue:paper",
    "venue:",
    "account:paper/U1",
    "account:",
    "strategy:alpha",
    "strategy:",
    ":",
    "INC-0001",
    "inc-7",
    "INC-",
    "list",
    "status",
    "ack",
    "close",
    "rca",
    "disable",
    "enable",
    "runaway",
    "‮",
    "<@U0RISK>",
    "`rm -rf`",
    "\x00",
    "ß",
    "٣",
    "²",
]
phrases = st.lists(st.sampled_from(WORDS) | st.text(max_size=12), max_size=6).map(
    lambda ws: " ".join(ws)
)
any_text = st.one_of(st.text(max_size=80), phrases)
EXAMPLES = 150


def _ok_message(exc: BaseException) -> bool:
    return isinstance(exc, BadInput) and bool(str(exc).strip())


# -- the slash-command parsers (pure functions) -------------------------------------------------
@hsettings(max_examples=300, deadline=None)
@given(text=any_text)
def test_slash_command_parsers_answer_any_text_with_a_result_or_a_clear_sentence(
    text: str,
) -> None:
    parsers: list[tuple[str, Callable[[], Any]]] = [
        ("kill", lambda: parsing.parse_kill(text, VENUES)),
        ("positions", lambda: parsing.parse_positions(text, VENUES)),
        ("flatten", lambda: parsing.parse_flatten(text, VENUES)),
        ("reason", lambda: parsing.parse_reason(text, "/rollback")),
        ("incident", lambda: parsing.parse_incident(text)),
        ("incident id", lambda: parsing.parse_incident_id(text)),
        ("gates", lambda: parsing.parse_gates(text)),
        ("help", lambda: parsing.is_help(text)),
    ]
    for name, parse in parsers:
        try:
            out = parse()
        except Exception as exc:
            assert _ok_message(exc), f"{name}({text!r}) raised {type(exc).__name__}: {exc}"
            continue
        if name == "kill":
            scope, reason = out
            assert reason.strip() and scope
            assert scope == "global" or scope.split(":", 1)[0] in ("venue", "account", "strategy")
        elif name == "positions":
            assert out[0] in (None, *VENUES)
        elif name == "flatten":
            assert out in (None, *VENUES)
        elif name == "reason":
            assert out and out == out.strip()
        elif name == "incident":
            assert out[0] in ("list", "status", "ack", "close", "rca")
        elif name == "incident id":
            assert out.startswith("INC-") and out[4:].isdigit()
        elif name == "gates":
            assert out in ("status", "disable")


# -- Block Kit actions --------------------------------------------------------------------------
@contextmanager
def internal_errors() -> Iterator[list[logging.LogRecord]]:
    """ERROR records of the Slack face: what the user sees as "Something went wrong (ref …)"."""
    seen: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Catch(level=logging.ERROR)
    log = logging.getLogger("rollbot.slack")
    log.addHandler(handler)
    try:
        yield seen
    finally:
        log.removeHandler(handler)


def targets(
    root: Path, *, resumable: bool = False
) -> tuple[asyncio.AbstractEventLoop, Rollbot, dict[str, str]]:
    """A desk with something for every button to act on: a finished rollback with its
    escalation (tier 1: the risk officer) and checklist, a pending flatten request, a risk
    alert. Returns the loop it lives on, the app and the values a real button would carry."""
    loop = asyncio.new_event_loop()
    book = write_book(root)
    settings = settings_for(
        root,
        book,
        rollback_needs_approval=False,
        escalation=EscalationConfig(tiers=[EscalationTier(roles=["risk_officer"])]),
    )
    settings.contacts = [c for c in contacts() if c.role == "risk_officer"]
    if resumable:  # no minimum time in shadow; a drill passes once the incident is open
        settings.resume = settings.resume.model_copy(update={"min_shadow_hours": 0})
    rb = Rollbot.open(settings, clock=ManualClock())
    rb.gates.arm(Actor(id=OPERATORS[0], source="cli"), "a live desk")
    requester = Actor(id=OPERATORS[0], source="slack")

    async def setup() -> dict[str, str]:
        asked = await Approvals(rb).request("flatten", {"venue": None}, requester, "flatten it")
        outcome = await Engine(rb, requester).rollback("PnL -6%")
        incident = outcome.incident.id
        escalation.start_escalation(rb, incident, requester)
        checklist.open_checklist(rb, incident)
        alert = Firings(rb.db).insert(
            trigger="order_rejections",
            venue="paper",
            action="alert",
            value=0.5,
            threshold=0.2,
            data={},
            status="ALERTED",
            at=rb.clock.now(),
        )
        if resumable:
            rb.db.execute(
                "INSERT INTO drills (at, status) VALUES (?, 'SUCCESS')",
                (iso(rb.clock.now() + timedelta(seconds=1)),),
            )
        item = next(iter(checklist.ITEMS))
        return {
            "approval": asked.id,
            "incident": incident,
            "alert": alert.alert_id,
            "checklist": f"{incident}|{item}",
        }

    return loop, rb, loop.run_until_complete(setup())


STATE_TABLES = (
    "incidents",
    "holds",
    "order_intents",
    "approvals",
    "votes",
    "escalations",
    "risk_firings",
    "checklist_items",
    "rca",
    "timers",
    "drills",
)


def snapshot(rb: Rollbot) -> dict[str, list[dict[str, Any]]]:
    return {t: rb.db.query(f"SELECT * FROM {t} ORDER BY rowid") for t in STATE_TABLES}


def audits_since(rb: Rollbot, last_id: int, user: str) -> list[str]:
    rows = rb.db.query(
        "SELECT kind, actor, data FROM events WHERE id > ? AND kind IN"
        " ('SLACK_REFUSED', 'APPROVAL_REFUSED', 'APPROVAL_REQUEST_REFUSED')",
        (last_id,),
    )
    return [r["kind"] for r in rows if r["actor"] == user]


def last_event(rb: Rollbot) -> int:
    row = rb.db.one("SELECT COALESCE(MAX(id), 0) AS n FROM events")
    return int(row["n"]) if row else 0


def body_for(action: str, value: str | None, user: str, selected: list[str] | None) -> dict:
    act: dict[str, Any] = {"action_id": action, "action_ts": "1.0"}
    if value is not None:
        act["value"] = value
    if selected is not None:
        act["selected_options"] = [{"value": v} for v in selected]
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower()},
        "channel": {"id": OPS},
        "trigger_id": f"{time.monotonic_ns()}.reliability",
        "actions": [act],
    }


ACTION_IDS = [a.value for a in Action]


def _target(action: str) -> str:
    return {
        Action.APPROVE.value: "approval",
        Action.DENY.value: "approval",
        Action.ESCALATION_ACK.value: "incident",
        Action.RISK_ROLLBACK.value: "alert",
        Action.RISK_ACK.value: "alert",
    }.get(action, "checklist")


UNKNOWN_USERS = st.from_regex(r"\A[UW][A-Z0-9]{2,11}\Z").filter(
    lambda u: u not in {*OPERATORS, RISK, DEVOPS} and u not in {c.slack_id for c in contacts()}
) | st.sampled_from(["U0NOBODY", "", "USLACKBOT", "W0ENTERPRISE"])


def test_clicks_by_unknown_users_or_without_the_role_are_refused_audited_and_change_nothing(
    tmp_path: Path,
) -> None:
    loop, rb, real = targets(tmp_path)
    slack = SlackDriver(rb)
    tally = {"clicks": 0, "audited": 0}
    # DEVOPS holds a role, but none that may approve, acknowledge or roll back
    needs_trading_role = [a for a in ACTION_IDS if a != Action.CHECKLIST_TICK.value]

    @hsettings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        data=st.data(),
        value=st.one_of(st.sampled_from(sorted(real.values())), any_text, st.none()),
    )
    def click(data: st.DataObject, value: str | None) -> None:
        action = data.draw(st.sampled_from(ACTION_IDS), label="action")
        users = UNKNOWN_USERS | (st.just(DEVOPS) if action in needs_trading_role else st.nothing())
        user = data.draw(users, label="user")
        if user == DEVOPS:  # a desk member: refused for the role on a real target (a value
            value = real[_target(action)]  # naming nothing is bad input: see the next test)
        selected = (
            data.draw(st.lists(st.sampled_from([real["checklist"], "x|y"]), max_size=2))
            if action == Action.CHECKLIST_TICK.value
            else None
        )
        before, mark = snapshot(rb), last_event(rb)
        with internal_errors() as errors:
            seen = loop.run_until_complete(
                slack.raw(action, body_for(action, value, user, selected))
            )
        tally["clicks"] += 1
        assert not errors, f"{action} by {user!r} ({value!r}): {errors[0].getMessage()}"
        assert snapshot(rb) == before, f"{action} by {user!r} ({value!r}) changed the state"
        assert seen.texts, f"{action} by {user!r} ({value!r}): no sentence for the user"
        audits = audits_since(rb, mark, user)
        assert audits, f"{action} by {user!r} ({value!r}) was not audited: {seen.texts}"
        tally["audited"] += 1

    try:
        click()
    finally:
        record(
            "bad input",
            f"Block Kit clicks by unknown users or without the role: {tally['clicks']} clicks,"
            f" {tally['audited']} refused and audited, 0 state changes, 0 internal errors",
        )
        rb.db.close()
        loop.close()


def test_button_values_that_name_nothing_get_a_sentence_and_change_nothing(
    tmp_path: Path,
) -> None:
    loop, rb, real = targets(tmp_path)
    slack = SlackDriver(rb)
    known = {v.strip().lower() for v in real.values()} | {"1", "risk-1"}
    tally = {"clicks": 0}

    @hsettings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @example(action=Action.RISK_ACK.value, user=RISK, value="²", selected=None)
    @example(action=Action.RISK_ROLLBACK.value, user=RISK, value="", selected=None)
    @example(action=Action.CHECKLIST_TICK.value, user=RISK, value=None, selected=None)
    @given(
        action=st.sampled_from(ACTION_IDS),
        user=st.sampled_from([OPERATORS[1], RISK]),
        value=any_text | st.none(),
        selected=st.none() | st.lists(any_text, max_size=3),
    )
    def click(action: str, user: str, value: str | None, selected: list[str] | None) -> None:
        assume(
            value is None or value.strip().lower().removeprefix("risk-").lstrip("0") not in known
        )
        assume(value is None or value.strip().lower() not in known)
        before = snapshot(rb)
        with internal_errors() as errors:
            seen = loop.run_until_complete(
                slack.raw(action, body_for(action, value, user, selected))
            )
        tally["clicks"] += 1
        assert not errors, f"{action} ({value!r}, {selected!r}): {errors[0].getMessage()}"
        assert snapshot(rb) == before, f"{action} ({value!r}, {selected!r}) changed the state"
        assert seen.texts, f"{action} ({value!r}, {selected!r}): no sentence for the user"

    try:
        click()
    finally:
        record(
            "bad input",
            f"Block Kit clicks whose value names nothing: {tally['clicks']} clicks, each a"
            " sentence, 0 state changes, 0 internal errors",
        )
        rb.db.close()
        loop.close()


def test_an_rca_from_someone_without_a_role_is_refused_audited_and_not_recorded(
    tmp_path: Path,
) -> None:
    """The RCA is one of the conditions for resuming live trading: a modal submitted by someone
    with no rollbot role records nothing."""
    from fakes.slack import view_submission_payload
    from slack_bolt.request.async_request import AsyncBoltRequest

    from rollbot.bot.slack.ids import Callback
    from rollbot.commands.rollback.rca import RCA_FIELDS, get_rca

    loop, rb, real = targets(tmp_path)
    slack = SlackDriver(rb)
    values = {name: {"value": {"type": "plain_text_input", "value": "text"}} for name in RCA_FIELDS}

    def submit(user: str) -> Any:
        payload = view_submission_payload(
            Callback.RCA.value, values, user_id=user, private_metadata=real["incident"]
        )
        request = AsyncBoltRequest(body=payload, mode="socket_mode")
        return loop.run_until_complete(slack.bot.bolt.async_dispatch(request))

    try:
        mark = last_event(rb)
        refused = submit("U0NOBODY")
        assert get_rca(rb, real["incident"]) is None
        assert "needs a rollbot role" in refused.body
        assert audits_since(rb, mark, "U0NOBODY") == ["SLACK_REFUSED"]
        accepted = submit(RISK)
        assert accepted.status == 200 and get_rca(rb, real["incident"]) is not None
        record(
            "bad input",
            "RCA modal: from someone without a role refused, audited, nothing recorded;"
            " from the risk officer recorded",
        )
    finally:
        rb.db.close()
        loop.close()


def test_slash_commands_from_unknown_users_or_without_the_role_change_nothing(
    tmp_path: Path,
) -> None:
    """Every slash command, any text, from someone with no rollbot role (or only devops): a
    sentence, never an internal error, and nothing changes — not even a request for approval.
    The incident's resume conditions all hold, so a /resume that got through would show."""
    from slack_sdk.web.async_client import AsyncWebClient

    from rollbot.commands.rollback.rca import RCA_FIELDS, record_rca

    loop, rb, real = targets(tmp_path, resumable=True)
    record_rca(
        rb, real["incident"], dict.fromkeys(RCA_FIELDS, "known"), Actor(id=RISK, source="slack")
    )
    fake = FakeSlack()
    loop.run_until_complete(fake.start())
    slack = SlackDriver(rb, AsyncWebClient(token=fake.bot_token, base_url=fake.api_url))
    tally = {"commands": 0, "audited": 0}
    commands = list(Command)

    @hsettings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @example(command=Command.RESUME, user="U0NOBODY", text=f"{real['incident']} ready again")
    @given(
        command=st.sampled_from(commands),
        user=UNKNOWN_USERS | st.just(DEVOPS),
        text=any_text | st.sampled_from([real["incident"], f"{real['incident']} all good"]),
    )
    def send(command: Command, user: str, text: str) -> None:
        before, mark = snapshot(rb), last_event(rb)
        with internal_errors() as errors:
            seen = loop.run_until_complete(slack.command(command, text, user))
            loop.run_until_complete(slack.settle())
        tally["commands"] += 1
        assert not errors, f"{command} {text!r} by {user!r}: {errors[0].getMessage()}"
        assert snapshot(rb) == before, f"{command} {text!r} by {user!r} changed the state"
        assert seen.texts, f"{command} {text!r} by {user!r}: no sentence"
        if audits_since(rb, mark, user):
            tally["audited"] += 1

    try:
        send()
    finally:
        record(
            "bad input",
            f"slash commands from unknown users or without the role: {tally['commands']}"
            f" commands, {tally['audited']} refused and audited, the rest answered read-only;"
            " 0 state changes, 0 internal errors",
        )
        loop.run_until_complete(fake.stop())
        rb.db.close()
        loop.close()


# -- config files -------------------------------------------------------------------------------
def _leaves(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(data, dict):
        out = [path] if path else []
        for k, v in data.items():
            out += _leaves(v, (*path, k))
        return out
    if isinstance(data, list):
        out = [path]
        for i, v in enumerate(data):
            out += _leaves(v, (*path, i))
        return out
    return [path]


def _set(data: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def _delete(data: Any, path: tuple[Any, ...]) -> None:
    for part in path[:-1]:
        data = data[part]
    del data[path[-1]]


toml_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.text(string.ascii_letters + "_", min_size=1, max_size=8), inner, max_size=3
        )
    ),
    max_leaves=6,
)


def out_of_range(s: Settings) -> list[str]:
    """Each setting a loaded config must never hold (issue 14, item 10), checked apart from the
    validators: the keys that break one."""
    ks, fl, esc = s.kill_switches, s.flatten, s.escalation
    numbers = {
        "nav_change_threshold": 0 < s.nav_change_threshold < 1,
        "database.busy_timeout_ms": s.database.busy_timeout_ms > 0,
        "kill_switches.interval_s": ks.interval_s > 0,
        "kill_switches.pnl.threshold": -1 < ks.pnl.threshold < 0,
        "kill_switches.drawdown.threshold": 0 < ks.drawdown.threshold < 1,
        "kill_switches.psr.threshold": 0 < ks.psr.threshold < 1,
        "kill_switches.order_rejections.threshold": 0 < ks.order_rejections.threshold < 1,
        "kill_switches.latency.threshold": 1 < ks.latency.threshold < float("inf"),
        "flatten.timeout_s": 0 < fl.timeout_s < float("inf"),
        "flatten.recheck_interval_s": 0 < fl.recheck_interval_s < float("inf"),
        "flatten.limit_timeout_s": 0 < fl.limit_timeout_s < float("inf"),
        "flatten.limit_offset_bps": 0 <= fl.limit_offset_bps <= 1000,
        "flatten.market_exposure_threshold": 0 <= fl.market_exposure_threshold < 10**30,
        "escalation.wait_minutes": 0 < esc.wait_minutes < float("inf"),
        "escalation.critical_loss": 0 < esc.critical_loss < 10**30,
        "approvals.expiry_minutes": 0 < s.approvals.expiry_minutes < float("inf"),
        "resume.min_shadow_hours": 0 <= s.resume.min_shadow_hours < float("inf"),
    }
    for name in ("connection_failures", "pacing_violations", "kills_per_day"):
        t = getattr(ks, name).threshold
        numbers[f"kill_switches.{name}.threshold"] = 1 <= t < float("inf") and t == int(t)
    lists = {
        "slack.kill_roles": s.slack.kill_roles,
        "slack.flatten_roles": s.slack.flatten_roles,
        "slack.view_roles": s.slack.view_roles,
        "escalation.tiers": esc.tiers,
        **{f"escalation.tiers.{i}.roles": t.roles for i, t in enumerate(esc.tiers)},
        **{
            f"approvals.{a}.roles": getattr(s.approvals, a).roles
            for a in ("flatten", "rollback", "clear_hold", "enable_gates", "resume")
        },
    }
    bad = [key for key, ok in numbers.items() if not ok]
    return bad + [key for key, items in lists.items() if not items]


def test_random_config_files_load_or_raise_a_config_error_naming_the_key(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    base = settings_for(tmp_path, tmp_path / "book.toml").model_dump(mode="json", exclude_none=True)
    leaves = _leaves(base)
    tally = {"files": 0, "loaded": 0, "refused": 0}

    def named(message: str, path: tuple[Any, ...]) -> bool:
        keys = [str(p) for p in path if not isinstance(p, int)]
        return not keys or any(k in message for k in keys)

    @hsettings(max_examples=200, deadline=None)
    # the four accepted on main: a wrong-signed PnL loss, a negative drawdown, limits through zero
    @example(how="set", where=("kill_switches", "pnl", "threshold"), key="x", value=0.05)
    @example(how="set", where=("kill_switches", "drawdown", "threshold"), key="x", value=-0.15)
    @example(how="set", where=("flatten", "limit_offset_bps"), key="x", value=25000)
    @example(how="set", where=("slack", "kill_roles"), key="x", value=[])
    @given(
        how=st.sampled_from(["set", "add", "delete"]),
        where=st.sampled_from(leaves),
        key=st.text(string.ascii_letters + "_", min_size=1, max_size=10),
        value=toml_values,
    )
    def load(how: str, where: tuple[Any, ...], key: str, value: Any) -> None:
        import copy

        data = copy.deepcopy(base)
        path = where
        if how == "set":
            _set(data, where, value)
        elif how == "add":
            parent = where if isinstance(_get(data, where), dict) else where[:-1]
            target = _get(data, parent)
            if not isinstance(target, dict):
                return
            path = (*parent, key)
            target[key] = value
        else:
            _delete(data, where)
        config = write_config(_drop_none(data), "fuzzed.toml")
        tally["files"] += 1
        try:
            loaded = load_settings(config)
        except ConfigError as exc:
            tally["refused"] += 1
            message = str(exc)
            assert str(config) in message, message
            if message.startswith("invalid config"):
                assert named(message, path), f"{how} {path}: {message}"
            return
        tally["loaded"] += 1
        assert isinstance(loaded, Settings)
        assert out_of_range(loaded) == [], f"{how} {path} = {value!r} was accepted"

    @hsettings(max_examples=100, deadline=None)
    @given(text=st.text(max_size=200) | phrases)
    def raw(text: str) -> None:
        config = tmp_path / "raw.toml"
        config.write_text(text, encoding="utf-8", errors="surrogatepass")
        tally["files"] += 1
        try:
            load_settings(config)
            tally["loaded"] += 1
        except ConfigError as exc:
            tally["refused"] += 1
            assert str(config) in str(exc)

    try:
        load()
        raw()
    finally:
        record(
            "bad input",
            f"config files: {tally['files']} random files, {tally['loaded']} loaded,"
            f" {tally['refused']} refused with a ConfigError naming the file (and the key),"
            " 0 other exceptions",
        )


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def _drop_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _drop_none(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_drop_none(v) for v in data if v is not None]
    return data


# -- forged, replayed and unauthorised requests over HTTP ---------------------------------------
async def _post(url: str, body: str, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as r,
    ):
        return r.status


@pytest.fixture
async def slack() -> Any:
    async with FakeSlack() as fake:
        yield fake


async def test_forged_replayed_and_unauthorised_requests_are_refused_audited_and_change_nothing(
    slack: FakeSlack, tmp_path: Path
) -> None:
    from fakes.rollbot_harness import bot_settings

    roles = {"operator": ["U0OPERATOR"], "risk_officer": ["U0RISK"], "devops": [DEVOPS]}
    async with running(slack, bot_settings(tmp_path, roles=roles), http=True) as server:
        rb = server.rb
        url = f"http://127.0.0.1:{server.bound_port}/slack/events"
        operator = "U0OPERATOR"
        kill = slack.slash_command_body("/kill", "forged", user_id=operator, channel_id=OPS)
        forged = await _post(url, kill, signed_headers(kill, "not-the-secret"))
        stale = await _post(
            url, kill, signed_headers(kill, slack.signing_secret, int(time.time()) - 600)
        )
        unsigned = await _post(url, kill, {"Content-Type": "application/x-www-form-urlencoded"})
        outsider = await slack.http_slash_command(
            url, "/kill", "let me in", user_id="U0NOBODY", channel_id=OPS
        )
        wrong_role = await slack.http_slash_command(
            url, "/flatten", "all", user_id=DEVOPS, channel_id=OPS
        )
        await slack.wait_until(lambda: not server.bot.tasks, timeout=10)

        codes = [e.data.get("code") for e in rb.events.list(kinds=["SLACK_REFUSED"])]
        record(
            "bad input",
            f"HTTP: forged signature {forged}, stale timestamp {stale}, unsigned {unsigned};"
            f" unknown user /kill {outsider.status}; refusals audited: {codes}",
        )
        assert (forged, stale, unsigned) == (401, 401, 401)
        assert outsider.status == 200 and "needs the operator role" in outsider.response_text
        assert rb.incidents.latest() is None and rb.killswitch.holds.active() == []
        assert rb.db.query("SELECT * FROM approvals") == []
        assert codes.count("BAD_SIGNATURE") == 2  # the forged and the unsigned one
        assert codes.count("STALE_REQUEST") == 1
        assert wrong_role.status == 200  # acked at once; the refusal follows as a response
        told = await slack.wait_until(lambda: slack.ephemeral_to(DEVOPS), timeout=10)
        assert "needs the operator or risk_officer role" in told[-1].text
        refused = {(e.actor, e.data.get("code")) for e in rb.events.list(kinds=["SLACK_REFUSED"])}
        assert ("U0NOBODY", "ROLE_REQUIRED") in refused and (DEVOPS, "ROLE_REQUIRED") in refused


async def test_a_flood_of_forged_requests_is_counted_not_written_row_by_row(
    slack: FakeSlack, tmp_path: Path
) -> None:
    """Every forged request is refused; past AUDIT_BURST a minute they are counted (in /metrics
    at once, in one event when the minute is over) so a flood neither fills the disk nor keeps
    the write lock from a real /kill, which still goes through in the middle of it."""
    from fakes.rollbot_harness import bot_settings

    from rollbot.bot.slack.unverified import AUDIT_BURST

    clock = ManualClock()
    async with running(slack, bot_settings(tmp_path), http=True, clock=clock) as server:
        rb = server.rb
        url = f"http://127.0.0.1:{server.bound_port}/slack/events"
        forged = slack.slash_command_body("/kill", "forged", user_id="U0OPERATOR", channel_id=OPS)
        flood = 5 * AUDIT_BURST
        *statuses, real = await asyncio.gather(
            *(_post(url, forged, signed_headers(forged, "not-the-secret")) for _ in range(flood)),
            slack.http_slash_command(
                url, "/kill", "runaway during a flood", user_id="U0OPERATOR", channel_id=OPS
            ),
        )
        refused = rb.events.list(kinds=["SLACK_REFUSED"])
        warned = [
            r
            for r in rb.db.query("SELECT payload FROM outbox WHERE kind = 'channel'")
            if "bad or stale signature" in r["payload"]
        ]
        metrics = await _http_get(f"http://127.0.0.1:{server.bound_port}/metrics")

        clock.advance(61)  # the minute is over: the next forged request closes its count
        await _post(url, forged, signed_headers(forged, "not-the-secret"))
        after = rb.events.list(kinds=["SLACK_REFUSED"])

        record(
            "bad input",
            f"HTTP flood: {flood} forged requests, {len(refused)} recorded one by one,"
            f" {after[-2].data.get('total')} counted in one event; a /kill in the middle: "
            f"{real.status}, {rb.incidents.latest().id if rb.incidents.latest() else 'none'}",
        )
        assert statuses == [401] * flood
        assert real.status == 200 and rb.incidents.latest() is not None
        assert len(refused) == AUDIT_BURST and len(warned) == 1
        assert f'rollbot_unverified_requests_total{{code="BAD_SIGNATURE"}} {flood}.0' in metrics
        assert after[-2].data == {
            "code": "COUNTED",
            "counts": {"BAD_SIGNATURE": flood - AUDIT_BURST},
            "total": flood - AUDIT_BURST,
        }
        assert after[-1].data["code"] == "BAD_SIGNATURE" and len(after) == AUDIT_BURST + 2


async def _http_get(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        return await r.text()
