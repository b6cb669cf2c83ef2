"""Fifty approve clicks on one request: the action runs exactly once, one set of orders.

The clicks race three ways: coroutines on one event loop (the bot), threads each with their own
connection, and separate `rollbot approve` processes (the terminal)."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import threading
from pathlib import Path

from terminal_users import as_person, login

from approvals.support import (
    CROWD,
    OPERATOR,
    closing_orders,
    events,
    make_settings,
    slack,
    write_config,
)
from rollbot.commands.approvals.two_person import Approvals, Status, VoteResult
from rollbot.commands.desk.context import Rollbot
from rollbot.config import Settings

ROLLBOT = str(Path(sys.executable).parent / "rollbot")


def _assert_ran_once(app: Rollbot, approval_id: str, results: list[VoteResult]) -> None:
    ran = [r for r in results if r.executed]
    assert len(ran) == 1, [r.code for r in results]
    assert ran[0].code == "EXECUTED"
    refused = [r for r in results if r.refused]
    assert len(refused) == len(results) - 1
    assert {r.code for r in refused} <= {"ALREADY_DECIDED", "DUPLICATE_VOTE"}
    assert Approvals(app).get(approval_id).status is Status.EXECUTED
    assert len(events(app, "APPROVAL_EXECUTED")) == 1
    assert len(events(app, "APPROVAL_REFUSED")) == len(results) - 1  # every click audited
    assert len(app.db.query("SELECT * FROM votes")) == 1
    assert len(app.incidents.list()) == 1
    # one closing order per position (the default book holds nine), none twice
    sent = closing_orders(app)
    assert len(sent) == 9 and len({o.symbol for o in sent}) == 9
    assert len(app.db.query("SELECT * FROM order_intents")) == 9


async def test_fifty_clicks_on_one_event_loop(app: Rollbot, approvals: Approvals):
    req = await approvals.request("flatten", {}, slack(OPERATOR), "desk is bleeding")
    # twenty-five approvers, each double-clicking, in random order
    clickers = [uid for uid in CROWD[:25] for _ in range(2)]
    random.Random(5).shuffle(clickers)

    results = await asyncio.gather(
        *(approvals.vote(req.id, slack(uid), "approve") for uid in clickers)
    )

    _assert_ran_once(app, req.id, list(results))
    assert await app.venue("paper").positions() == []


async def test_fifty_clicks_from_fifty_threads(settings: Settings):
    setup = Rollbot.open(settings)
    try:
        req = await Approvals(setup).request("flatten", {}, slack(OPERATOR), "desk is bleeding")
    finally:
        await setup.aclose()
    start = threading.Barrier(50)
    results: list[VoteResult] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def click(uid: str) -> None:
        async def go() -> VoteResult:
            rb = Rollbot.open(settings)  # its own connection, as another process would have
            try:
                start.wait()
                return await Approvals(rb).vote(req.id, slack(uid), "approve")
            finally:
                await rb.aclose()

        try:
            result = asyncio.run(go())
            with lock:
                results.append(result)
        except BaseException as exc:  # reported below: a lost thread must fail the test
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=click, args=(uid,)) for uid in CROWD]

    def run_all() -> None:
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    await asyncio.to_thread(run_all)

    assert errors == []
    check = Rollbot.open(settings)
    try:
        _assert_ran_once(check, req.id, results)
        assert await check.venue("paper").positions() == []
    finally:
        await check.aclose()


async def test_concurrent_approve_processes_at_the_terminal(tmp_path: Path):
    users = {f"op{i:02d}": CROWD[i] for i in range(8)}
    cfg = write_config(tmp_path, identities={login(u): slack_id for u, slack_id in users.items()})
    setup = Rollbot.open(make_settings(tmp_path))
    try:
        req = await Approvals(setup).request("flatten", {}, slack(OPERATOR), "desk is bleeding")
    finally:
        await setup.aclose()

    async def approve(person: str) -> tuple[int, str]:
        env = {**os.environ, "COLUMNS": "200"}
        proc = await asyncio.create_subprocess_exec(
            ROLLBOT,
            "--config",
            str(cfg),
            "approve",
            req.id,
            env=env,
            preexec_fn=as_person(person),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        return proc.returncode or 0, (out + err).decode()

    runs = await asyncio.gather(*(approve(u) for u in users))

    executed = [text for _, text in runs if "approved and executed" in text]
    assert len(executed) == 1, runs
    refused = [text for code, text in runs if code == 1 and "ALREADY_DECIDED" in text]
    assert len(refused) == len(users) - 1, runs
    check = Rollbot.open(make_settings(tmp_path))
    try:
        assert len(closing_orders(check)) == 9
        assert await check.venue("paper").positions() == []
        voters = {e.data.get("os_user") for e in events(check, "APPROVAL_REFUSED")}
        assert len(voters) == len(users) - 1  # each refused terminal click is on record
    finally:
        await check.aclose()
