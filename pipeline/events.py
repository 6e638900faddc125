"""``EventEmitter``: a component's operational events, to the table and the topic.

Events are rare (life cycle, failures), so each is one INSERT and one Kafka
send. Emitting never raises: an event that cannot be stored is logged instead,
because a failing event must not take the component down with it.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from nexanest.pipeline import metrics
from nexanest.pipeline.log import get_logger
from nexanest.schemas.events import Severity, SystemEvent, encode_event

_log = get_logger(__name__)


class EventEmitter:
    def __init__(
        self, component: str, *, pool: asyncpg.Pool | None, producer: AIOKafkaProducer | None, topic: str
    ) -> None:
        self._component = component
        self._pool = pool
        self._producer = producer
        self._topic = topic
        self._host = socket.gethostname()

    async def emit(
        self, event_type: str, message: str, severity: Severity = Severity.INFO, **details: Any
    ) -> SystemEvent:
        event = SystemEvent(
            event_id=str(uuid.uuid4()),
            ts_ns=time.time_ns(),
            component=self._component,
            event_type=event_type,
            severity=severity,
            message=message,
            host=self._host,
            details=details,
        )
        metrics.SYSTEM_EVENTS.labels(self._component, event_type).inc()
        try:
            if self._pool is not None:
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
            if self._producer is not None:
                await self._producer.send_and_wait(self._topic, encode_event(event), key=self._component.encode())
        except Exception as exc:  # noqa: BLE001 - an event must never take its component down
            _log.warning("system_event_not_stored", event_type=event_type, error=repr(exc))
        return event
