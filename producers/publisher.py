"""``TickPublisher``: ticks from any feed adapter onto the ``ticks`` topic.

Keyed by symbol, so each symbol's ticks stay in order on one partition. Sends
are batched: a whole batch is handed to the producer's accumulator, then the
publisher waits for all acknowledgements at once (no per-tick round trip).
With the idempotent producer a retried send is never duplicated in Kafka.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from nexanest.pipeline import metrics
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.settings import KafkaSettings
from nexanest.pipeline.types import FeedAdapter
from nexanest.schemas.ticks import Tick, encode_tick

_log = get_logger(__name__)


class TickPublisher:
    def __init__(self, producer: AIOKafkaProducer, topic: str, source: str) -> None:
        self._producer = producer
        self._topic = topic
        self._produced = metrics.TICKS_PRODUCED.labels(source)
        self._errors = metrics.PRODUCE_ERRORS.labels(source)
        self.published = 0

    async def publish(self, ticks: Sequence[Tick]) -> None:
        """Send a batch and wait until Kafka acknowledged every tick of it.

        Raises ``KafkaError`` if any tick could not be delivered after the
        producer's own retries; the caller decides whether to retry the batch
        (safe: the feed's ``source``/``seq`` identify the ticks).
        """
        await self._acknowledged(await self._enqueue(ticks))

    async def _enqueue(self, ticks: Sequence[Tick]) -> tuple[int, list[asyncio.Future[object]]]:
        """Hand a batch to the producer's accumulator; return its delivery futures."""
        send = self._producer.send
        topic = self._topic
        return len(ticks), [await send(topic, encode_tick(t), key=t.symbol.encode()) for t in ticks]

    async def _acknowledged(self, queued: tuple[int, list[asyncio.Future[object]]]) -> None:
        count, futures = queued
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        self._produced.inc(count - len(failed))
        self.published += count - len(failed)
        if failed:
            self._errors.inc(len(failed))
            first = failed[0]
            raise first if isinstance(first, KafkaError) else KafkaError(repr(first))

    async def publish_all(
        self, batches: AsyncIterator[Sequence[Tick]], stop: asyncio.Event | None = None, *, in_flight: int = 8
    ) -> int:
        """Publish every batch the feed yields, until it ends or ``stop`` is set.

        Up to ``in_flight`` batches await their acknowledgements while the next
        ones are sent, so a paced feed is not slowed by the broker's round trip;
        a delivery failure still surfaces (as ``KafkaError``) within a few batches.
        """
        pending: deque[tuple[int, list[asyncio.Future[object]]]] = deque()
        try:
            async for batch in batches:
                pending.append(await self._enqueue(batch))
                if len(pending) > in_flight:
                    await self._acknowledged(pending.popleft())
                if stop is not None and stop.is_set():
                    break
            while pending:
                await self._acknowledged(pending.popleft())
        finally:
            await self._producer.flush()
        return self.published


async def publish_feed(settings: KafkaSettings, feed: FeedAdapter, source: str) -> int:
    """Publish everything ``feed`` yields to the ticks topic (created if missing)
    with a producer of its own; return the number of acknowledged ticks."""
    await ensure_topics(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        return await TickPublisher(producer, settings.ticks_topic, source).publish_all(feed.ticks())
    finally:
        await producer.stop()
