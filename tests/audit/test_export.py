"""`rollbot audit export`: the regulator's trail through the real CLI — who, when, what, why,
from where, on which host, the scope/venue/strategy each order or hold belongs to, and the
hashes; hostile text survives both formats; CSV defuses formulas; bad input exits 2 naming it
and writes nothing."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from rollbot.storage.chain import GENESIS, event_hash

from .conftest import HOSTILE


def flat(text: str) -> str:
    return " ".join(text.split())


def jsonl(audit_cli: Any, *args: str) -> list[dict[str, Any]]:
    done = audit_cli("audit", "export", "--format", "jsonl", *args)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[-1] == ""  # one record a line, each line whole (no raw newline or U+2028)
    assert len(done.stdout.splitlines()) == len(lines) - 1
    return [json.loads(line) for line in lines[:-1]]


def test_jsonl_gives_who_what_why_where_and_recomputes_to_the_chain(
    audit_cli: Any, story: dict[str, int]
) -> None:
    records = jsonl(audit_cli)
    by_id = {r["event_id"]: r for r in records}

    order = by_id[story["order"]]  # an order of a strategy kill: its venue and its strategy
    assert order["kind"] == "ORDER_CANCEL_REQUESTED" and order["actor"] == "U0OPERATOR"
    assert order["source"] == "slack" and order["reason"] == "kill"
    assert (order["scope"], order["incident_scope"]) == ("venue:paper", "strategy:mm-eu")
    assert (order["venue"], order["strategy"]) == ("paper", "mm-eu")
    assert (order["symbol"], order["order_id"]) == ("AAPL", "RB-1-AAPL")
    held = next(r for r in records if r["kind"] == "HOLD_SET")
    assert (held["scope"], held["strategy"], held["incident_id"]) == (
        "strategy:mm-eu", "mm-eu", order["incident_id"]
    )  # fmt: skip

    hostile = by_id[story["hostile"]]  # a terminal actor: its OS login and its host
    assert hostile["reason"] == HOSTILE and hostile["data"]["x"] == HOSTILE
    assert (hostile["source"], hostile["os_user"], hostile["host"]) == ("cli", "risk", "desk-2")
    assert by_id[story["clock"]]["source"] == "clock"

    # everything the hash covers is in the file: a regulator recomputes the chain from it alone
    prev = GENESIS
    for seq, r in enumerate(records, 1):
        assert (r["seq"], r["prev_hash"]) == (seq, prev)
        fields = ("at", "kind", "actor", "source", "host", "scope", "incident_id", "reason")
        assert event_hash(seq, *(r[f] for f in fields), r["data"], prev) == r["hash"]
        prev = r["hash"]


def test_csv_keeps_hostile_text_and_defuses_formulas(audit_cli: Any, story: dict[str, int]) -> None:
    done = audit_cli("audit", "export", "--format", "csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout, newline="")))
    by_id = {int(r["event_id"]): r for r in rows}
    hostile = by_id[story["hostile"]]
    assert hostile["reason"] == HOSTILE  # commas, quotes, a newline, U+2028: one cell, intact
    assert json.loads(hostile["data"])["x"] == HOSTILE
    notes = [r["reason"] for r in rows if r["kind"] == "NOTE" and r["reason"].endswith("1+1")]
    assert notes == ["'=1+1", "'+1+1", "'-1+1", "'@1+1"]
    for r in rows:  # no cell a spreadsheet would evaluate
        assert not any(v.startswith(("=", "+", "-", "@")) for v in r.values()), r
    assert by_id[story["order"]]["strategy"] == "mm-eu"
    assert len(by_id[story["order"]]["hash"]) == 64


def test_from_and_to_take_whole_days_and_times(audit_cli: Any, story: dict[str, int]) -> None:
    day = lambda *a: {r["event_id"] for r in jsonl(audit_cli, *a)}  # noqa: E731
    all_ids = day()
    first, second, third = (
        day("--from", "2026-01-05", "--to", "2026-01-05"),
        day("--from", "2026-01-06", "--to", "2026-01-06"),
        day("--from", "2026-01-07"),
    )
    assert story["order"] in first and story["hostile"] in second and story["clock"] in third
    assert first | second | third == all_ids and not (first & second or second & third)
    # a time is included to the millisecond; no zone means UTC
    assert story["order"] in day("--to", "2026-01-05T12:00:00")
    assert day("--to", "2026-01-05T11:59:59.999Z") == set()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--from", "2026-02-30"), "--from '2026-02-30' is not a date"),
        (("--to", "yesterday"), "--to 'yesterday' is not a date"),
        (("--from", "2026-01-07", "--to", "2026-01-05"), "--from '2026-01-07' is not before"),
        (("--format", "xlsx"), "--format 'xlsx': use csv or jsonl"),
    ],
)
def test_bad_input_exits_2_naming_the_value_and_writes_nothing(
    audit_cli: Any, story: dict[str, int], tmp_path: Path, args: tuple[str, ...], named: str
) -> None:
    out = tmp_path / "trail.csv"
    done = audit_cli("audit", "export", *args, "--out", str(out))
    assert done.returncode == 2, done.stdout + done.stderr
    assert named in flat(done.stderr) and "Traceback" not in done.stderr
    assert not out.exists() and list(tmp_path.glob(".trail.csv*")) == []


def test_out_writes_a_file_and_never_overwrites_one(
    audit_cli: Any, story: dict[str, int], tmp_path: Path
) -> None:
    out = tmp_path / "trail.jsonl"
    done = audit_cli("audit", "export", "--format", "jsonl", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "chain intact up to seq" in flat(done.stderr)
    lines = out.read_text("utf-8").splitlines()
    assert len(lines) == len(jsonl(audit_cli)) and done.stdout == ""
    again = audit_cli("audit", "export", "--out", str(out))
    assert again.returncode == 2 and "already exists" in flat(again.stderr)
    assert out.read_text("utf-8").splitlines() == lines


def test_an_export_of_a_broken_chain_is_written_and_says_so(
    database: Any, audit_cli: Any, story: dict[str, int]
) -> None:
    database.tamper(("UPDATE events SET actor = 'U0SOMEONE' WHERE id = ?", (story["order"],)))
    done = audit_cli("audit", "export", "--format", "jsonl")
    assert done.returncode == 1
    assert f"the chain is BROKEN at event id {story['order']}" in flat(done.stderr)
    assert any(json.loads(line)["actor"] == "U0SOMEONE" for line in done.stdout.splitlines())
