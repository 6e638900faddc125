"""The consumer loop: fetch a batch, validate, write every sink, then commit.

The loop owns the offsets; the sinks own the data. Per batch, in this order:

1. ``getmany`` up to ``batch.max_rows`` records;
2. decode and validate each (bad ones become ``Rejected`` rows, never raise);
3. flush the dead-letter sink (rejected records are safe in Kafka before their
   offsets can move);
4. one TimescaleDB transaction: update the Redis quotes, COPY the rows (and
   merge their OHLCV bars), move this consumer's offsets (checked against its
   partition claims), COMMIT;
5. flush the ``after_commit`` sinks (derived data such as market indices), each
   with the same retry: they run only once the ticks are durable and never
   roll them back; a fenced batch is discarded from them too;
6. commit the offsets to Kafka too (for lag tooling; the consumer resumes from
   TimescaleDB's copy), and hand the batch's dead-letter count and lag to the
   optional ``BatchMonitor`` (``dlq_burst`` and ``lag_high`` system events).

Exactly once: a crash before step 4 commits leaves neither rows nor offsets, so
the batch is read again; a crash after it finds the offsets stored with the
rows, so it is not. Redis is updated first inside the transaction, so a fresh
quote waits for no database work: a quote can run ahead of the table by one
uncommitted batch (which Kafka holds and will replay) but never behind it, and
re-applying a tick is a no-op.

A retryable failure retries the batch with jittered exponential backoff; no new
records are fetched meanwhile, so memory stays bounded by one batch. Because
the loop commits before it fetches again, a rebalance (which aiokafka runs
inside ``getmany``) never finds uncommitted work. A batch fenced out of a
partition (another consumer claimed it) is discarded and every partition in it
re-read from where the batch started (see ``_on_fenced``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from nexanest.pipeline import metrics
from nexanest.pipeline.errors import FencedError, RetryableError
from nexanest.pipeline.events import BatchMonitor
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.settings import BatchSettings, RetrySettings
from nexanest.pipeline.sinks.dead_letter import DeadLetterSink, Rejected
from nexanest.pipeline.sinks.redis_quotes import RedisQuoteSink
from nexanest.pipeline.sinks.timescale import TickEntry, TimescaleSink
from nexanest.pipeline.types import AfterCommitSink
from nexanest.pipeline.validation import TickValidator
from nexanest.schemas.ticks import Tick

_log = get_logger(__name__)


@dataclass
class IngestStats:
    batches: int = 0
    consumed: int = 0
    written: int = 0
    rejected: int = 0
    retries: int = 0
    fenced: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    #: Monotonic times of the first fetch that returned records and of the end of the last batch.
    first_batch_at: float | None = None
    last_batch_at: float | None = None


class ResumeFromDatabase(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, claim each partition in TimescaleDB (fencing its previous
    owner) and seek to the offset stored with the last batch committed for it;
    Kafka's committed offset is only the fallback for a never-written partition."""

    def __init__(
        self, consumer: AIOKafkaConsumer, sink: TimescaleSink, topic: str, retry: RetrySettings | None = None
    ) -> None:
        self._consumer = consumer
        self._sink = sink
        self._topic = topic
        self._retry = retry or RetrySettings()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """The loop commits every batch before it fetches again; only forget the claims."""
        self._sink.release([(tp.topic, tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        mine = sorted(tp.partition for tp in assigned if tp.topic == self._topic)
        resumed = await self.claim_and_seek(mine)
        _log.info("partitions_assigned", partitions=mine, resumed_from_db=resumed)

    async def claim_and_seek(self, partitions: list[int], *, fallback_offsets: dict[int, int] | None = None) -> int:
        """Claim ``partitions`` (retrying while the database is away) and seek each
        to its stored offset; a partition never written goes to its entry in
        ``fallback_offsets``, if any (else where Kafka's fetch position is).
        Returns how many partitions resumed from a stored offset."""
        backoff = self._retry.initial_backoff_s
        while True:
            try:
                stored = await self._sink.claim(self._topic, partitions)
                break
            except RetryableError as exc:
                _log.warning("claim_retry", error=str(exc), retry_in_s=round(backoff, 3))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._retry.max_backoff_s)
        resumed = 0
        assigned = self._consumer.assignment()
        for partition, next_offset in stored.items():
            tp = TopicPartition(self._topic, partition)
            if tp not in assigned:
                continue  # a newer rebalance took it meanwhile; its own assignment will seek
            try:
                if next_offset is not None:
                    self._consumer.seek(tp, next_offset)
                    resumed += 1
                elif fallback_offsets and partition in fallback_offsets:
                    self._consumer.seek(tp, fallback_offsets[partition])
            except (AssertionError, IllegalStateError) as exc:
                # aiokafka asserts when the assignment changes under a seek.
                _log.warning("seek_skipped", partition=partition, error=repr(exc))
        return resumed


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
        listener: ResumeFromDatabase | None = None,
        after_commit: Sequence[AfterCommitSink[Tick]] = (),
        monitor: BatchMonitor | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._consumer = consumer
        self._listener = listener
        self._validator = validator
        self._timescale = timescale
        self._quotes = quotes
        self._dead_letters = dead_letters
        self._after_commit = list(after_commit)
        self._monitor = monitor
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
        rows: list[TickEntry] = []
        ticks: list[Tick] = []
        rejected: list[Rejected] = []
        next_offsets: dict[TopicPartition, int] = {}
        first_offsets: dict[TopicPartition, int] = {}
        now_ns = self._clock_ns()
        check = self._validator.check
        count = 0
        for tp, messages in records.items():
            partition = tp.partition
            if self._timescale.exactly_once and self._timescale.generation((tp.topic, partition)) is None:
                # aiokafka may fetch a newly assigned partition before our listener
                # has claimed it: leave these records for after the claim.
                self._seek_if_assigned(tp, messages[0].offset)
                continue
            first_offsets[tp] = messages[0].offset
            for msg in messages:
                result = check(msg.value, now_ns)
                if isinstance(result, Tick):
                    rows.append((result, partition, msg.offset))
                    ticks.append(result)
                else:
                    rejected.append(Rejected(tp.topic, partition, msg.offset, msg.key, msg.value, result[0], result[1]))
            count += len(messages)
            next_offsets[tp] = messages[-1].offset + 1
        if not next_offsets:
            return

        self._dead_letters.write(rejected)
        self._timescale.write(rows)
        self._timescale.advance({(tp.topic, tp.partition): off for tp, off in next_offsets.items()})
        self._quotes.write(ticks)
        for sink in self._after_commit:
            sink.write(ticks)

        await self._retrying("kafka", self._dead_letters.flush)
        try:
            await self._retrying("timescaledb", self._write_batch)
        except FencedError as exc:
            await self._on_fenced(exc, first_offsets)
            return
        for sink in self._after_commit:
            await self._retrying(sink.name, sink.flush)
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
        # The group may have rebalanced while the batch was written: lag is
        # taken once, over what is assigned now, for the gauge and the monitor.
        assigned = self._consumer.assignment()
        lags = await self._assigned_lags(assigned)
        for (topic, partition), lag in lags.items():
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(lag)
        if self._monitor is not None:  # dlq_burst / lag_high events
            reasons: dict[str, int] = {}
            for r in rejected:
                reasons[r.reason] = reasons.get(r.reason, 0) + 1
            await self._monitor.after_batch(
                rejected_by_reason=reasons,
                lags=lags,
                assigned={(tp.topic, tp.partition) for tp in assigned},
            )
        _log.debug("batch_ingested", rows=len(rows), rejected=len(rejected), partitions=len(next_offsets))

    async def _assigned_lags(self, assigned: set[TopicPartition]) -> dict[tuple[str, int], int]:
        """Lag of every assigned partition that has been fetched from, not only of
        those in this batch (a partition drained early must not hide one not yet
        read). A fetched partition has a valid position, so ``position`` does not
        wait; the timeout only guards the rare reset of an out-of-range offset.
        A rebalance can run during those awaits: a partition it took away is
        skipped (aiokafka asserts on it), not an error."""
        lags: dict[tuple[str, int], int] = {}
        for tp in assigned:
            try:
                highwater = self._consumer.highwater(tp)
                if highwater is None:
                    continue
                position = await asyncio.wait_for(self._consumer.position(tp), 0.05)
            except (AssertionError, TimeoutError, IllegalStateError, KafkaError):
                continue
            lags[(tp.topic, tp.partition)] = max(0, highwater - position)
        return lags

    async def _write_batch(self) -> None:
        """Rows, offsets and quotes: Redis is written inside the database
        transaction, so a Redis failure commits nothing and the batch is retried."""
        await self._timescale.flush(in_transaction=self._quotes.flush)

    async def _on_fenced(self, exc: FencedError, first_offsets: dict[TopicPartition, int]) -> None:
        """A batch lost a claim and was rolled back whole: drop it, and make sure
        every record in it is read again by whoever owns its partition.

        Each partition of the batch that is still assigned to us goes back to
        where the batch started. A fenced partition whose claim our own
        listener renewed meanwhile is just re-read; one that another consumer
        claimed is claimed back if Kafka still assigns it to us (each write stays
        guarded, so the two can only waste work, never double it) and re-read
        from the stored offset; one no longer assigned is left to its new owner.
        """
        metrics.FENCED.inc()
        self.stats.fenced += 1
        self._timescale.discard()
        self._quotes.discard()
        for sink in self._after_commit:
            sink.discard()
        taken = {tp for tp in exc.partitions if self._timescale.generation(tp) == exc.generations.get(tp)}
        _log.warning("fenced", partitions=exc.partitions, taken_by_another=sorted(taken))
        for tp, first in first_offsets.items():
            if (tp.topic, tp.partition) not in taken:
                self._seek_if_assigned(tp, first)
        if not taken or self._listener is None:
            return
        assigned = self._consumer.assignment()
        still_ours = [p for t, p in taken if TopicPartition(t, p) in assigned]
        self._timescale.release([tp for tp in taken if tp[1] not in still_ours])
        if still_ours:
            fallback = {tp.partition: off for tp, off in first_offsets.items() if tp.partition in still_ours}
            await self._listener.claim_and_seek(still_ours, fallback_offsets=fallback)

    def _seek_if_assigned(self, tp: TopicPartition, offset: int) -> None:
        try:
            if tp in self._consumer.assignment():
                self._consumer.seek(tp, offset)
        except (AssertionError, IllegalStateError) as exc:  # assignment changed under the seek
            _log.warning("seek_skipped", partition=tp.partition, error=repr(exc))

    async def _retrying(self, service: str, step: Callable[[], Awaitable[object]]) -> None:
        """Retry a retryable failure until it succeeds. A first stop request does
        not abandon the batch (the data in hand is written before the loop
        exits); a second one ends the process from the signal handler."""
        backoff = self._retry.initial_backoff_s
        failures, failed_at = 0, 0.0
        while True:
            try:
                await step()
            except RetryableError as exc:
                self.stats.retries += 1
                metrics.RETRIES.labels(exc.service).inc()
                if failures == 0:
                    failed_at = time.monotonic()
                    if self._monitor is not None:  # one batch_failed event per outage, not per retry
                        await self._monitor.batch_failed(service, str(exc))
                failures += 1
                delay = random.uniform(backoff / 2, backoff)  # noqa: S311 - jitter, not crypto
                _log.warning("batch_retry", step=service, error=str(exc), retry_in_s=round(delay, 3))
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, self._retry.max_backoff_s)
            else:
                if failures and self._monitor is not None:
                    await self._monitor.batch_recovered(service, failures, time.monotonic() - failed_at)
                return

    async def _commit(self, next_offsets: dict[TopicPartition, int]) -> None:
        """Commit to Kafka; failure here is harmless for correctness (the database
        holds the offsets), so a transient error is retried a few times and then
        left to the next batch, and a partition the group moved meanwhile is skipped."""
        assigned = self._consumer.assignment()
        offsets = {tp: OffsetAndMetadata(off, "") for tp, off in next_offsets.items() if tp in assigned}
        for attempt in range(3):
            if not offsets:
                return
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                _log.info("kafka_commit_skipped", reason=repr(exc))  # rebalanced; the new owner commits
                return
            except KafkaError as exc:
                _log.warning("kafka_commit_failed", error=repr(exc), attempt=attempt + 1)
                await asyncio.sleep(self._retry.initial_backoff_s)
            else:
                return
