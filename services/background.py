"""Periodic workers of a service: rounds on aligned times, run as a resource.

The portfolio snapshot worker and the analytics worker do the same thing around
different rounds: wait for the next multiple of an interval (so that two
workers side by side stamp their rows with the same time and write each row
once), run a round, log it (or its failure, which does not end the worker),
and stop soon after a stop event. Inside a service the worker is a
``Resource``: started with the app, stopped with it, and ``/readyz`` fails once
it has died. This module holds that frame; each worker passes its round.
``logging_failure`` logs the failure of any such task when it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from structlog.typing import FilteringBoundLogger

from nexanest.services.app import Resource


def next_slot(now_s: float, interval_s: float) -> float:
    """The first multiple of ``interval_s`` (Unix seconds) after ``now_s``."""
    return (now_s // interval_s + 1) * interval_s


async def run_rounds(
    interval_s: float,
    stop: asyncio.Event,
    round_at: Callable[[datetime], Awaitable[Mapping[str, object]]],
    *,
    log: FilteringBoundLogger,
    event: str,
) -> None:
    """Call ``round_at(slot)`` at each multiple of ``interval_s`` until ``stop`` is set.

    A round returns the fields of its log line (``event``, with ``duration_ms``
    added); a round that raises is logged as ``<event>_failed`` and the next one
    runs as usual. Returns soon after ``stop``, once a round in progress has
    finished."""
    while not stop.is_set():
        slot = next_slot(time.time(), interval_s)
        try:
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, slot - time.time()))
            break
        except TimeoutError:
            pass
        started = time.perf_counter()
        try:
            fields = await round_at(datetime.fromtimestamp(slot, UTC))
        except Exception as exc:  # noqa: BLE001 - a failed round must not end the worker; the next may succeed
            log.error(f"{event}_failed", at=slot, error=repr(exc))  # noqa: TRY400 - one line, as before; no traceback
            continue
        log.info(event, **fields, duration_ms=round((time.perf_counter() - started) * 1000, 1))


def worker_resource(
    name: str,
    run: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    *,
    task_name: str,
    log: FilteringBoundLogger,
    failed_event: str,
) -> Resource[asyncio.Task[None]]:
    """``run(stop)`` as a resource of a service: a task started with the app and
    stopped (``stop`` set, then awaited) with it. Its failure is logged as
    ``failed_event`` when it happens, and ``/readyz`` reports it from then on."""

    def report_failure(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(failed_event, error=repr(task.exception()))

    @asynccontextmanager
    async def running() -> AsyncIterator[asyncio.Task[None]]:
        stop = asyncio.Event()
        task = asyncio.create_task(run(stop), name=task_name)
        task.add_done_callback(report_failure)
        try:
            yield task
        finally:
            stop.set()
            with contextlib.suppress(Exception):  # logged when it happened; the service stops regardless
                await task

    async def alive(task: asyncio.Task[None]) -> None:
        if task.done():
            raise RuntimeError(f"the worker {task_name!r} stopped")

    return Resource(name, running, alive)


async def logging_failure(work: Awaitable[None], *, log: FilteringBoundLogger) -> None:
    """``work``, whose failure goes to the log (with its traceback) before it is
    raised again: a background task's error would otherwise surface only when
    awaited at stop, while ``/readyz`` reports merely that the task ended."""
    try:
        await work
    except Exception as exc:
        log.error("background_task_failed", error=type(exc).__name__, exc_info=exc)  # noqa: TRY400 - exc_info given
        raise
