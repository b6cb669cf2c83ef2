"""Is the process that claimed some work still running? Host, pid and start time: a pid alone
is handed to the next process once its owner dies."""

from __future__ import annotations

import subprocess
import sys

from rollbot.commands.desk.liveness import ME, is_me, live_elsewhere, started


def test_a_claimer_whose_pid_now_belongs_to_another_process_is_not_running() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim = {"host": ME["host"], "pid": proc.pid, "started": started(proc.pid)}
        assert claim["started"] is not None
        assert live_elsewhere(claim)
        # the claimer died and its pid went to another process: its work must not wait forever
        assert not live_elsewhere({**claim, "started": "an-earlier-boot:77"})
        assert live_elsewhere({"host": ME["host"], "pid": proc.pid})  # a claim without a start
        assert not live_elsewhere({**claim, "host": "another-host"})
    finally:
        proc.kill()
        proc.wait()
    assert not live_elsewhere(claim)


def test_an_earlier_life_of_this_pid_is_not_this_process() -> None:
    assert is_me(dict(ME)) and not live_elsewhere(dict(ME))
    earlier = {**ME, "started": "an-earlier-boot:1"}  # restarted in a container: pid 1 again
    assert not is_me(earlier) and not live_elsewhere(earlier)
