"""`rollbot positions` and `rollbot rollback --confirm` against the loopback TWS gateway, with
nothing but rollbot.toml: the CLI runs in its own process, the gateway in a thread of this one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from subprocess import CompletedProcess
from typing import Any

import pytest
from fakes.tws import FakeTws, FakeTwsThread, start_fake_tws

from rollbot.config import IbkrVenueConfig, Settings

D = Decimal
Run = Callable[..., CompletedProcess[str]]
BOOK = [("AAPL", 100, "190.5"), ("MSFT", -50, "410"), ("TSLA", 30, "250")]  # long, short, long
MARKS = {symbol: D(price) for symbol, _, price in BOOK}


def resting_orders(tws: FakeTws) -> None:
    """The strategy's stop and limit (API client 1), and an order typed into TWS by hand."""
    tws.add_order("AAPL", "SELL", 100, "STP", aux_price="180", client_id=1)
    tws.add_order("MSFT", "BUY", 50, "LMT", lmt_price="400", client_id=1)
    tws.add_order("TSLA", "SELL", 30, "LMT", lmt_price="275", client_id=0, order_id=0)


@pytest.fixture
def gateway() -> Iterator[FakeTwsThread]:
    with start_fake_tws(BOOK, setup=resting_orders) as gw:
        yield gw


@pytest.fixture
def run(
    gateway: FakeTwsThread, integration: Callable[..., Settings], cli: Callable[[Settings], Run]
) -> Run:
    venue = IbkrVenueConfig(name="ibkr", host=gateway.host, port=gateway.port, timeout_s=5)
    return cli(integration(venues=[venue]))


def flat(text: str) -> str:
    return " ".join(text.split())


def test_positions_then_rollback_flattens_the_gateway_and_reports_every_order(
    gateway: FakeTwsThread, run: Run
) -> None:
    con_ids = gateway.call(lambda t: {i.symbol: i.con_id for i in t.instruments.values()})

    # -- rollbot positions: what a person sees, then the machine-readable book
    shown = run("positions")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    rows = {
        m["symbol"]: D(m["qty"])
        for m in re.finditer(r"│ (?P<symbol>[A-Z]+)\s+│\s+(?P<qty>-?\d+)\s+│", shown.stdout)
    }
    assert rows == {"AAPL": 100, "MSFT": -50, "TSLA": 30}
    assert "ibkr: 3 open orders" in shown.stdout
    assert re.search(r"SELL 100 AAPL STOP 180\b", shown.stdout)
    as_json = run("positions", "--json")
    assert as_json.returncode == 0, as_json.stderr
    [book] = json.loads(as_json.stdout)
    assert book["error"] is None and book["account"]["currency"] == "USD"
    assert {
        p["symbol"]: (D(p["quantity"]), int(p["instrument"]["conId"])) for p in book["positions"]
    } == {
        "AAPL": (100, con_ids["AAPL"]),
        "MSFT": (-50, con_ids["MSFT"]),
        "TSLA": (30, con_ids["TSLA"]),
    }
    assert sorted((o["symbol"], o["type"]) for o in book["orders"]) == [
        ("AAPL", "STOP"),
        ("MSFT", "LIMIT"),
        ("TSLA", "LIMIT"),
    ]
    assert gateway.call(lambda t: t.received) == []  # reading sent no order

    # -- rollbot rollback --confirm: all five steps against the gateway
    rolled = run("rollback", "--reason", "strategy runaway", "--confirm")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    out = flat(rolled.stdout)
    assert "INC-0001 rollback: SUCCESS" in out
    assert "ibkr: 3 of 3 orders cancelled, none left" in out
    assert "ibkr: flat: 3 positions closed" in out
    assert "ibkr: flat, no open orders" in out

    def after(t: FakeTws) -> dict[str, Any]:
        return {
            "global_cancels": t.global_cancels,
            "cancel_requests": list(t.cancel_requests),
            "resting": {o.instrument.symbol: (o.order_type, o.status) for o in t.orders.values()
                        if not o.order_ref.startswith("rb")},
            "received": list(t.received),
            "book": {s: t.position(s) for s, _, _ in BOOK},
            "fills": {f.order.order_ref: f.shares for f in t.fills},
        }  # fmt: skip

    seen = gateway.call(after)
    # one global cancel reached every client's orders, the stop and the manual one included
    assert seen["global_cancels"] == 1 and seen["cancel_requests"] == []
    assert seen["resting"] == {
        "AAPL": ("STP", "Cancelled"),
        "MSFT": ("LMT", "Cancelled"),
        "TSLA": ("LMT", "Cancelled"),
    }
    # one closing order per position, on its contract, on the closing side, for all of it;
    # the book is worth more than the market-order threshold, so aggressive limits that cross
    closes = {r.con_id: r for r in seen["received"]}
    assert len(seen["received"]) == 3 and set(closes) == set(con_ids.values())
    expected = {"AAPL": ("SELL", D(100)), "MSFT": ("BUY", D(50)), "TSLA": ("SELL", D(30))}
    for symbol, (action, quantity) in expected.items():
        order = closes[con_ids[symbol]]
        assert (order.action, order.quantity, order.order_type) == (action, quantity, "LMT")
        assert order.lmt_price is not None
        crosses = (
            order.lmt_price < MARKS[symbol] if action == "SELL" else order.lmt_price > MARKS[symbol]
        )
        assert crosses, (symbol, order.lmt_price)
        assert order.account == "DU1234567" and order.order_ref.startswith("rb")
    assert seen["book"] == {"AAPL": 0, "MSFT": 0, "TSLA": 0}

    # -- the JSON report lists those orders as filled
    report = run("report", "INC-0001", "--format", "json")
    assert report.returncode == 0, report.stderr
    log = json.loads(report.stdout)
    assert log["final_status"] == "SUCCESS" and log["reason"] == "strategy runaway"
    assert [s["status"] for s in log["steps"]] == ["SUCCESS"] * 5
    assert log["steps"][0]["venues"] == {"ibkr": "3 of 3 orders cancelled, none left"}
    assert log["steps"][2]["positions"]["MSFT"]["quantity"] == -50
    orders = log["steps"][3]["orders"]
    assert sorted(
        (o["symbol"], o["direction"], o["quantity"], o["status"], o["client_order_id"])
        for o in orders
    ) == sorted(
        (s, a, float(q), "FILLED", closes[con_ids[s]].order_ref) for s, (a, q) in expected.items()
    )
    assert {o["client_order_id"]: D(str(o["filled_quantity"])) for o in orders} == seen["fills"]
    verification = log["steps"][4]["verification"]
    assert verification["all_positions_flat"] and verification["no_open_orders"]
    assert verification["residual"] == {} and verification["unreachable"] == []
