"""Ending a child ``nexanest`` process the way an operator does: SIGINT (finish
the batch in hand, commit, close) or SIGTERM, then SIGKILL if it is not gone in time."""

from __future__ import annotations

import asyncio
import signal
import subprocess


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


def end(proc: subprocess.Popen[bytes], signum: signal.Signals = signal.SIGINT, timeout_s: float = 60.0) -> None:
    """``interrupt`` for a ``subprocess.Popen`` child: ``signum`` unless it has exited,
    wait, kill it after ``timeout_s``."""
    if proc.poll() is not None:
        return
    proc.send_signal(signum)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
