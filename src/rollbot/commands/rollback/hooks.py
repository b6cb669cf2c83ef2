"""The optional strategy-stop hook (IBKR seed, step 1: strategy.stop()): a shell command or an
HTTP POST, bounded by a timeout so a hung strategy never delays the halt."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from rollbot.config import HookConfig


async def run_strategy_stop(hook: HookConfig, incident_id: str, reason: str) -> str | None:
    """None when no hook is configured; otherwise a one-line outcome. Never raises."""
    if not hook.command and not hook.url:
        return None
    outcomes = []
    if hook.command:
        outcomes.append(await _command(hook, incident_id, reason))
    if hook.url:
        outcomes.append(await _post(hook, incident_id, reason))
    return "; ".join(outcomes)


async def _command(hook: HookConfig, incident_id: str, reason: str) -> str:
    env = {**os.environ, "ROLLBOT_INCIDENT": incident_id, "ROLLBOT_REASON": reason}
    try:
        proc = await asyncio.create_subprocess_shell(
            hook.command or "",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: a timeout kills what it started too
        )
    except OSError as exc:
        return f"strategy-stop command could not start: {exc}"
    try:
        _, err = await asyncio.wait_for(proc.communicate(), hook.timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 1)
        return f"strategy-stop command timed out after {hook.timeout_s:g} s (killed)"
    if proc.returncode == 0:
        return "strategy-stop command succeeded"
    tail = (err or b"").decode(errors="replace").strip().splitlines()[-1:] or [""]
    return f"strategy-stop command exited {proc.returncode}: {tail[0]}"


async def _post(hook: HookConfig, incident_id: str, reason: str) -> str:
    import aiohttp

    try:
        timeout = aiohttp.ClientTimeout(total=hook.timeout_s)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(
                hook.url or "", json={"action": "stop", "incident": incident_id, "reason": reason}
            ) as resp,
        ):
            return f"strategy-stop POST answered {resp.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"strategy-stop POST failed: {exc.__class__.__name__} {exc}"
