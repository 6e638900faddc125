"""The consumer loop: fetch a batch, validate, write every sink, then commit.

The loop owns the offsets; the sinks own the data. Per batch, in this order:

1. ``getmany`` up to ``batch.max_rows`` records;
2. decode and validate each (bad ones become ``Rejected`` rows, never raise);
3. flush the dead-letter sink (rejected records are safe in Kafka),
   then TimescaleDB (rows and offsets in one transaction), then Redis quotes;
4. commit the offsets to Kafka (for lag tooling; TimescaleDB's copy is the one
   the consumer resumes from).

A retryable failure retries the same flush with jittered exponential backoff;
no new records are fetched meanwhile, so memory stays bounded by one batch.
Because the loop flushes and commits before it fetches again, a rebalance
(which aiokafka runs inside ``getmany``) never finds uncommitted work.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from nexanest.pipeline import metrics
from nexanest.pipeline.errors import RetryableError
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.settings import BatchSettings, RetrySettings
from nexanest.pipeline.sinks.dead_letter import DeadLetterSink, Rejected
from nexanest.pipeline.sinks.redis_quotes import RedisQuoteSink
from nexanest.pipeline.sinks.timescale import StockPriceRow, TimescaleSink, stock_price_row
from nexanest.pipeline.validation import TickValidator
from nexanest.schemas.ticks import Tick

_log = get_logger(__name__)


class Flushable(Protocol):
    name: str

    async def flush(self) -> int: ...


@dataclass
class IngestStats:
    batches: int = 0
    consumed: int = 0
    written: int = 0
    rejected: int = 0
    retries: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    #: Monotonic times of the first fetch that returned records and of the end of the last batch.
    first_batch_at: float | None = None
    last_batch_at: float | None = None


class ResumeFromDatabase(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, seek each partition to the offset TimescaleDB stored with
    the last batch it committed; Kafka's committed offset is only a fallback."""

    def __init__(self, consumer: AIOKafkaConsumer, sink: TimescaleSink, topic: str) -> None:
        self._consumer = consumer
        self._sink = sink
        self._topic = topic

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Nothing to do: the loop commits every batch before it fetches again."""

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        stored = await self._sink.stored_offsets(self._topic)
        for tp in assigned:
            if tp.topic == self._topic and tp.partition in stored:
                self._consumer.seek(tp, stored[tp.partition])
        _log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned), from_db=len(stored))


class IngestLoop:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        *,
        validator: TickValidator,
        timescale: TimescaleSink,
        quotes: RedisQuoteSink,
        dead_letters: DeadLetterSink,
        batch: BatchSettings,
        retry: RetrySettings,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._consumer = consumer
        self._validator = validator
        self._timescale = timescale
        self._quotes = quotes
        self._dead_letters = dead_letters
        self._batch = batch
        self._retry = retry
        self._clock_ns = clock_ns
        self.stats = IngestStats()

    async def run(self, stop: asyncio.Event, *, until_idle_s: float | None = None) -> IngestStats:
        """Consume until ``stop`` is set (or nothing arrives for ``until_idle_s``).

        Returns after the batch in hand is flushed and committed.
        """
        idle_since = time.monotonic()
        while not stop.is_set():
            records = await self._consumer.getmany(timeout_ms=self._batch.max_wait_ms, max_records=self._batch.max_rows)
            if not records:
                if until_idle_s is not None and time.monotonic() - idle_since >= until_idle_s:
                    break
                continue
            if self.stats.first_batch_at is None:
                self.stats.first_batch_at = time.monotonic()
            await self._ingest(records)
            idle_since = self.stats.last_batch_at = time.monotonic()
        return self.stats

    async def _ingest(self, records: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        rows: list[StockPriceRow] = []
        ticks: list[Tick] = []
        rejected: list[Rejected] = []
        next_offsets: dict[TopicPartition, int] = {}
        now_ns = self._clock_ns()
        check = self._validator.check
        count = 0
        for tp, messages in records.items():
            partition = tp.partition
            for msg in messages:
                result = check(msg.value, now_ns)
                if isinstance(result, Tick):
                    rows.append(stock_price_row(result, partition, msg.offset))
                    ticks.append(result)
                else:
                    rejected.append(Rejected(tp.topic, partition, msg.offset, msg.key, msg.value, result[0], result[1]))
            count += len(messages)
            next_offsets[tp] = messages[-1].offset + 1

        self._dead_letters.write(rejected)
        self._timescale.write(rows)
        self._timescale.advance({(tp.topic, tp.partition): off for tp, off in next_offsets.items()})
        self._quotes.write(ticks)

        for sink in (self._dead_letters, self._timescale, self._quotes):
            await self._flush_with_retry(sink)
        await self._commit(next_offsets)

        stats = self.stats
        stats.batches += 1
        stats.consumed += count
        stats.written += len(rows)
        stats.rejected += len(rejected)
        for r in rejected:
            stats.rejected_by_reason[r.reason] = stats.rejected_by_reason.get(r.reason, 0) + 1
        metrics.BATCH_SIZE.observe(count)
        for tp in next_offsets:
            metrics.TICKS_CONSUMED.labels(tp.topic).inc(len(records[tp]))
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                lag = highwater - next_offsets[tp]
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, lag))
        _log.debug("batch_ingested", rows=len(rows), rejected=len(rejected), partitions=len(next_offsets))

    async def _flush_with_retry(self, sink: Flushable) -> None:
        """Retry a retryable failure until it succeeds. A first stop request does
        not abandon the batch (the data in hand is written before the loop
        exits); a second one ends the process from the signal handler."""
        backoff = self._retry.initial_backoff_s
        while True:
            try:
                await sink.flush()
            except RetryableError as exc:
                self.stats.retries += 1
                metrics.RETRIES.labels(exc.service).inc()
                delay = random.uniform(backoff / 2, backoff)  # noqa: S311 - jitter, not crypto
                _log.warning("flush_retry", sink=sink.name, error=str(exc), retry_in_s=round(delay, 3))
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, self._retry.max_backoff_s)
            else:
                return

    async def _commit(self, next_offsets: dict[TopicPartition, int]) -> None:
        """Commit to Kafka; failure here is harmless for correctness (the database
        holds the offsets), so it is retried a few times and then left to the next batch."""
        offsets = {tp: OffsetAndMetadata(off, "") for tp, off in next_offsets.items()}
        for attempt in range(3):
            try:
                await self._consumer.commit(offsets)
            except KafkaError as exc:
                _log.warning("kafka_commit_failed", error=repr(exc), attempt=attempt + 1)
                await asyncio.sleep(self._retry.initial_backoff_s)
            else:
                return
