"""IBKR client ids per host (point 2 of issue 19): each host's config names its own ids, and a
second host configured with an id a live host uses is named at once — log, event, one channel
message — rather than found when TWS logs the two off each other during a kill."""

from __future__ import annotations

from collections.abc import Callable

from rollbot.bot.scheduler import Clockwork
from rollbot.clock import ManualClock
from rollbot.commands.desk.context import Rollbot
from rollbot.config import DatabaseConfig, HostConfig, IbkrVenueConfig, Settings


def host(settings: Settings, name: str, client_id: int, clock: ManualClock) -> Rollbot:
    ibkr = IbkrVenueConfig(client_id=client_id, spare_client_ids=[client_id + 1])
    return Rollbot.open(
        settings.model_copy(
            update={
                "host": HostConfig(id=name, lease_interval_s=2),
                "venues": [*settings.venues, ibkr],
            }
        ),
        clock=clock,
    )


async def test_two_hosts_with_one_client_id_are_named_and_distinct_ids_are_not(
    settings: Settings, clock: ManualClock, shared_db: Callable[[str], DatabaseConfig]
) -> None:
    settings.database = shared_db("client-ids")
    a, b = host(settings, "host-a", 17, clock), host(settings, "host-b", 17, clock)
    c = host(settings, "host-c", 27, clock)
    try:
        cw_a, cw_b, cw_c = Clockwork(a), Clockwork(b), Clockwork(c)
        await cw_a.heartbeat()
        await cw_c.heartbeat()  # its own ids: no clash
        assert a.events.list(kinds=["HOST_CONFLICT"]) == []
        await cw_b.heartbeat()
        await cw_b.heartbeat()
        clashes = a.events.list(kinds=["HOST_CONFLICT"])
        assert [(e.data["client_id"], e.data["other_host"]) for e in clashes] == [
            (17, "host-a"),
            (18, "host-a"),
        ]
        assert "configured on host host-b and in use by host host-a" in (clashes[0].reason or "")
        said = a.db.query("SELECT payload FROM outbox WHERE kind = 'channel'")
        assert sum("IBKR client id 17" in r["payload"] for r in said) == 1  # said once

        clock.advance(7)  # host a stopped: its ids are free after 3 lease intervals (6 s)
        await cw_c.heartbeat()
        await cw_b.heartbeat()
        assert len(a.events.list(kinds=["HOST_CONFLICT"])) == 2  # nothing new: b has them now
    finally:
        for app in (a, b, c):
            app.db.close()
