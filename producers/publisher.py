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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    KafkaTimeoutError,
    OutOfOrderSequenceNumber,
    UnknownProducerId,
)
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from nexanest.pipeline import metrics
from nexanest.pipeline.kafka import ensure_topics, make_producer, start_client
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.settings import KafkaSettings
from nexanest.producers.feeds.adapter import TickSource
from nexanest.schemas.ticks import HEADER_RESENT, Tick, encode_tick

_log = get_logger(__name__)


#: What the broker answers when an idempotent producer's sequence has a gap it
#: cannot close: a batch expired during a broker restart, so the next ones are
#: out of order for good. Only a new producer (a new producer id) gets past it.
IDEMPOTENCE_LOST = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch)


@dataclass
class Queued:
    """Record batches handed to one producer's accumulator: the ticks of each, and its delivery."""

    generation: int  # which producer took them (``TickPublisher`` counts the producers it used)
    batches: list[tuple[list[Tick], asyncio.Future[object]]]


class TickPublisher:
    """Publishes batches of ticks through ``producer``.

    ``new_producer``, when given, makes a replacement when the broker answers
    that the idempotent sequence is lost (``IDEMPOTENCE_LOST``, after a broker
    restart longer than a batch's expiry); the failed ticks then go again
    through the new one. The publisher stops the producers it made when
    ``publish_all`` ends; ``producer`` stays the caller's to stop.
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        source: str,
        *,
        queue_timeout_s: float = 300.0,
        new_producer: Callable[[], AIOKafkaProducer] | None = None,
    ) -> None:
        self._producer = producer
        self._new_producer = new_producer
        self._generation = 0
        self._made: list[AIOKafkaProducer] = []
        self._queue_timeout_s = queue_timeout_s
        self._topic = topic
        #: The feed's source tag (not a metric label: a new one each run would grow without bound).
        self.source = source
        self._produced = metrics.TICKS_PRODUCED.labels(topic)
        self._errors = metrics.PRODUCE_ERRORS.labels(topic)
        self._partitioner = DefaultPartitioner()
        self._partition_count = 0
        self._partition_of: dict[str, int] = {}
        self.published = 0

    async def publish(self, ticks: Sequence[Tick]) -> None:
        """Send a batch and wait until Kafka acknowledged every tick of it.

        A record batch whose delivery failed with a retriable error (the broker
        restarting: no leader, request timed out) is encoded and sent again,
        until ``queue_timeout_s``. Raises ``KafkaError`` for any other failure,
        or when the broker stays away longer; the caller may retry the batch
        (safe: the feed's ``source``/``seq`` identify the ticks).
        """
        await self._acknowledged(await self._enqueue(ticks))

    async def _enqueue(self, ticks: Sequence[Tick], *, resent: bool = False) -> Queued:
        """Encode a batch into one record batch per partition and hand those to
        the producer's accumulator; return them with their delivery futures.

        ``resent``: the ticks were handed over before and their delivery failed.
        Some may have landed all the same, and later ticks of their partitions
        may have landed before them, so their ``seq`` can be below what the
        partition already holds: each record carries ``HEADER_RESENT``, and the
        consumer looks such a tick up instead of judging it by the partition's
        high-water mark (which would drop it, although it may be missing)."""
        headers = [(HEADER_RESENT, b"1")] if resent else []
        producer = self._producer
        partition_of = await self._partitions()
        builders: dict[int, BatchBuilder] = {}
        members: dict[int, list[Tick]] = {}  # the ticks of each builder, to send again if it fails
        queued = Queued(self._generation, [])
        for tick in ticks:
            symbol = tick.symbol
            partition = partition_of.get(symbol)
            if partition is None:
                partition = partition_of[symbol] = self._partition_for(symbol)
            builder = builders.get(partition)
            if builder is None:
                builder = builders[partition] = producer.create_batch()
                members[partition] = []
            key, value = symbol.encode(), encode_tick(tick)
            if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:  # full: send it
                queued.batches.append((members[partition], await self._submit(builder, partition)))
                builder = builders[partition] = producer.create_batch()
                members[partition] = []
                if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    raise ValueError(f"a tick of {symbol} does not fit in an empty batch (max_batch_bytes)")
            members[partition].append(tick)
        for partition, builder in builders.items():
            builder.close()  # nothing else may be added by the accumulator
            queued.batches.append((members[partition], await self._submit(builder, partition)))
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
        """Wait for the deliveries of ``queued``. The producer retries a failed
        request only until its batch expires (``request_timeout_ms``); a broker
        restart can take longer, so a batch that failed with a retriable error is
        sent again (its ticks re-encoded) until ``queue_timeout_s``. Re-sent
        ticks may follow later ones on their partition: nothing downstream
        depends on arrival order (bars and quotes go by tick time and ``seq``),
        and the re-sent records carry ``HEADER_RESENT``: the consumer stores such a
        tick only if the table does not hold it (see ``_enqueue``)."""
        deadline = time.monotonic() + self._queue_timeout_s
        while True:
            results = await asyncio.gather(*(future for _, future in queued.batches), return_exceptions=True)
            failed: list[tuple[list[Tick], BaseException]] = []
            delivered = 0
            for (ticks, _), result in zip(queued.batches, results, strict=True):
                if isinstance(result, BaseException):
                    failed.append((ticks, result))
                else:
                    delivered += len(ticks)
            self._produced.inc(delivered)
            self.published += delivered
            if not failed:
                return
            first = failed[0][1]
            lost = any(isinstance(error, IDEMPOTENCE_LOST) for _, error in failed)
            if lost and self._new_producer is not None and queued.generation == self._generation:
                await self._renew_producer(first)
            retriable = all(self._can_send_again(error) for _, error in failed)
            again = [tick for ticks, _ in failed for tick in ticks]
            if not retriable or time.monotonic() >= deadline:
                self._errors.inc(len(again))
                raise first if isinstance(first, KafkaError) else KafkaError(repr(first))
            _log.warning("publish_sending_again", topic=self._topic, ticks=len(again), error=repr(first))
            queued = await self._enqueue(again, resent=True)

    def _can_send_again(self, error: BaseException) -> bool:
        if not isinstance(error, KafkaError):
            return False
        return bool(error.retriable) or (self._new_producer is not None and isinstance(error, IDEMPOTENCE_LOST))

    async def _renew_producer(self, error: BaseException) -> None:
        assert self._new_producer is not None  # noqa: S101 - only called when it is
        fresh = self._new_producer()
        await fresh.start()
        self._made.append(fresh)
        self._producer, self._generation = fresh, self._generation + 1
        _log.warning("publish_new_producer", topic=self._topic, error=repr(error))

    async def _stop_made(self) -> None:
        """Stop the producers this publisher made (each bounded: one that lost its
        broker must not hold up the end of the feed)."""
        for producer in self._made:
            try:
                await asyncio.wait_for(producer.stop(), 30)
            except Exception as exc:  # noqa: BLE001 - a retired producer may fail to stop; nothing is lost
                _log.warning("publish_producer_stop_failed", topic=self._topic, error=repr(exc))
        self._made.clear()

    async def publish_all(
        self,
        batches: AsyncIterator[Sequence[Tick]],
        stop: asyncio.Event | None = None,
        *,
        in_flight: int = 8,
        acknowledged: Callable[[Sequence[Tick]], Awaitable[None]] | None = None,
    ) -> int:
        """Publish every batch the feed yields, until it ends or ``stop`` is set.

        Up to ``in_flight`` batches await their acknowledgements while the next
        ones are sent, so a paced feed is not slowed by the broker's round trip;
        a delivery failure still surfaces (as ``KafkaError``) within a few batches.
        Memory stays bounded by those batches: the feed's iterator is not
        advanced while they wait (backpressure when Kafka is slow).
        ``acknowledged``, when given, is awaited with each batch once Kafka
        acknowledged all of it, in the order the feed yielded them (a file
        replay's checkpoint moves there, never before).
        """
        pending: deque[tuple[Queued, Sequence[Tick]]] = deque()

        async def settle() -> None:
            queued, batch = pending.popleft()
            await self._acknowledged(queued)
            if acknowledged is not None:
                await acknowledged(batch)

        try:
            async for batch in batches:
                pending.append((await self._enqueue(batch), batch))
                if len(pending) > in_flight:
                    await settle()
                if stop is not None and stop.is_set():
                    break
            while pending:
                await settle()
        finally:
            try:
                await self._producer.flush()
            finally:
                await self._stop_made()
        return self.published


async def publish_feed(settings: KafkaSettings, feed: TickSource, source: str) -> int:
    """Publish everything ``feed`` yields to the ticks topic (created if missing)
    with a producer of its own; return the number of acknowledged ticks."""
    await ensure_topics(settings)
    producer = make_producer(settings)
    await start_client(producer, settings)
    try:
        publisher = TickPublisher(producer, settings.ticks_topic, source, new_producer=lambda: make_producer(settings))
        return await publisher.publish_all(feed.ticks())
    finally:
        await producer.stop()
