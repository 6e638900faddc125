"""``run_feed``: drive one ``FeedAdapter`` through the publisher to Kafka.

The one path every adapter takes (``nexanest feed run``, tests, benchmarks):
start the adapter with a ``FeedMonitor`` as its observer, publish its batches
with ``TickPublisher`` (keyed by symbol, idempotent, blocking the adapter while
Kafka is slow), count ticks in and acknowledged, tell an ``Acknowledging``
adapter what Kafka holds, and report ``started``/``stopped``/``error`` as
``system_events`` (component ``producer.feed``). A live feed publishes to
``kafka.ticks_topic``; a backfill (``is_backfill``) to ``kafka.backfill_topic``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from nexanest.pipeline.events import EventEmitter, open_event_emitter
from nexanest.pipeline.kafka import ensure_topics, make_producer, start_client
from nexanest.pipeline.settings import Settings
from nexanest.producers.feeds.adapter import FeedAdapter, is_backfill
from nexanest.producers.observer import COMPONENT, FeedMonitor
from nexanest.producers.publisher import TickPublisher
from nexanest.schemas.events import EventType, Severity
from nexanest.schemas.ticks import Tick


def topic_of(settings: Settings, adapter: FeedAdapter) -> str:
    """Where ``adapter``'s ticks go: the backfill topic for history, else the ticks topic."""
    return settings.kafka.backfill_topic if is_backfill(adapter) else settings.kafka.ticks_topic


async def run_feed(
    settings: Settings,
    adapter: FeedAdapter,
    stop: asyncio.Event,
    *,
    topic: str | None = None,
    emit_events: bool = True,
) -> int:
    """Run ``adapter`` until it ends or ``stop`` is set; return the ticks Kafka acknowledged.

    On ``stop`` the adapter is asked to stop, the batches in flight are
    acknowledged (and reported to the adapter) before the producer closes."""
    topic = topic or topic_of(settings, adapter)
    await ensure_topics(settings.kafka)
    producer = make_producer(settings.kafka)
    await start_client(producer, settings.kafka)
    events: EventEmitter | None = await open_event_emitter(settings, COMPONENT, producer) if emit_events else None
    monitor = FeedMonitor(adapter.name, events)
    publisher = TickPublisher(producer, topic, adapter.name, new_producer=lambda: make_producer(settings.kafka))
    tell: Callable[[Sequence[Tick]], Awaitable[None]] | None = getattr(adapter, "acknowledged", None)

    async def counted() -> AsyncIterator[Sequence[Tick]]:
        async for batch in adapter.ticks():
            monitor.ticks_in(len(batch))
            yield batch

    async def acknowledged(batch: Sequence[Tick]) -> None:
        monitor.published(len(batch))
        if tell is not None:
            await tell(batch)

    async def stop_adapter() -> None:
        await stop.wait()
        await adapter.stop()

    stopper = asyncio.create_task(stop_adapter())
    started = time.monotonic()
    try:
        if events is not None:
            await events.emit(
                EventType.STARTED, f"feed {adapter.name} publishing to {topic}", adapter=adapter.name, topic=topic
            )
        try:
            await adapter.start(monitor)
            published = await publisher.publish_all(counted(), stop, acknowledged=acknowledged)
        except Exception as exc:
            if events is not None:
                await events.emit(
                    EventType.ERROR,
                    f"feed {adapter.name} failed: {exc!r}",
                    Severity.ERROR,
                    adapter=adapter.name,
                    topic=topic,
                    published=publisher.published,
                )
            raise
        elapsed = time.monotonic() - started
        if events is not None:
            await events.emit(
                EventType.STOPPED,
                f"feed {adapter.name} published {published} ticks in {elapsed:.1f}s",
                adapter=adapter.name,
                topic=topic,
                published=published,
                elapsed_s=round(elapsed, 3),
            )
        return published
    finally:
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopper
        await adapter.stop()
        monitor.closed()
        if events is not None:
            await events.close()
        await producer.stop()
