"""``FeedMonitor``: the publisher side's ``FeedObserver``, for every adapter alike.

It turns what an adapter reports into Prometheus metrics (``nexanest_feed_*``,
labelled by the adapter's registry name only) and ``system_events``
(component ``producer.feed``): ``feed_connected``, ``feed_disconnected``,
``feed_gap``; malformed input is counted always, logged with a truncated sample
for the first few and then at most once per ``malformed_every_s``, and reported
as one ``feed_malformed`` event per interval with the count since the last, so
a venue that sends garbage cannot flood the log or the events table.

The feed runner (``producers/feed_runner.py``) calls ``ticks_in`` and
``published`` for the ticks themselves: per batch, never per tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, Protocol

from nexanest.pipeline import metrics
from nexanest.pipeline.log import get_logger
from nexanest.schemas.events import DetailValue, EventType, Severity, SystemEvent

COMPONENT: Final = "producer.feed"
#: Characters of a malformed frame or row kept in the log and in events.
SAMPLE_CHARS: Final = 200
#: Malformed inputs logged one by one before the log is rate-limited.
_LOGGED_FREELY: Final = 5

_log = get_logger(COMPONENT)


class Emitter(Protocol):
    """What ``pipeline.events.EventEmitter`` offers (and a test's recorder)."""

    async def emit(
        self, event_type: EventType, message: str, severity: Severity = ..., **details: DetailValue
    ) -> SystemEvent: ...


def truncated(sample: str, limit: int = SAMPLE_CHARS) -> str:
    """``sample`` cut to ``limit`` characters, saying how much was cut."""
    if len(sample) <= limit:
        return sample
    return f"{sample[:limit]}... ({len(sample) - limit} more characters)"


class FeedMonitor:
    """Metrics and events of one adapter run (a ``FeedObserver``)."""

    def __init__(
        self,
        adapter: str,
        events: Emitter | None,
        *,
        malformed_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.adapter = adapter
        self._events = events
        self._malformed_every_s = malformed_every_s
        self._clock = clock
        self._connections = 0
        self._malformed_total = 0
        self._malformed_unreported = 0
        self._malformed_reported_at: float | None = None
        self._ticks_in = metrics.FEED_TICKS_IN.labels(adapter)
        self._published = metrics.FEED_PUBLISHED.labels(adapter)
        self._rejected = metrics.FEED_REJECTED.labels(adapter)
        self._reconnects = metrics.FEED_RECONNECTS.labels(adapter)
        self._gaps = metrics.FEED_GAPS.labels(adapter)
        self._connected = metrics.FEED_CONNECTED.labels(adapter)

    async def _emit(self, event_type: EventType, message: str, severity: Severity, **details: DetailValue) -> None:
        if self._events is not None:
            await self._events.emit(event_type, message, severity, adapter=self.adapter, **details)

    async def connected(self, detail: str) -> None:
        self._connections += 1
        if self._connections > 1:
            self._reconnects.inc()
        self._connected.set(1)
        _log.info("feed_connected", adapter=self.adapter, detail=detail, connections=self._connections)
        await self._emit(
            EventType.FEED_CONNECTED,
            f"{self.adapter} connected: {detail}",
            Severity.INFO,
            detail=detail,
            reconnects=self._connections - 1,
        )

    async def disconnected(self, reason: str) -> None:
        self._connected.set(0)
        _log.warning("feed_disconnected", adapter=self.adapter, reason=reason)
        await self._emit(
            EventType.FEED_DISCONNECTED, f"{self.adapter} disconnected: {reason}", Severity.WARNING, reason=reason
        )

    async def gap(self, stream: str, expected: int, received: int) -> None:
        self._gaps.inc()
        _log.warning("feed_gap", adapter=self.adapter, stream=stream, expected=expected, received=received)
        await self._emit(
            EventType.FEED_GAP,
            f"{self.adapter}: sequence gap on {stream}: expected {expected}, received {received}",
            Severity.WARNING,
            stream=stream,
            expected=expected,
            received=received,
            missing=max(0, received - expected),
        )

    async def malformed(self, reason: str, sample: str) -> None:
        self._rejected.inc()
        self._malformed_total += 1
        self._malformed_unreported += 1
        now = self._clock()
        due = self._malformed_reported_at is None or now - self._malformed_reported_at >= self._malformed_every_s
        if self._malformed_total <= _LOGGED_FREELY or due:
            _log.warning(
                "feed_malformed",
                adapter=self.adapter,
                reason=reason,
                sample=truncated(sample),
                total=self._malformed_total,
            )
        if due:
            count, self._malformed_unreported, self._malformed_reported_at = self._malformed_unreported, 0, now
            await self._emit(
                EventType.FEED_MALFORMED,
                f"{self.adapter}: {count} malformed input(s), latest: {reason}",
                Severity.WARNING,
                reason=reason,
                sample=truncated(sample),
                count=count,
                total=self._malformed_total,
            )

    def ticks_in(self, count: int) -> None:
        """``count`` normalised ticks came out of the adapter."""
        self._ticks_in.inc(count)

    def published(self, count: int) -> None:
        """``count`` of them were acknowledged by Kafka."""
        self._published.inc(count)

    def closed(self) -> None:
        """The run ended: the adapter is no longer connected."""
        self._connected.set(0)
