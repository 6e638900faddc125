"""System events: emitting them, watching a consumer for trouble, reading them back.

- ``EventEmitter``: a component's operational events, to the ``system_events``
  table and topic. Events are rare (life cycle, failures), so each is one
  INSERT and one Kafka send. Emitting never raises: an event that cannot be
  stored is logged instead, because a failing event must not take the
  component down with it; the table and the topic are tried independently.
- ``BatchMonitor``: turns the consumer's per-batch figures into ``dlq_burst``
  and ``lag_high``/``lag_recovered`` events (``settings.events``).
- ``fetch_events``/``tail_events``/``format_event``: ``nexanest events`` reads
  them back (and follows new ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg
from aiokafka import AIOKafkaProducer

from nexanest.pipeline import metrics
from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.settings import EventsSettings, Settings
from nexanest.pipeline.sinks.timescale import RETRYABLE_DB_ERRORS
from nexanest.schemas.events import DetailValue, EventType, Severity, SystemEvent, encode_event

_log = get_logger(__name__)

#: Severities from least to most severe; ``--severity warning`` means warning and above.
SEVERITY_ORDER: Final[tuple[Severity, ...]] = tuple(Severity)


class EventEmitter:
    def __init__(
        self,
        component: str,
        *,
        pool: asyncpg.Pool | None,
        producer: AIOKafkaProducer | None,
        topic: str,
        owns_pool: bool = False,
    ) -> None:
        self._component = component
        self._pool = pool
        self._producer = producer
        self._topic = topic
        self._owns_pool = owns_pool
        self._host = socket.gethostname()

    async def emit(
        self, event_type: EventType, message: str, severity: Severity = Severity.INFO, **details: DetailValue
    ) -> SystemEvent:
        """Store one event in the table and send it to the topic; never raises.

        ``details`` must be flat scalars (the wire format): a value that is not
        (typed code cannot pass one) is stored as its JSON text and logged, so
        the topic never carries an event its readers cannot decode."""
        event = SystemEvent(
            event_id=str(uuid.uuid4()),
            ts_ns=time.time_ns(),
            component=self._component,
            event_type=str(event_type),
            severity=severity,
            message=message,
            host=self._host,
            details=_flat(event_type, details),
        )
        metrics.SYSTEM_EVENTS.labels(self._component, event_type).inc()
        if self._pool is not None:
            try:
                await self._pool.execute(
                    "INSERT INTO system_events"
                    " (time, event_id, component, event_type, severity, message, host, details)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)",
                    datetime.fromtimestamp(event.ts_ns / 1e9, tz=UTC),
                    uuid.UUID(event.event_id),
                    event.component,
                    event.event_type,
                    str(event.severity),
                    event.message,
                    event.host,
                    json.dumps(event.details),
                )
            except Exception as exc:  # noqa: BLE001 - an event must never take its component down
                _log.warning("system_event_not_stored", event_type=event_type, store="table", error=repr(exc))
        if self._producer is not None:
            try:
                await self._producer.send_and_wait(self._topic, encode_event(event), key=self._component.encode())
            except Exception as exc:  # noqa: BLE001 - as above
                _log.warning("system_event_not_stored", event_type=event_type, store="topic", error=repr(exc))
        return event

    async def close(self) -> None:
        """Close the pool if this emitter opened it (``open_event_emitter``)."""
        if self._owns_pool and self._pool is not None:
            await self._pool.close()


def _flat(event_type: str, details: Mapping[str, object]) -> dict[str, DetailValue]:
    out: dict[str, DetailValue] = {}
    for key, value in details.items():
        if value is None or isinstance(value, str | int | float | bool):
            out[key] = value
        else:
            _log.warning("system_event_detail_not_scalar", event_type=event_type, key=key)
            out[key] = json.dumps(value, default=str, sort_keys=True)
    return out


async def open_event_emitter(settings: Settings, component: str, producer: AIOKafkaProducer | None) -> EventEmitter:
    """An emitter with its own one-connection pool to TimescaleDB (ingest role),
    for a component that otherwise has no database: the pool connects on the
    first event, so a database that is down costs that event's row (logged),
    never the component's start. ``close()`` it when done."""
    ts = settings.timescale
    pool = await asyncpg.create_pool(  # min_size=0: no connection yet
        ts.dsn.get_secret_value(), min_size=0, max_size=1, timeout=ts.connect_timeout_s, command_timeout=10
    )
    return EventEmitter(component, pool=pool, producer=producer, topic=settings.kafka.events_topic, owns_pool=True)


class BatchMonitor:
    """Watches the consumer's batches and emits, through ``events``:

    - ``dlq_burst`` (warning) for each batch that dead-letters more than
      ``dlq_burst_messages`` messages;
    - ``lag_high`` (warning) when the total lag over this consumer's assigned
      partitions rises above ``lag_high_messages``, once per crossing, and
      ``lag_recovered`` (info) when it falls to ``lag_recovered_ratio`` of it
      (the gap keeps a lag hovering at the threshold from emitting a pair per batch).

    Lag is known per partition only when a batch from it arrives; the total
    uses each assigned partition's last known lag.
    """

    def __init__(self, events: EventEmitter, settings: EventsSettings, **context: str) -> None:
        self._events = events
        self._settings = settings
        self._context = context
        self._lags: dict[tuple[str, int], int] = {}
        self._lag_high = False

    @property
    def lag_high(self) -> bool:
        return self._lag_high

    async def batch_failed(self, step: str, error: str) -> None:
        """The first failure of a batch write (the loop retries it until it succeeds)."""
        await self._events.emit(
            EventType.BATCH_FAILED,
            f"batch write to {step} failed, retrying with backoff: {error[:300]}",
            Severity.WARNING,
            step=step,
            error=error[:500],
            **self._context,
        )

    async def batch_recovered(self, step: str, retries: int, outage_s: float) -> None:
        await self._events.emit(
            EventType.BATCH_RECOVERED,
            f"batch write to {step} succeeded after {retries} retries ({outage_s:.1f}s)",
            Severity.INFO,
            step=step,
            retries=retries,
            outage_s=round(outage_s, 3),
            **self._context,
        )

    async def after_batch(
        self,
        *,
        rejected_by_reason: Mapping[str, int],
        lags: Mapping[tuple[str, int], int],
        assigned: Sequence[tuple[str, int]] | set[tuple[str, int]],
    ) -> None:
        """Figures of one committed batch: dead letters by reason, lag per partition in it."""
        rejected = sum(rejected_by_reason.values())
        limit = self._settings.dlq_burst_messages
        if rejected > limit:
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(rejected_by_reason.items()))
            await self._events.emit(
                EventType.DLQ_BURST,
                f"one batch dead-lettered {rejected} messages (more than {limit}): {reasons}",
                Severity.WARNING,
                rejected=rejected,
                threshold=limit,
                reasons=reasons,
                **self._context,
            )
        self._lags.update(lags)
        mine = set(assigned)
        for tp in [tp for tp in self._lags if tp not in mine]:
            del self._lags[tp]
        total = sum(self._lags.values())
        high = self._settings.lag_high_messages
        if not self._lag_high and total > high:
            self._lag_high = True
            await self._events.emit(
                EventType.LAG_HIGH,
                f"consumer lag {total} messages is above {high}",
                Severity.WARNING,
                lag=total,
                threshold=high,
                partitions=len(self._lags),
                **self._context,
            )
        elif self._lag_high and total <= high * self._settings.lag_recovered_ratio:
            self._lag_high = False
            await self._events.emit(
                EventType.LAG_RECOVERED,
                f"consumer lag {total} messages is back under {high * self._settings.lag_recovered_ratio:g}",
                Severity.INFO,
                lag=total,
                threshold=high,
                **self._context,
            )


# -- reading ------------------------------------------------------------------

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
