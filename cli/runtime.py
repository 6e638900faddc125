"""Process plumbing shared by every command: exit codes, signals, the event loop.

A command is an ``async`` function of the settings, its parsed arguments and a
``stop`` event, returning an exit code; each command group's ``register`` puts
it on its parser as ``handler``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from nexanest.pipeline.settings import Settings
from nexanest.pipeline.targets import withdraw_all

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: ``stop`` is set by the first SIGINT/SIGTERM; long-running commands return soon after.
Handler = Callable[[Settings, argparse.Namespace, asyncio.Event], Awaitable[int]]

#: What ``add_subparsers`` returns: each command group adds its parsers to it.
#: (argparse names the type only privately, and makes it generic only in its stubs.)
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def stderr_line(line: str) -> None:
    """A progress line for the operator, kept out of stdout so that --json stays parseable."""
    print(line, file=sys.stderr, flush=True)


def install_signal_handlers(stop: asyncio.Event) -> None:
    """First SIGINT/SIGTERM: finish the batch in hand, commit, close. Second: exit now
    (the process's Prometheus announcements withdrawn first, ``pipeline/targets.py``)."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            print(f"\nsecond {signal.Signals(signum).name}: exiting now", file=sys.stderr, flush=True)
            withdraw_all()  # os._exit skips the finally blocks that would withdraw them
            os._exit(EXIT_INTERRUPTED)
        print(
            f"\n{signal.Signals(signum).name}: finishing the batch in hand (again to exit at once)",
            file=sys.stderr,
            flush=True,
        )
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)


def run_async(command: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    """Run ``command`` to its end on a fresh event loop (uvloop where installed),
    with the signal handlers above; returns its exit code."""

    async def main() -> int:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        return await command(stop)

    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        return runner.run(main())
