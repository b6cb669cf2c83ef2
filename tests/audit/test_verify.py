"""`rollbot audit verify` through the real CLI: an intact log passes; an edited field, a
deleted row, two swapped rows, a renumbered log, a row written around the event log, or a head
cut off after it was anchored each fail (exit 1) naming the first bad event: its id, time and
what is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from rollbot.storage.chain import GENESIS


def flat(text: str) -> str:
    return " ".join(text.split())


def row(database: Any, event_id: int) -> dict[str, Any]:
    db = database.open()
    try:
        found = db.one("SELECT * FROM events WHERE id = ?", (event_id,))
        assert found is not None
        return found
    finally:
        db.close()


def test_an_intact_log_verifies_and_its_head_anchors_it(
    database: Any, audit_cli: Any, story: dict[str, int], count_events: Any
) -> None:
    # a real terminal kill too (the fast hold's raw sqlite3 path) after the story's appends
    kill = audit_cli("kill", "trigger", "--reason", "audit: break glass", script=True)
    assert kill.returncode == 0, kill.stderr
    total = count_events()

    done = audit_cli("audit", "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"intact - {total} event(s), seq 1..{total}" in flat(done.stdout)

    head = audit_cli("audit", "head")
    assert head.returncode == 0, head.stderr
    anchor = head.stdout.strip()
    assert anchor.startswith(f"{total}:") and anchor != f"{total}:{GENESIS}"
    anchored = audit_cli("audit", "verify", "--anchor", anchor)
    assert anchored.returncode == 0 and f"anchor seq {total} matches" in flat(anchored.stdout)

    # the last events cut off: the chain that is left is whole, only the anchor shows it
    database.tamper(("DELETE FROM events WHERE seq > ?", (total - 2,)))
    assert audit_cli("audit", "verify").returncode == 0
    cut = audit_cli("audit", "verify", "--anchor", anchor)
    assert cut.returncode == 1
    assert f"the anchored event seq {total} is not in the log (it ends at seq {total - 2})" in (
        flat(cut.stderr)
    )


def _swap(a: int, b: int) -> tuple[str, ...]:
    return (
        f"UPDATE events SET id = -1 WHERE id = {a}",
        f"UPDATE events SET id = {a} WHERE id = {b}",
        f"UPDATE events SET id = {b} WHERE id = -1",
    )


# (name, statements given the story's ids, the first bad event's id, what is said about it)
CASES: list[tuple[str, Any, str, str]] = [
    (
        "a reason edited",
        lambda ids: [("UPDATE events SET reason = 'routine' WHERE id = ?", (ids["order"],))],
        "order",
        "EDITED - its content no longer matches its hash",
    ),
    (
        "a time edited",
        lambda ids: [
            ("UPDATE events SET at = '2026-01-05T11:00:00.000Z' WHERE id = ?", (ids["clock"],))
        ],
        "clock",
        "EDITED",
    ),
    (
        "the payload edited (who was at the terminal)",
        lambda ids: [
            (
                "UPDATE events SET data = replace(data, 'desk-2', 'desk-9') WHERE id = ?",
                (ids["hostile"],),
            )
        ],
        "hostile",
        "EDITED",
    ),
    (
        "a row deleted",
        lambda ids: [("DELETE FROM events WHERE id = ?", (ids["order"],))],
        "after-order",
        "MISSING - the event(s) seq {seq_order} before it are gone: deleted",
    ),
    (
        "a row deleted and the later ones renumbered",
        lambda ids: [
            ("DELETE FROM events WHERE id = ?", (ids["order"],)),
            ("UPDATE events SET seq = seq - 1 WHERE id > ?", (ids["order"],)),
        ],
        "after-order",
        "EDITED",
    ),
    (
        "a row replaced by one hashed to fit its place",
        "replace",
        "after-order",
        "MISSING - its link to the event before it",
    ),
    ("two rows swapped", lambda ids: _swap(ids["order"], ids["hostile"]), "order", "REORDERED"),
    (
        "a row written around the event log",
        lambda ids: [
            "INSERT INTO events (at, kind, actor, source, data) VALUES"
            " ('2026-01-06T00:00:00.000Z', 'HOLD_CLEARED', 'U0X', 'slack', '{}')"
        ],
        "new",
        "UNHASHED",
    ),
]


@pytest.mark.parametrize(("name", "change", "bad", "said"), CASES, ids=[c[0] for c in CASES])
def test_tampering_is_found_and_the_first_bad_event_named(
    database: Any,
    audit_cli: Any,
    story: dict[str, int],
    count_events: Any,
    name: str,
    change: Any,
    bad: str,
    said: str,
) -> None:
    ids = dict(story)
    ids["after-order"] = ids["order"] + 1
    ids["new"] = count_events() + 1
    order = row(database, ids["order"])
    if change == "replace":
        # a forger who knows the format: the row's own hash recomputed, its link kept
        from rollbot.storage.chain import row_hash

        forged = {**order, "reason": "routine"}
        statements: Any = [
            ("UPDATE events SET reason = 'routine', hash = ? WHERE id = ?",
             (row_hash(forged), ids["order"]))
        ]  # fmt: skip
    else:
        statements = change(ids)
    assert audit_cli("audit", "verify").returncode == 0  # intact before

    database.tamper(*statements)

    result = audit_cli("audit", "verify")
    text = flat(result.stderr)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in text
    first = row(database, ids[bad])
    seq = "no seq" if first["seq"] is None else f"seq {first['seq']}"
    assert f"BROKEN at event id {ids[bad]} ({seq}, {first['at']}, {first['kind']}):" in text, text
    assert said.format(seq_order=order["seq"]) in text, text
