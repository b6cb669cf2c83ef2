"""The README's "Your first ten minutes", run as written: every command of its `sh` blocks, in
order, in a copy of the repository (its tracked files, as a clone has them), with the `dotenv`
block as the new user's `.env` and the loopback Slack standing in for the workspace. A command
that changes or a promise the output stops keeping fails here, so the section cannot drift.

The copy shares this checkout's virtualenv (a symlinked `.venv`, already set up, so `make` does
not rebuild it): building one takes minutes and is what `make` does on a truly fresh machine."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from fakes.slack import FakeSlack

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent
LONG_RUNNING = {"make serve"}  # started in the background; the next commands run beside it


def section(readme: str, title: str) -> str:
    start = readme.index(f"\n## {title}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else None]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)


def commands(text: str) -> list[str]:
    found = []
    for block in blocks(text, "sh"):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                found.append(line)
    return found


def fresh_copy(dest: Path) -> Path:
    """The repository's tracked files as they are in this working tree (a clone of this branch),
    with this checkout's built virtualenv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        src = REPO / name
        if src.is_file() and not src.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    venv = Path(sys.prefix)
    (dest / ".venv").symlink_to(venv)
    stamp = venv / ".installed"
    assert stamp.exists(), "run `make .venv/.installed` first"
    older = stamp.stat().st_mtime - 60  # set up already: make must not rebuild the venv
    os.utime(dest / "pyproject.toml", (older, older))
    return dest


async def run(cmd: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_shell(
        cmd, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps at the terminal's width


async def test_every_command_of_your_first_ten_minutes_works_from_a_fresh_clone(
    tmp_path: Path,
) -> None:
    text = section((REPO / "README.md").read_text(encoding="utf-8"), "Your first ten minutes")
    steps = commands(text)
    assert steps[0] == "make drill" and "make serve" in steps, steps
    assert any(s.endswith("preflight") for s in steps), steps
    [dotenv] = blocks(text, "dotenv")
    tokens = dict(line.split("=", 1) for line in dotenv.splitlines() if "=" in line)

    repo = fresh_copy(tmp_path / "rollbot")
    (repo / ".env").write_text(dotenv, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ROLLBOT_"))}
    env.update(NO_COLOR="1", COLUMNS="200", PYTHONUNBUFFERED="1")
    example = tomllib.loads((repo / "config/rollbot.example.toml").read_text(encoding="utf-8"))

    async with FakeSlack(
        bot_token=tokens["SLACK_BOT_TOKEN"], app_token=tokens["SLACK_APP_TOKEN"]
    ) as slack:
        env["SLACK_API_URL"] = slack.api_url  # the only thing not from the README: where Slack is
        people = {c["slack_id"]: c["name"] for c in example["contacts"]}
        people |= {u: u for ids in example["roles"].values() for u in ids}
        for user_id, name in people.items():
            slack.add_user(user_id, name.lower().replace(" ", "."), real_name=name)
        slack.join(example["slack"]["ops_channel"])  # "invite the bot to the channel"

        outputs: dict[str, str] = {}
        serve: asyncio.subprocess.Process | None = None
        try:
            for cmd in steps:
                if cmd in LONG_RUNNING:
                    serve = await asyncio.create_subprocess_shell(
                        cmd,
                        cwd=repo,
                        env=env,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.PIPE,
                        start_new_session=True,  # make and the bot: one group to stop
                    )
                    await slack.wait_connected(timeout=30)
                    continue
                code, out, err = await run(cmd, repo, env)
                if cmd.endswith("preflight") and code != 0:
                    # the bot takes the risk monitor's lease on its first tick
                    for _ in range(20):
                        await asyncio.sleep(0.5)
                        code, out, err = await run(cmd, repo, env)
                        if code == 0:
                            break
                assert code == 0, f"`{cmd}` exit {code}\n{out}\n{err}"
                assert "Traceback" not in out + err, f"`{cmd}`\n{err}"
                outputs[cmd] = flat(out)
        finally:
            if serve is not None and serve.returncode is None:
                os.killpg(serve.pid, signal.SIGTERM)
                _, serve_err = await asyncio.wait_for(serve.communicate(), 20)
                assert "Traceback" not in serve_err.decode(), serve_err.decode()

    # what the section says each command shows
    assert "latency 25 ms (a venue's typical round trip)" in outputs["make drill"]
    assert "DRILL-0001 rollback: SUCCESS" in outputs["make drill"]
    report = outputs[".venv/bin/rollbot report DRILL-0001"]
    assert report.startswith("# Rollback report DRILL-0001")
    assert "PnL before the halt" in report and "PnL during the rollback" in report
    png = Path(outputs[".venv/bin/rollbot report DRILL-0001 --format png"])
    assert (repo / png).read_bytes().startswith(b"\x89PNG")
    verify = outputs[".venv/bin/rollbot gates verify"]
    assert "✅ Live trading BLOCKED" in verify and "❌" not in verify
    armed = outputs[".venv/bin/rollbot preflight"]
    assert "FAIL" not in armed and armed.endswith("Armed: every check passes."), armed
    for check in ("slack_token", "slack_ops_channel", "slack_contacts", "monitor_lease", "drill"):
        assert f"│ {check} │ PASS │" in armed, (check, armed)
    for secret in tokens.values():  # taken from .env, never printed
        assert all(secret not in out for out in outputs.values()), secret
    tracked = subprocess.run(["git", "check-ignore", ".env"], cwd=REPO, capture_output=True)
    assert tracked.returncode == 0, ".env must be git-ignored"
