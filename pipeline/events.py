"""System events: emitting them, and watching a consumer for trouble.

- ``EventEmitter``: a component's operational events, to the ``system_events``
  table and topic. Events are rare (life cycle, failures), so each is one
  INSERT and one Kafka send. Emitting never raises: an event that cannot be
  stored is logged instead, because a failing event must not take the
  component down with it; the table and the topic are tried independently.
- ``BatchMonitor``: turns the consumer's per-batch figures into ``dlq_burst``
  and ``lag_high``/``lag_recovered`` events (``settings.events``).

Reading them back (``nexanest events``) is an operator's tool: ``ops/events_tail.py``.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Final

import asyncpg
from aiokafka import AIOKafkaProducer

from nexanest.pipeline import metrics
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.settings import EventsSettings, Settings
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
