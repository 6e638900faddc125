"""The consumer loop: take records, publish quotes, write the batch, commit.

The loop owns the offsets; the sinks own the data. Two things run at once, so
that neither the quotes nor the fetch wait for the database:

* **Taking** (the loop itself, with ``take.Taker``): ``getmany`` up to the room
  left in the next batch; decode and validate each record (bad ones become ``Rejected`` rows,
  never raise); drop re-sent ticks (below); publish the latest quote of each
  symbol to Redis at once (one round trip); add the rest to the next batch.
* **Writing** (one task at a time, batch after batch, in order): flush the
  dead-letter sink (rejected records are safe in Kafka before their offsets can
  move); one TimescaleDB transaction: COPY the rows (and merge their OHLCV
  bars), move this consumer's offsets (checked against its partition claims),
  COMMIT (rows the database refuses although they passed validation are
  isolated by the sink, dead-lettered with reason ``rejected_by_database``
  and the server's message, and the rest is written: no record can stop the
  loop); flush the ``after_commit`` sinks (derived data such as market
  indices, only once the ticks are durable, never rolling them back); commit the
  offsets to Kafka too (``consumer_position``: for lag tooling; the consumer
  resumes from TimescaleDB's copy); hand the batch's dead-letter count and lag to the
  optional ``BatchMonitor`` (``dlq_burst`` and ``lag_high`` system events).

A write starts as soon as the one before it has finished, with everything taken
meanwhile: batches grow with the load (up to ``batch.max_rows``; the first
fetch takes at most ``batch.first_rows``, so that with a backlog the first rows
are stored moments after the start) and shrink when
it is light, so the table is as fresh as the database allows, and the decoding
of one batch overlaps the database's work on the one before. Memory stays
bounded by two batches: when the next batch is full and the write before it is
still running (a slow or stalled database, retries), the loop stops fetching.

Exactly once: a crash before a batch's transaction commits leaves neither its
rows nor its offsets, so it is read again; a crash after it finds the offsets
stored with the rows, so it is not. A quote is published before its tick is
written: it can run ahead of the table by the batches in hand (which Kafka
holds and will replay) but never behind it, and re-applying a tick is a no-op
(the quote script only moves a quote forward in tick time). A Redis outage
holds up taking (quotes are retried, the write in flight finishes); a database
outage holds up writing (the batch is retried with jittered exponential
backoff, and taking stops at the bound above).

Re-sent ticks are dropped while taking, by each source's high-water mark of
``seq`` per partition (``pipeline/take.py``), not by an index.

A batch fenced out of a partition (another consumer claimed it) is discarded,
with the batch taken behind it, and every partition in them is re-read from
where the fenced batch started (see ``_on_fenced``). aiokafka runs rebalances
concurrently with the loop; records of a partition not yet claimed are left to
be read again after the claim.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from nexanest.pipeline import metrics
from nexanest.pipeline.batch import Batch
from nexanest.pipeline.consumer_position import ConsumerPosition
from nexanest.pipeline.errors import FencedError, RejectedByDatabase, RetryableError
from nexanest.pipeline.kafka_records import RawRecord
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.retry import Backoff
from nexanest.pipeline.settings import BatchSettings, RetrySettings
from nexanest.pipeline.sinks.dead_letter import Rejected
from nexanest.pipeline.take import Taker
from nexanest.pipeline.types import AfterCommitSink, BatchObserver, BatchSink, ClaimedOffsets, PartitionClaimer, Sink
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
    #: Re-sent ticks dropped by their partition's high-water mark before COPY.
    duplicates: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    #: Monotonic times of the first fetch that returned records and of the end of the last batch.
    first_batch_at: float | None = None
    last_batch_at: float | None = None


class IngestLoop:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        *,
        validator: TickValidator,
        timescale: BatchSink,
        offsets: ClaimedOffsets | None,
        quotes: Sink[Tick],
        dead_letters: Sink[Rejected],
        batch: BatchSettings,
        retry: RetrySettings,
        listener: PartitionClaimer | None = None,
        after_commit: Sequence[AfterCommitSink[Tick]] = (),
        monitor: BatchObserver | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._consumer = consumer
        self._position = ConsumerPosition(consumer, retry)
        self._taker = Taker(validator, offsets)
        self._listener = listener
        self._timescale = timescale
        self._offsets = offsets
        self._quotes = quotes
        self._dead_letters = dead_letters
        self._after_commit = list(after_commit)
        self._monitor = monitor
        self._batch = batch
        self._retry = retry
        self._clock_ns = clock_ns
        self._next = Batch()
        self._writing: asyncio.Task[None] | None = None
        self._writing_batch = Batch()
        self.stats = IngestStats()

    async def run(self, stop: asyncio.Event, *, until_idle_s: float | None = None) -> IngestStats:
        """Consume until ``stop`` is set (or nothing arrives for ``until_idle_s``).

        Returns once everything taken is written and committed.
        """
        idle_since = time.monotonic()
        fetch: asyncio.Future[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]] | None = None
        try:
            while not stop.is_set():
                if self._writing is None and self._next.count:
                    self._start_write()
                room = self._batch.max_rows - self._next.count
                if room <= 0:  # the next batch is full: wait for the write before it
                    fenced = await self._settle_write()
                    if fenced is not None:
                        await self._on_fenced(*fenced)
                    continue
                if fetch is None:
                    if self.stats.first_batch_at is None:  # nothing taken yet: a small first batch
                        room = min(room, self._batch.first_rows)
                    fetch = asyncio.ensure_future(
                        self._consumer.getmany(timeout_ms=self._batch.max_wait_ms, max_records=room)
                    )
                waiting: set[asyncio.Future[Any]] = {fetch}
                if self._writing is not None:
                    waiting.add(self._writing)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if self._writing is not None and self._writing in done:
                    fenced = await self._settle_write()
                    if fenced is not None:
                        # Nothing fetched before the seeks below may be taken: its
                        # partitions go back to where it started too.
                        exc, first = fenced
                        await asyncio.wait([fetch])
                        if not fetch.cancelled() and fetch.exception() is None:
                            for tp, messages in fetch.result().items():
                                first.setdefault(tp, messages[0].offset)
                        fetch = None
                        await self._on_fenced(exc, first)
                        continue
                if fetch in done:
                    records, fetch = fetch.result(), None
                    if records:
                        if self.stats.first_batch_at is None:
                            self.stats.first_batch_at = time.monotonic()
                        await self._take(records)
                        idle_since = time.monotonic()
                    elif (
                        until_idle_s is not None
                        and self._writing is None
                        and not self._next.count
                        and time.monotonic() - max(idle_since, self.stats.last_batch_at or 0.0) >= until_idle_s
                    ):
                        break
        except BaseException:
            if self._writing is not None:
                self._writing.cancel()
            raise
        finally:
            if fetch is not None:
                # Records of a fetch in flight are not taken: never committed, read again.
                await asyncio.wait([fetch])
        # Stopping: write what was taken (its quotes are out already).
        while self._writing is not None or self._next.count:
            if self._writing is None:
                self._start_write()
            fenced = await self._settle_write()
            if fenced is not None:
                await self._on_fenced(*fenced)
        return self.stats

    async def _take(self, records: dict[TopicPartition, list[RawRecord]]) -> None:
        """Validate ``records`` into the next batch and publish their quotes."""
        taken = self._taker.take(self._next, records, self._clock_ns())
        for tp, offset in taken.unclaimed:  # read again after the claim
            self._position.seek_if_assigned(tp, offset)
        if taken.dropped:
            self.stats.duplicates += taken.dropped
            metrics.DUPLICATES_SKIPPED.inc(taken.dropped)
        if taken.fresh:
            self._quotes.write(taken.fresh)
            await self._retrying("redis", self._quotes.flush)

    def _start_write(self) -> None:
        batch, self._next = self._next, Batch()
        self._writing_batch = batch
        self._writing = asyncio.create_task(self._write(batch), name="ingest-write")

    async def _settle_write(self) -> tuple[FencedError, dict[TopicPartition, int]] | None:
        """Wait for the write in flight. If it was fenced, discard it and the batch
        taken behind it, and return the error with where each of their partitions
        must be read again from."""
        task, self._writing = self._writing, None
        if task is None:
            return None
        try:
            await task
        except FencedError as exc:
            behind, self._next = self._next, Batch()
            first = {**behind.first_offsets, **self._writing_batch.first_offsets}
            return exc, first
        return None

    async def _write(self, batch: Batch) -> None:
        """Write one batch to every sink in order, then commit it to Kafka."""
        self._dead_letters.write(batch.rejected)
        self._timescale.write(batch.rows)
        if batch.checked:
            self._timescale.write_checked(batch.checked)
        if self._offsets is not None:
            next_offsets = {(tp.topic, tp.partition): off for tp, off in batch.next_offsets.items()}
            self._offsets.advance(next_offsets, batch.marks, batch.generations)

        await self._retrying("kafka", self._dead_letters.flush)
        refused = await self._write_ticks(batch)  # FencedError: see _settle_write
        self._position.observe_stored(batch, self._clock_ns())
        ticks = batch.ticks
        if refused:
            gone = {(r.partition, r.offset) for r in refused}
            kept = (*batch.rows, *batch.checked)
            ticks = [tick for tick, partition, offset in kept if (partition, offset) not in gone]
            batch.rejected.extend(refused)
        for sink in self._after_commit:
            sink.write(ticks)
            await self._retrying(sink.name, sink.flush)
        await self._position.commit(batch.next_offsets)

        stats = self.stats
        stats.batches += 1
        stats.consumed += batch.count
        stats.written += len(batch.rows) + len(batch.checked) - len(refused)
        stats.rejected += len(batch.rejected)
        reasons: dict[str, int] = {}
        for r in batch.rejected:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
            stats.rejected_by_reason[r.reason] = stats.rejected_by_reason.get(r.reason, 0) + 1
        metrics.BATCH_SIZE.observe(batch.count)
        for tp, taken in batch.taken.items():
            metrics.TICKS_CONSUMED.labels(tp.topic).inc(taken)
        assigned, lags = await self._position.report_lags()
        if self._monitor is not None:  # dlq_burst / lag_high events
            await self._monitor.after_batch(
                rejected_by_reason=reasons,
                lags=lags,
                assigned={(tp.topic, tp.partition) for tp in assigned},
            )
        stats.last_batch_at = time.monotonic()
        _log.debug("batch_ingested", rows=len(batch.rows), rejected=len(batch.rejected), partitions=len(batch.taken))

    async def _write_ticks(self, batch: Batch) -> list[Rejected]:
        """The TimescaleDB transaction, retried while the database is away. Rows it
        refuses (values validation did not foresee) are dead-lettered, before the
        offsets move past them, and the rest is written: a bad record never stops
        the consumer. Returns the refused rows' dead letters."""
        refused: list[Rejected] = []
        while True:
            try:
                await self._retrying("timescaledb", self._timescale.flush)
            except RejectedByDatabase as exc:
                letters = batch.records(exc.refused)
                _log.warning("rows_refused_by_database", rows=len(letters), first=exc.refused[0][2])
                self._dead_letters.write(letters)
                await self._retrying("kafka", self._dead_letters.flush)
                refused += letters
                if self._offsets is not None and batch.marks:
                    self._offsets.replace_marks(batch.marks_without(refused))
            else:
                return refused

    async def _on_fenced(self, exc: FencedError, first_offsets: dict[TopicPartition, int]) -> None:
        """A batch lost a claim and was rolled back whole: drop it (and the batch
        taken behind it), and make sure every record in them is read again by
        whoever owns its partition; ``first_offsets`` is where each starts.

        Each partition of the batch that is still assigned to us goes back to
        where the batch started. A fenced partition whose claim our own
        listener renewed meanwhile is just re-read; one that another consumer
        claimed is claimed back if Kafka still assigns it to us (each write stays
        guarded, so the two can only waste work, never double it) and re-read
        from the stored offset; one no longer assigned is left to its new owner.
        """
        metrics.FENCED.inc()
        self.stats.fenced += 1
        self._timescale.discard()  # its rows, and the offsets they advanced to
        for tp in first_offsets:  # re-read from where the batch started: back to the committed marks
            self._taker.forget(tp)
        for sink in self._after_commit:
            sink.discard()
        offsets = self._offsets
        if offsets is None:  # only claims are fenced: without an offset store nothing is
            return
        taken = {tp for tp in exc.partitions if offsets.generation(tp) == exc.generations.get(tp)}
        _log.warning("fenced", partitions=exc.partitions, taken_by_another=sorted(taken))
        # Claimed again by our own listener since the batch was taken: another
        # consumer may have written (part of) it in between, so the database,
        # not the batch, says where to go on.
        renewed = {tp for tp in exc.partitions if tp not in taken}
        stored: dict[str, dict[int, int]] = {}
        for topic in sorted({t for t, _ in renewed}):
            stored[topic] = await self._stored_offsets(offsets, topic)
        for tp, first in first_offsets.items():
            if (tp.topic, tp.partition) not in taken:
                self._position.seek_if_assigned(tp, stored.get(tp.topic, {}).get(tp.partition, first))
        if not taken or self._listener is None:
            return
        assigned = self._consumer.assignment()
        still_ours = [p for t, p in taken if TopicPartition(t, p) in assigned]
        offsets.release([tp for tp in taken if tp[1] not in still_ours])
        if still_ours:
            fallback = {tp.partition: off for tp, off in first_offsets.items() if tp.partition in still_ours}
            await self._listener.claim_and_seek(still_ours, fallback_offsets=fallback)

    async def _stored_offsets(self, offsets: ClaimedOffsets, topic: str) -> dict[int, int]:
        """The offsets the database holds for ``topic``, retried while it is away."""
        backoff = Backoff(self._retry)
        while True:
            try:
                return await offsets.stored_offsets(topic)
            except RetryableError as exc:
                delay = backoff.next_delay()
                _log.warning("stored_offsets_retry", service=exc.service, error=str(exc), retry_in_s=round(delay, 3))
                await asyncio.sleep(delay)

    async def _retrying(self, step: str, write: Callable[[], Awaitable[object]]) -> None:
        """Retry a retryable failure until it succeeds. A first stop request does
        not abandon the batch (the data in hand is written before the loop
        exits); a second one ends the process from the signal handler.

        ``step`` names the sink; the log also names the service that is down
        (an after-commit sink such as ``market_indices`` writes to TimescaleDB):
        an operator, and a test watching for an outage, looks for the service."""
        backoff = Backoff(self._retry)
        failed_at = 0.0
        while True:
            try:
                await write()
            except RetryableError as exc:
                self.stats.retries += 1
                metrics.count_retry(exc.service)
                if backoff.attempts == 0:
                    failed_at = time.monotonic()
                    if self._monitor is not None:  # one batch_failed event per outage, not per retry
                        await self._monitor.batch_failed(step, str(exc))
                delay = backoff.next_delay()
                _log.warning("batch_retry", step=step, service=exc.service, error=str(exc), retry_in_s=round(delay, 3))
                await asyncio.sleep(delay)
            else:
                if backoff.attempts and self._monitor is not None:
                    await self._monitor.batch_recovered(step, backoff.attempts, time.monotonic() - failed_at)
                return
