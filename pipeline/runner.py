"""The consumer loop: take records, publish quotes, write the batch, commit.

The loop owns the offsets; the sinks own the data. Two things run at once, so
that neither the quotes nor the fetch wait for the database:

* **Taking** (the loop itself): ``getmany`` up to the room left in the next
  batch; decode and validate each record (bad ones become ``Rejected`` rows,
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
  offsets to Kafka too (for lag tooling; the consumer resumes from
  TimescaleDB's copy); hand the batch's dead-letter count and lag to the
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

Re-sent ticks are dropped here, not by an index. A source's ``seq`` strictly
increases and a partition keeps publish order, so per (topic, partition,
source) the highest ``seq`` taken so far is a high-water mark: a valid tick at
or below it was sent before and is dropped (``nexanest_sink_duplicates_skipped_total``).
The marks start from those committed with the partition's offsets
(``OffsetStore.marks``, read when the partition is claimed), each batch stores
its own with its offsets, and a fenced batch's are forgotten with it (its
partitions start again from the committed ones). Records that re-send old seqs
on purpose carry a header (``LOOKUP_HEADERS``: a publisher's re-send after a
failed delivery, ``nexanest dlq replay``): they neither meet nor move the mark
and go to the sink's ``write_checked``, which looks each up in the table. Without
an offset store (``exactly_once`` off, benchmarks only) nothing is dropped.

A batch fenced out of a partition (another consumer claimed it) is discarded,
with the batch taken behind it, and every partition in them is re-read from
where the fenced batch started (see ``_on_fenced``). aiokafka runs rebalances
concurrently with the loop; records of a partition not yet claimed are left to
be read again after the claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from nexanest.pipeline import metrics
from nexanest.pipeline.errors import FencedError, RejectedByDatabase, RetryableError
from nexanest.pipeline.kafka_records import RawRecord
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.retry import Backoff
from nexanest.pipeline.settings import BatchSettings, RetrySettings
from nexanest.pipeline.sinks.dead_letter import Rejected
from nexanest.pipeline.types import (
    AfterCommitSink,
    BatchObserver,
    BatchSink,
    ClaimedOffsets,
    PartitionClaimer,
    Sink,
    TickEntry,
)
from nexanest.pipeline.validation import REJECTED_BY_DATABASE, TickValidator
from nexanest.schemas.ticks import LOOKUP_HEADERS, Tick

_log = get_logger(__name__)
_VALUE: Final = attrgetter("value")
_OFFSET: Final = attrgetter("offset")
_TS_NS: Final = attrgetter("ts_ns")


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


@dataclass
class _Batch:
    """Records taken from Kafka and validated, waiting for (or in) their write."""

    rows: list[TickEntry] = field(default_factory=list)
    #: Valid ticks with a ``LOOKUP_HEADERS`` header: stored unless the table has them.
    checked: list[TickEntry] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    #: Per partition: the first offset taken (where a discarded batch is re-read
    #: from), the offset after the last one, and how many records were taken.
    first_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    taken: dict[TopicPartition, int] = field(default_factory=dict)
    #: Per partition: the generation of the claim its first record here was taken
    #: under (a later re-claim by this consumer must not cover older records).
    generations: dict[tuple[str, int], int] = field(default_factory=dict)
    #: Per partition: the tick times (ns) of its oldest and newest valid tick in
    #: the batch, for the tick-to-row latency and the lag in seconds.
    oldest_ns: dict[TopicPartition, int] = field(default_factory=dict)
    newest_ns: dict[TopicPartition, int] = field(default_factory=dict)
    #: Per (topic, partition): the high-water mark of each source after the batch.
    marks: dict[tuple[str, int], dict[str, int]] = field(default_factory=dict)
    count: int = 0
    #: The fetches the batch was taken from, as aiokafka returned them (no copy):
    #: where a row the database refuses finds its record's bytes and headers.
    fetches: list[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]] = field(default_factory=list)

    def records(self, refused: list[tuple[int, int, str]]) -> list[Rejected]:
        """Dead letters of the rows the database refused, from their original records."""
        wanted = {(partition, offset): detail for partition, offset, detail in refused}
        letters = []
        for fetched in self.fetches:
            for tp, messages in fetched.items():
                for m in messages:
                    detail = wanted.pop((tp.partition, m.offset), None)
                    if detail is not None:
                        letter = (tp.topic, tp.partition, m.offset, m.key, m.value, REJECTED_BY_DATABASE, detail)
                        letters.append(Rejected(*letter, m.headers))
        return letters


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
        self._listener = listener
        self._validator = validator
        self._timescale = timescale
        self._offsets = offsets
        self._quotes = quotes
        self._dead_letters = dead_letters
        self._after_commit = list(after_commit)
        self._monitor = monitor
        self._batch = batch
        self._retry = retry
        self._clock_ns = clock_ns
        self._next = _Batch()
        self._writing: asyncio.Task[None] | None = None
        self._writing_batch = _Batch()
        #: (topic, partition) label sets this loop reports lag for.
        self._reported: set[tuple[str, str]] = set()
        #: Per (topic, partition): the claim generation and each source's highest seq taken.
        self._taken_marks: dict[tuple[str, int], tuple[int, dict[str, int]]] = {}
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
        """Validate ``records`` into the next batch and publish their quotes.

        Per partition, not per record: one ``check_many`` over the values, and
        the rows, offsets and tick times gathered by C-level ``zip``/``map``
        (the consumer's CPU per tick is the ceiling of what one process takes)."""
        batch = self._next
        rows, ticks, rejected = batch.rows, batch.ticks, batch.rejected
        fresh: list[Tick] = []
        now_ns = self._clock_ns()
        check_many = self._validator.check_many
        batch.fetches.append(records)
        dropped = 0
        for tp, messages in records.items():
            partition = tp.partition
            seen = self._seen(tp)
            if self._offsets is not None and seen is None:
                # aiokafka may fetch a newly assigned partition before our listener
                # has claimed it: leave these records for after the claim.
                self._seek_if_assigned(tp, messages[0].offset)
                continue
            if self._offsets is not None:
                generation = self._offsets.generation((tp.topic, partition))
                if generation is not None:
                    batch.generations.setdefault((tp.topic, partition), generation)
            batch.first_offsets.setdefault(tp, messages[0].offset)
            valid, refused = check_many(map(_VALUE, messages), now_ns)
            kept = messages
            if refused:
                for index, reason, detail in refused:
                    m = messages[index]
                    rejected.append(Rejected(tp.topic, partition, m.offset, m.key, m.value, reason, detail, m.headers))
                gone = {index for index, _, _ in refused}
                kept = [m for index, m in enumerate(messages) if index not in gone]
            valid_from = len(fresh)
            if seen is None:
                rows.extend(zip(valid, repeat(partition), map(_OFFSET, kept), strict=False))  # repeat() is endless
                fresh.extend(valid)
            else:
                before = dict(seen)
                for tick, m in zip(valid, kept, strict=True):
                    if m.headers and any(k in LOOKUP_HEADERS for k, _ in m.headers):
                        batch.checked.append((tick, partition, m.offset))
                        fresh.append(tick)
                        continue
                    if tick.seq <= seen.get(tick.source, -1):
                        dropped += 1
                        continue
                    seen[tick.source] = tick.seq
                    rows.append((tick, partition, m.offset))
                    fresh.append(tick)
                # the sources this fetch moved: only they are stored with the batch
                moved = {source: seq for source, seq in seen.items() if before.get(source) != seq}
                if moved:
                    batch.marks.setdefault((tp.topic, partition), {}).update(moved)
            if len(fresh) > valid_from:
                taken_ticks = fresh[valid_from:]
                oldest, newest = min(map(_TS_NS, taken_ticks)), max(map(_TS_NS, taken_ticks))
                batch.oldest_ns[tp] = min(oldest, batch.oldest_ns.get(tp, oldest))
                batch.newest_ns[tp] = max(newest, batch.newest_ns.get(tp, newest))
            batch.count += len(messages)
            batch.taken[tp] = batch.taken.get(tp, 0) + len(messages)
            batch.next_offsets[tp] = messages[-1].offset + 1
        if dropped:
            self.stats.duplicates += dropped
            metrics.DUPLICATES_SKIPPED.inc(dropped)
        if fresh:
            ticks.extend(fresh)
            self._quotes.write(fresh)
            await self._retrying("redis", self._quotes.flush)

    def _seen(self, tp: TopicPartition) -> dict[str, int] | None:
        """The marks ``_take`` checks ``tp``'s ticks against and moves (None: not
        claimed, or no offset store). Started from the committed ones at each new
        claim of the partition, and after a fence (``_on_fenced`` forgets them)."""
        offsets = self._offsets
        if offsets is None:
            return None
        key = (tp.topic, tp.partition)
        generation = offsets.generation(key)
        if generation is None:
            return None
        taken = self._taken_marks.get(key)
        if taken is None or taken[0] != generation:
            taken = self._taken_marks[key] = (generation, dict(offsets.marks(key)))
        return taken[1]

    def _start_write(self) -> None:
        batch, self._next = self._next, _Batch()
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
            behind, self._next = self._next, _Batch()
            first = {**behind.first_offsets, **self._writing_batch.first_offsets}
            return exc, first
        return None

    async def _write(self, batch: _Batch) -> None:
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
        committed_ns = self._clock_ns()
        for tp, oldest in batch.oldest_ns.items():
            metrics.TICK_TO_ROW_SECONDS.observe(max(0, committed_ns - oldest) / 1e9)
            metrics.CONSUMER_LAG_SECONDS.observe((tp.topic, str(tp.partition)), batch.newest_ns[tp] / 1e9)
            self._reported.add((tp.topic, str(tp.partition)))
        ticks = batch.ticks
        if refused:
            gone = {(r.partition, r.offset) for r in refused}
            kept = (*batch.rows, *batch.checked)
            ticks = [tick for tick, partition, offset in kept if (partition, offset) not in gone]
            batch.rejected.extend(refused)
        for sink in self._after_commit:
            sink.write(ticks)
            await self._retrying(sink.name, sink.flush)
        await self._commit(batch.next_offsets)

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
        # The group may have rebalanced while the batch was written: lag is
        # taken once, over what is assigned now, for the gauge and the monitor.
        assigned = self._consumer.assignment()
        lags = await self._assigned_lags(assigned)
        for (topic, partition), lag in lags.items():
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(lag)
            self._reported.add((topic, str(partition)))
        self._forget_revoked(assigned)
        if self._monitor is not None:  # dlq_burst / lag_high events
            await self._monitor.after_batch(
                rejected_by_reason=reasons,
                lags=lags,
                assigned={(tp.topic, tp.partition) for tp in assigned},
            )
        stats.last_batch_at = time.monotonic()
        _log.debug("batch_ingested", rows=len(batch.rows), rejected=len(batch.rejected), partitions=len(batch.taken))

    def _forget_revoked(self, assigned: set[TopicPartition]) -> None:
        """Stop reporting lag for partitions a rebalance gave to another consumer:
        it reports them now, and a frozen value here would add to its."""
        owned = {(tp.topic, str(tp.partition)) for tp in assigned}
        gone = self._reported - owned
        if not gone:
            return
        metrics.CONSUMER_LAG_SECONDS.forget(gone)
        for labels in gone:
            with contextlib.suppress(KeyError):  # never set for this partition
                metrics.CONSUMER_LAG.remove(*labels)
        self._reported &= owned

    async def _write_ticks(self, batch: _Batch) -> list[Rejected]:
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
                    self._offsets.replace_marks(self._marks_without(batch, refused))
            else:
                return refused

    def _marks_without(self, batch: _Batch, refused: list[Rejected]) -> dict[tuple[str, int], dict[str, int]]:
        """The batch's marks recomputed without the rows the database refused (a
        source it cannot store must not reach ``ingest_seq_marks`` either): the
        highest seq of each source among the batch's other rows (rare path)."""
        gone = {(r.partition, r.offset) for r in refused}
        ranges = [(tp, first, batch.next_offsets[tp]) for tp, first in batch.first_offsets.items()]
        marks: dict[tuple[str, int], dict[str, int]] = {}
        for tick, partition, offset in batch.rows:
            if (partition, offset) in gone:
                continue
            key = next(
                (tp.topic, p) for tp, first, end in ranges if (p := tp.partition) == partition and first <= offset < end
            )
            by_source = marks.setdefault(key, {})
            if tick.seq > by_source.get(tick.source, -1):
                by_source[tick.source] = tick.seq
        return marks

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
            self._taken_marks.pop((tp.topic, tp.partition), None)
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
                self._seek_if_assigned(tp, stored.get(tp.topic, {}).get(tp.partition, first))
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

    def _seek_if_assigned(self, tp: TopicPartition, offset: int) -> None:
        try:
            if tp in self._consumer.assignment():
                self._consumer.seek(tp, offset)
        except (AssertionError, IllegalStateError) as exc:  # assignment changed under the seek
            _log.warning("seek_skipped", partition=tp.partition, error=repr(exc))

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

    async def _commit(self, next_offsets: dict[TopicPartition, int]) -> None:
        """Commit to Kafka; failure here is harmless for correctness (the database
        holds the offsets), so a transient error is retried a few times and then
        left to the next batch, and a partition the group moved meanwhile is skipped."""
        assigned = self._consumer.assignment()
        offsets = {tp: OffsetAndMetadata(off, "") for tp, off in next_offsets.items() if tp in assigned}
        backoff = Backoff(self._retry)
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
                await backoff.wait()
            else:
                return
