"""``nexanest events``: read the ``system_events`` table back, newest last, and
follow new events (the writing side, ``EventEmitter``, is ``pipeline/events.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg

from nexanest.pipeline.db import RETRYABLE_DB_ERRORS
from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.settings import Settings
from nexanest.schemas.events import Severity

_log = get_logger(__name__)

#: Severities from least to most severe; ``--severity warning`` means warning and above.
SEVERITY_ORDER: Final[tuple[Severity, ...]] = tuple(Severity)

_SELECT: Final = """
SELECT time, event_id, component, event_type, severity, message, host, details
  FROM system_events
 WHERE time >= $1
   AND ($2::text IS NULL OR component = $2 OR component LIKE $2 || '.%')
   AND severity = ANY($3::text[])
 ORDER BY time DESC, event_id DESC
 LIMIT $4
"""


def severities_from(minimum: Severity) -> list[str]:
    """``minimum`` and every more severe level."""
    return [str(s) for s in SEVERITY_ORDER[SEVERITY_ORDER.index(minimum) :]]


async def fetch_events(
    conn: Any, *, since: datetime, component: str | None = None, minimum: Severity = Severity.DEBUG, limit: int = 200
) -> list[dict[str, Any]]:
    """The newest ``limit`` events at or after ``since``, returned oldest first.

    ``component`` matches itself and its sub-components (``consumer`` matches
    ``consumer.ticks_to_timescale``). ``conn``: an asyncpg connection or pool.
    """
    rows = await conn.fetch(_SELECT, since, component, severities_from(minimum), limit)
    return [_event_dict(r) for r in reversed(rows)]


def _event_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    details = row["details"]
    return {
        "time": row["time"],
        "event_id": str(row["event_id"]),
        "component": row["component"],
        "event_type": row["event_type"],
        "severity": row["severity"],
        "message": row["message"],
        "host": row["host"],
        "details": json.loads(details) if isinstance(details, str) else dict(details or {}),
    }


def event_json(event: Mapping[str, Any]) -> str:
    """One event as a line of JSON (the time as ISO-8601 UTC)."""
    return json.dumps({**event, "time": event["time"].astimezone(UTC).isoformat()}, sort_keys=False)


def format_event(event: Mapping[str, Any]) -> str:
    """One event as one line: time, severity, component, type, message, details."""
    when = event["time"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
    details = " ".join(f"{k}={v}" for k, v in event["details"].items())
    line = f"{when}  {event['severity']:<8} {event['component']:<28} {event['event_type']:<16} {event['message']}"
    return f"{line}  [{details}]" if details else line


async def tail_events(
    settings: Settings,
    out: Callable[[dict[str, Any]], None],
    *,
    since: datetime,
    component: str | None = None,
    minimum: Severity = Severity.DEBUG,
    limit: int = 200,
    follow: bool = False,
    interval_s: float = 1.0,
    stop: asyncio.Event | None = None,
) -> int:
    """Hand ``out`` the newest ``limit`` matching events since ``since``, oldest
    first; with ``follow``, keep polling every ``interval_s`` and hand it each new
    one until ``stop`` is set. Returns how many were handed out.

    Reads as the ingest role. A poll looks back ``_FOLLOW_LOOKBACK`` past the
    newest event seen, so an event committed late with an earlier time (another
    host's clock, a slow INSERT) still shows; event ids keep it from showing twice.
    Raises ``ConfigurationError`` when the database cannot be reached at start;
    while following, a lost connection is retried at the next poll.
    """
    try:
        pool = await asyncpg.create_pool(
            settings.timescale.dsn.get_secret_value(), min_size=1, max_size=1, timeout=10, command_timeout=30
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConfigurationError(
            f"cannot connect to TimescaleDB ({type(exc).__name__}: {exc}); is it running (make db-status)?"
        ) from exc
    shown = 0
    seen: dict[str, datetime] = {}
    newest = since
    try:
        batch = await fetch_events(pool, since=since, component=component, minimum=minimum, limit=limit)
        while True:
            for event in batch:
                if event["event_id"] in seen:
                    continue
                out(event)
                shown += 1
                seen[event["event_id"]] = event["time"]
                newest = max(newest, event["time"])
            if not follow or (stop is not None and stop.is_set()):
                return shown
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for((stop or asyncio.Event()).wait(), interval_s)
            if stop is not None and stop.is_set():
                return shown
            horizon = newest - _FOLLOW_LOOKBACK
            seen = {k: t for k, t in seen.items() if t >= horizon}
            try:
                batch = await fetch_events(
                    pool, since=max(since, horizon), component=component, minimum=minimum, limit=10_000
                )
            except RETRYABLE_DB_ERRORS as exc:
                _log.warning("events_poll_failed", error=repr(exc))
                batch = []
    finally:
        await pool.close()


_FOLLOW_LOOKBACK: Final = timedelta(seconds=30)
