"""``TickPublisher``: ticks from any feed adapter onto the ``ticks`` topic.

Keyed by symbol, so each symbol's ticks stay in order on one partition (the
partition is Kafka's default murmur2 of the key, as every other client computes
it, worked out once per symbol). Sends are batched: the ticks of a batch are
encoded straight into one record batch per partition and handed to the
producer's accumulator whole, then the publisher waits for all
acknowledgements at once. That is no per-tick round trip and no per-tick
``send`` (its future, partitioner call and accumulator lookup cost more than
the tick's encoding). With the idempotent producer a retried batch is never
duplicated in Kafka.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from nexanest.pipeline import metrics
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.settings import KafkaSettings
from nexanest.pipeline.types import FeedAdapter
from nexanest.schemas.ticks import Tick, encode_tick

_log = get_logger(__name__)


#: A batch handed to the accumulator: how many ticks it holds, and its delivery.
Queued = list[tuple[int, "asyncio.Future[object]"]]


class TickPublisher:
    def __init__(self, producer: AIOKafkaProducer, topic: str, source: str, *, queue_timeout_s: float = 300.0) -> None:
        self._producer = producer
        self._queue_timeout_s = queue_timeout_s
        self._topic = topic
        self._produced = metrics.TICKS_PRODUCED.labels(source)
        self._errors = metrics.PRODUCE_ERRORS.labels(source)
        self._partitioner = DefaultPartitioner()
        self._partition_count = 0
        self._partition_of: dict[str, int] = {}
        self.published = 0

    async def publish(self, ticks: Sequence[Tick]) -> None:
        """Send a batch and wait until Kafka acknowledged every tick of it.

        Raises ``KafkaError`` if any tick could not be delivered after the
        producer's own retries; the caller decides whether to retry the batch
        (safe: the feed's ``source``/``seq`` identify the ticks).
        """
        await self._acknowledged(await self._enqueue(ticks))

    async def _enqueue(self, ticks: Sequence[Tick]) -> Queued:
        """Encode a batch into one record batch per partition and hand those to
        the producer's accumulator; return them with their delivery futures."""
        producer = self._producer
        partition_of = await self._partitions()
        builders: dict[int, BatchBuilder] = {}
        queued: Queued = []
        for tick in ticks:
            symbol = tick.symbol
            partition = partition_of.get(symbol)
            if partition is None:
                partition = partition_of[symbol] = self._partition_for(symbol)
            builder = builders.get(partition)
            if builder is None:
                builder = builders[partition] = producer.create_batch()
            key, value = symbol.encode(), encode_tick(tick)
            if builder.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
                queued.append((builder.record_count(), await self._submit(builder, partition)))
                builder = builders[partition] = producer.create_batch()
                if builder.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a tick of {symbol} does not fit in an empty batch (max_batch_bytes)")
        for partition, builder in builders.items():
            builder.close()  # nothing else may be added by the accumulator
            queued.append((builder.record_count(), await self._submit(builder, partition)))
        return queued

    async def _submit(self, builder: BatchBuilder, partition: int) -> asyncio.Future[object]:
        """Hand a record batch to the accumulator, waiting while the broker is away.

        The accumulator holds one batch per partition until it drains, and gives
        up on the next one after the request timeout (sooner when several wait,
        as it counts elapsed time twice): a broker restart would then fail the
        feed. The batch is intact after that refusal, so it is offered again,
        until ``queue_timeout_s``: publishing blocks (backpressure on the feed,
        bounded memory) instead of dropping or failing while Kafka comes back.
        """
        deadline = time.monotonic() + self._queue_timeout_s
        while True:
            try:
                future: asyncio.Future[object] = await self._producer.send_batch(
                    builder, self._topic, partition=partition
                )
            except KafkaTimeoutError:
                if time.monotonic() >= deadline:
                    raise
                _log.warning("publish_waiting_for_broker", topic=self._topic, partition=partition)
            else:
                return future

    async def _partitions(self) -> dict[str, int]:
        """The symbol -> partition cache, reset when the topic's partition count changes."""
        count = len(await self._producer.partitions_for(self._topic))
        if count != self._partition_count:
            self._partition_count, self._partition_of = count, {}
        return self._partition_of

    def _partition_for(self, symbol: str) -> int:
        partitions = list(range(self._partition_count))
        return int(self._partitioner(symbol.encode(), partitions, partitions))

    async def _acknowledged(self, queued: Queued) -> None:
        results = await asyncio.gather(*(future for _, future in queued), return_exceptions=True)
        delivered = sum(n for (n, _), r in zip(queued, results, strict=True) if not isinstance(r, BaseException))
        failed = [r for r in results if isinstance(r, BaseException)]
        total = sum(n for n, _ in queued)
        self._produced.inc(delivered)
        self.published += delivered
        if failed:
            self._errors.inc(total - delivered)
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
        pending: deque[Queued] = deque()
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
