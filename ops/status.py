"""``nexanest status``: one read-only report on the whole local stack.

Every probe runs concurrently with a short timeout (``timeout_s``), and none of
them writes anything. What is reported, and where it comes from:

- services up or down, with their versions: ``status_services`` (one read-only
  question to each store, Kafka, Prometheus and Alertmanager when configured,
  and the HTTP services);
- lag of the consumer group per partition (messages and seconds), ticks/s, the
  age of the newest tick and the DLQ size: ``status_pipeline``;
- last backup: the newest complete folder (``<UTC time>`` with a ``MANIFEST``;
  ``.partial`` ones are not) under ``backup_dir``, with its time (``last_backup``).

The report and its text are in ``status_report``. ``required`` services decide
the exit status: the four stores, plus Prometheus and Alertmanager when they are
configured (an alert rule that fires into a dead Alertmanager reaches nobody).
The HTTP services are reported but optional, since they are started on their
own (``nexanest serve``); ``require_services`` makes them required as well.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TypeVar

from nexanest.ops.status_pipeline import consumer_lag, dlq_size, tick_rate
from nexanest.ops.status_report import StatusReport
from nexanest.ops.status_services import DEFAULT_TIMEOUT_S, describe_error, service_probes
from nexanest.pipeline.settings import Settings

T = TypeVar("T")

_BACKUP_NAME: Final = re.compile(r"^(\d{8}T\d{6}Z)(-\d+)?$")


async def collect(
    settings: Settings,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    require_services: bool = False,
    now: Callable[[], float] = time.time,
) -> StatusReport:
    """Probe everything concurrently; never raises for a service that is down."""
    report = StatusReport(
        checked_at=_iso(now()),
        topic=settings.kafka.ticks_topic,
        consumer_group=settings.kafka.consumer_group,
        dlq_topic=settings.kafka.dead_letter_topic,
        backup_dir=str(settings.backup_dir),
    )
    probes = service_probes(settings, timeout_s, require_services)
    services, lag, ticks, dlq = await asyncio.gather(
        asyncio.gather(*probes),
        _guard(consumer_lag(settings), timeout_s),
        _guard(tick_rate(settings), timeout_s),
        _guard(dlq_size(settings), timeout_s),
    )
    report.services = list(services)
    if isinstance(lag, str):
        report.lag_error = lag
    else:
        report.lag = lag
    if isinstance(ticks, str):
        report.ticks_error = ticks
    else:
        report.ticks_per_second, report.newest_tick_age_s = ticks
    if isinstance(dlq, str):
        report.dlq_error = dlq
    else:
        report.dlq_size = dlq
    backup = last_backup(settings.backup_dir)
    if backup is not None:
        report.last_backup, report.last_backup_time = str(backup[0]), backup[1]
    return report


async def _guard(coro: Awaitable[T], timeout_s: float) -> T | str:
    """``coro``'s result, or why it failed (a string)."""
    try:
        return await asyncio.wait_for(coro, timeout_s)
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return describe_error(exc)


def last_backup(root: Path) -> tuple[Path, str] | None:
    """The newest complete backup under ``root`` (a ``<UTC time>`` folder with a
    MANIFEST, as ``deploy/local/backup.sh`` leaves it) and its time, ISO 8601."""
    try:
        entries = list(root.iterdir())
    except OSError:
        return None
    found: list[tuple[str, int, Path]] = []
    for entry in entries:
        m = _BACKUP_NAME.match(entry.name)
        if m and (entry / "MANIFEST").is_file():
            found.append((m.group(1), int((m.group(2) or "-0")[1:]), entry))
    if not found:
        return None
    stamp, _, path = max(found)
    when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return path, when.isoformat().replace("+00:00", "Z")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
