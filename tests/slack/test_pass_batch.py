"""PassBatch (bot/slack/pass_batch.py): what the requests of one pass of the event loop submit
is written by one call, at most `max_batch` items a call; a call that fails fails its own items
only, each told why; a request cancelled before the call is not written at all."""

from __future__ import annotations

import asyncio

import pytest

from rollbot.bot.slack.pass_batch import PassBatch
from rollbot.errors import DatabaseBusy


class Writer:
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, items: list[str]) -> list[str]:
        self.calls.append(items)
        if self.fail_on in items:
            raise DatabaseBusy(f"locked while writing {self.fail_on}")
        return [item.upper() for item in items]


async def test_one_pass_is_one_call_and_each_request_gets_its_own_result() -> None:
    writer = Writer()
    batch: PassBatch[str, str] = PassBatch(writer, max_batch=100)
    first = await asyncio.gather(*(batch.submit(f"k{i}") for i in range(30)))
    assert first == [f"K{i}" for i in range(30)]
    assert writer.calls == [[f"k{i}" for i in range(30)]]
    assert await batch.submit("later") == "LATER"
    assert len(writer.calls) == 2, "a later pass is a call of its own"


async def test_a_storm_larger_than_a_call_is_split_and_a_failing_call_fails_only_its_items() -> (
    None
):
    writer = Writer(fail_on="k4")
    batch: PassBatch[str, str] = PassBatch(writer, max_batch=3)
    results = await asyncio.gather(
        *(batch.submit(f"k{i}") for i in range(8)), return_exceptions=True
    )
    assert writer.calls == [["k0", "k1", "k2"], ["k3", "k4", "k5"], ["k6", "k7"]]
    assert results[:3] == ["K0", "K1", "K2"]
    for failed in results[3:6]:
        assert isinstance(failed, DatabaseBusy) and "k4" in str(failed)
    assert results[6:] == ["K6", "K7"]


async def test_a_request_cancelled_before_the_call_is_not_written() -> None:
    writer = Writer()
    batch: PassBatch[str, str] = PassBatch(writer, max_batch=10)
    gone = batch.submit("gone")
    kept = batch.submit("kept")
    gone.cancel()
    assert await kept == "KEPT"
    assert writer.calls == [["kept"]]
    with pytest.raises(asyncio.CancelledError):
        await gone
