"""A runner that stalled past its heartbeat while another host took its run over stops at its
next step instead of running on beside it (fencing): each step still ends once."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.commands.rollback.engine import Engine, StepReport
from rollbot.config import DatabaseConfig, HostConfig, Settings
from rollbot.errors import Refused
from rollbot.storage.events import Actor

OPERATOR = Actor(id="U0OPERATOR", source="slack")


async def test_a_run_taken_over_by_another_host_stops_at_its_next_step(
    settings: Settings, clock: ManualClock, shared_db: Callable[[str], DatabaseConfig]
) -> None:
    settings.database = shared_db("fencing")
    a = Rollbot.open(settings.model_copy(update={"host": HostConfig(id="host-a")}), clock=clock)
    b = Rollbot.open(settings.model_copy(update={"host": HostConfig(id="host-b")}), clock=clock)
    try:

        async def after(report: StepReport) -> None:
            if report.step == 1:  # host a stalls here; host b claims the run meanwhile
                b.incidents.set_phase(
                    "INC-0001", "RUNNING", OPERATOR, steps=[1, 2, 3, 4, 5], runner=b.me
                )

        with pytest.raises(Refused) as stopped:
            await Engine(a, OPERATOR, on_step=after).rollback("a host stalls")
        assert stopped.value.code == "TAKEN_OVER"
        assert "taken over by process" in str(stopped.value) and "host-b" in str(stopped.value)
        ended = [e.data["step"] for e in a.events.list(kinds=["STEP_ENDED"])]
        assert ended == [1]  # host a ran nothing after host b took over
        assert a.events.list(kinds=["RUN_INTERRUPTED"]) == []  # the run is b's, not free
    finally:
        a.db.close()
        b.db.close()
