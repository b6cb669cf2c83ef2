"""--log-level and ROLLBOT_LOG_LEVEL on both long-running faces: the variable sets the level
when the option is absent, a bad value of either is named (exit 2, before anything starts), and
the scheduler's per-run lines appear at DEBUG only."""

from __future__ import annotations

import json
import signal
import time
from typing import Any


def clock_lines(rollbot: Any, level: str) -> list[dict[str, Any]]:
    proc = rollbot.popen("clock", "--log-json", env={"ROLLBOT_LOG_LEVEL": level})
    try:
        assert proc.stdout is not None
        assert "rollbot clock ready" in proc.stdout.readline()
        time.sleep(2.5)  # the clock's every-second job runs twice or more
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_rollbot_log_level_sets_the_level_and_debug_shows_the_scheduler(rollbot: Any) -> None:
    debug = clock_lines(rollbot, "debug")
    quiet = clock_lines(rollbot, "WARNING")

    assert any(line["logger"].startswith("apscheduler") for line in debug)
    assert any(line["level"] == "DEBUG" for line in debug)
    assert not [line for line in quiet if line["level"] in ("DEBUG", "INFO")], quiet


def test_a_bad_level_is_named_and_nothing_starts(rollbot: Any) -> None:
    env_bad = rollbot("clock", env={"ROLLBOT_LOG_LEVEL": "LOUD"})
    serve_bad = rollbot("serve", "--log-level", "chatty")

    assert env_bad.returncode == 2
    assert "ROLLBOT_LOG_LEVEL 'LOUD' is not a level: use DEBUG, INFO, WARNING, ERROR" in (
        env_bad.stderr
    )
    assert serve_bad.returncode == 2 and "--log-level 'CHATTY' is not a level" in serve_bad.stderr
    assert "Traceback" not in env_bad.stderr + serve_bad.stderr
