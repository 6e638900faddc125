"""Ending a child ``nexanest`` process the way an operator does: SIGINT (finish
the batch in hand, commit, close), then SIGKILL if it is not gone in time."""

from __future__ import annotations

import asyncio
import signal


async def interrupt(proc: asyncio.subprocess.Process, timeout_s: float = 60.0) -> None:
    """SIGINT ``proc`` unless it has exited, and wait; kill it after ``timeout_s``."""
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
