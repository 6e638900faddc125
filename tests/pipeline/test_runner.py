"""The consumer loop's offset handling and pipelining, with in-memory fakes (no services).

The integration and fault tests prove the loop against the real services;
these pin down the two races that random timing hits only rarely: records
fetched before the partition is claimed, and a batch rolled back by a fence.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from nexanest.pipeline import metrics
from nexanest.pipeline.errors import FencedError, RejectedByDatabase, RetryableError
from nexanest.pipeline.runner import IngestLoop
from nexanest.pipeline.settings import BatchSettings, RetrySettings, ValidationSettings
from nexanest.pipeline.sinks.dead_letter import Rejected
from nexanest.pipeline.validation import TickValidator
from nexanest.schemas.ticks import Tick, encode_tick

TOPIC = "ticks"


def record(partition: int, offset: int) -> ConsumerRecord[bytes, bytes]:
    tick = Tick(symbol="AAA", exchange="X", price_e9=10**9, size_e9=1, ts_ns=time.time_ns(), source="t", seq=offset)
    value = encode_tick(tick)
    return ConsumerRecord(TOPIC, partition, offset, 0, 0, b"AAA", value, None, 3, len(value), [])


class FakeConsumer:
    def __init__(self, batches: list[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]]) -> None:
        self._batches = batches
        self.assigned = {TopicPartition(TOPIC, p) for p in range(3)}
        self.seeks: list[tuple[int, int]] = []
        self.commits: list[dict[TopicPartition, Any]] = []

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        await asyncio.sleep(0)
        return self._batches.pop(0) if self._batches else {}

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp.partition, offset))

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append(offsets)

    def highwater(self, tp: TopicPartition) -> int | None:
        return None


class FakeTimescale:
    """The table and its offset store in one: the loop's ``timescale`` and ``offsets``."""

    name = "timescale"

    def __init__(self, claimed: dict[tuple[str, int], int], fence_once: list[tuple[str, int]] | None = None) -> None:
        self.claimed = claimed
        self._fence_once = fence_once
        self.rows: list[Any] = []
        self.committed_rows: list[Any] = []
        self.offsets: dict[tuple[str, int], int] = {}
        self.generations: dict[tuple[str, int], int] = {}
        self.stored: dict[tuple[str, int], int] = {}

    def generation(self, tp: tuple[str, int]) -> int | None:
        return self.claimed.get(tp)

    def write(self, rows: Sequence[Any]) -> None:
        self.rows.extend(rows)

    def write_checked(self, rows: Sequence[Any]) -> None:
        self.rows.extend(rows)

    def marks(self, tp: tuple[str, int]) -> dict[str, int]:
        return {}

    def advance(
        self,
        next_offsets: Mapping[tuple[str, int], int],
        marks: Mapping[tuple[str, int], Mapping[str, int]] | None = None,
        generations: Mapping[tuple[str, int], int] | None = None,
    ) -> None:
        self.offsets.update(next_offsets)
        self.generations.update(generations or {})

    def replace_marks(self, marks: Mapping[tuple[str, int], Mapping[str, int]]) -> None:
        pass

    def discard(self) -> None:
        self.rows, self.offsets, self.generations = [], {}, {}

    async def stored_offsets(self, topic: str) -> dict[int, int]:
        return {p: off for (t, p), off in self.stored.items() if t == topic}

    def release(self, tps: Sequence[tuple[str, int]]) -> None:
        for tp in tps:
            self.claimed.pop(tp, None)

    async def flush(self) -> int:
        if self._fence_once:
            fenced, self._fence_once = self._fence_once, None
            raise FencedError(fenced, {tp: self.claimed[tp] + 1 for tp in fenced})  # renewed by our listener
        self.committed_rows.extend(self.rows)
        self.stored.update(self.offsets)
        written = len(self.rows)
        self.discard()
        return written


class FakeSink:
    name = "fake"

    def write(self, rows: Sequence[Any]) -> None:
        pass

    def write_checked(self, rows: Sequence[Any]) -> None:
        pass

    def discard(self) -> None:
        pass

    async def flush(self) -> int:
        return 0

    async def close(self) -> None:
        pass


class AfterCommitRecorder:
    """Records what it is given and, on flush, how many rows the table had committed."""

    name = "after"

    def __init__(self, timescale: FakeTimescale, fail_first_flush: bool = False) -> None:
        self._timescale = timescale
        self._fail = fail_first_flush
        self.buffered: list[Tick] = []
        self.flushes: list[tuple[int, int]] = []  # (ticks flushed, rows committed by then)
        self.discarded = 0

    def write(self, rows: Sequence[Tick]) -> None:
        self.buffered.extend(rows)

    def discard(self) -> None:
        self.discarded += len(self.buffered)
        self.buffered = []

    async def flush(self) -> int:
        if self._fail:
            self._fail = False
            raise RetryableError("timescaledb", ConnectionResetError("gone"))
        self.flushes.append((len(self.buffered), len(self._timescale.committed_rows)))
        n, self.buffered = len(self.buffered), []
        return n

    async def close(self) -> None:
        pass


def make_loop(
    consumer: FakeConsumer,
    timescale: FakeTimescale,
    after_commit: Sequence[AfterCommitRecorder] = (),
    *,
    quotes: FakeSink | None = None,
    dead_letters: FakeSink | None = None,
    batch: BatchSettings | None = None,
) -> IngestLoop:
    return IngestLoop(
        consumer,
        validator=TickValidator(ValidationSettings()),
        timescale=timescale,
        offsets=timescale,
        quotes=quotes or FakeSink(),
        dead_letters=dead_letters or FakeSink(),
        batch=batch or BatchSettings(),
        retry=RetrySettings(initial_backoff_s=0.001),
        after_commit=after_commit,
    )


async def test_records_of_an_unclaimed_partition_wait_for_the_claim() -> None:
    p0, p1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    consumer = FakeConsumer([{p0: [record(0, 5), record(0, 6)], p1: [record(1, 40), record(1, 41)]}])
    timescale = FakeTimescale(claimed={(TOPIC, 0): 1})  # partition 1 not claimed yet
    stats = await make_loop(consumer, timescale).run(asyncio.Event(), until_idle_s=0.01)
    assert [offset for _, _, offset in timescale.committed_rows] == [5, 6]
    assert consumer.seeks == [(1, 40)]  # partition 1 goes back to be read after its claim
    assert stats.written == 2
    assert [set(c) for c in consumer.commits] == [{p0}]


async def test_a_fenced_batch_is_read_again_from_where_it_started() -> None:
    p0, p1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    consumer = FakeConsumer([{p0: [record(0, 5), record(0, 6)], p1: [record(1, 40)]}])
    timescale = FakeTimescale(claimed={(TOPIC, 0): 1, (TOPIC, 1): 1}, fence_once=[(TOPIC, 0)])
    stats = await make_loop(consumer, timescale).run(asyncio.Event(), until_idle_s=0.01)
    assert timescale.committed_rows == []
    assert stats.fenced == 1
    assert stats.written == 0
    # The whole transaction rolled back: both partitions go back to the batch start,
    # not only the fenced one, and nothing is committed to Kafka.
    assert sorted(consumer.seeks) == [(0, 5), (1, 40)]
    assert consumer.commits == []


async def test_after_commit_sinks_flush_once_the_batch_committed_with_retry() -> None:
    p0 = TopicPartition(TOPIC, 0)
    consumer = FakeConsumer([{p0: [record(0, 5), record(0, 6)]}, {p0: [record(0, 7)]}])
    timescale = FakeTimescale(claimed={(TOPIC, 0): 1})
    after = AfterCommitRecorder(timescale, fail_first_flush=True)
    stats = await make_loop(consumer, timescale, [after]).run(asyncio.Event(), until_idle_s=0.01)
    # Each batch's ticks reach the sink after the table committed them; a retryable
    # failure is retried (not the table's transaction), and only then does Kafka commit.
    assert after.flushes == [(2, 2), (1, 3)]
    assert stats.retries == 1
    assert len(consumer.commits) == 2


async def test_a_fenced_batch_never_reaches_after_commit_sinks() -> None:
    p0 = TopicPartition(TOPIC, 0)
    consumer = FakeConsumer([{p0: [record(0, 5), record(0, 6)]}])
    timescale = FakeTimescale(claimed={(TOPIC, 0): 1}, fence_once=[(TOPIC, 0)])
    after = AfterCommitRecorder(timescale)
    await make_loop(consumer, timescale, [after]).run(asyncio.Event(), until_idle_s=0.01)
    # The sinks are given a batch only once its transaction committed.
    assert after.buffered == []
    assert after.discarded == 0
    assert after.flushes == []


class RefusingTimescale(FakeTimescale):
    """A table that refuses the rows at ``refused_offsets`` once, as the real sink
    does after isolating them: out of the buffer, raised for the dead-letter topic."""

    def __init__(self, claimed: dict[tuple[str, int], int], refused_offsets: set[int]) -> None:
        super().__init__(claimed)
        self._refused_offsets = refused_offsets

    async def flush(self) -> int:
        refused = [(p, o, "numeric field overflow") for _, p, o in self.rows if o in self._refused_offsets]
        if refused:
            self.rows = [r for r in self.rows if r[2] not in self._refused_offsets]
            self._refused_offsets = set()
            raise RejectedByDatabase(refused)
        return await super().flush()


class RecordingDeadLetters(FakeSink):
    def __init__(self) -> None:
        self.pending: list[Rejected] = []
        self.sent: list[Rejected] = []

    def write(self, rows: Sequence[Any]) -> None:
        self.pending.extend(rows)

    async def flush(self) -> int:
        self.sent += self.pending
        n, self.pending = len(self.pending), []
        return n


async def test_rows_the_database_refuses_are_dead_lettered_and_the_rest_written() -> None:
    p0, p1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    records = [record(0, 5), record(0, 6), record(1, 40)]
    consumer = FakeConsumer([{p0: records[:2], p1: records[2:]}])
    timescale = RefusingTimescale(claimed={(TOPIC, 0): 1, (TOPIC, 1): 1}, refused_offsets={6, 40})
    dead_letters = RecordingDeadLetters()
    after = AfterCommitRecorder(timescale)
    loop = make_loop(consumer, timescale, [after], dead_letters=dead_letters)
    stats = await loop.run(asyncio.Event(), until_idle_s=0.01)
    # The refused records go to the dead-letter topic as they arrived (key, bytes,
    # headers), with the server's message; the rest is written and committed.
    assert sorted((r.partition, r.offset, r.reason, r.detail) for r in dead_letters.sent) == [
        (0, 6, "rejected_by_database", "numeric field overflow"),
        (1, 40, "rejected_by_database", "numeric field overflow"),
    ]
    assert {r.value for r in dead_letters.sent} == {records[1].value, records[2].value}
    assert [offset for _, _, offset in timescale.committed_rows] == [5]
    assert after.flushes == [(1, 1)]  # only the written tick reaches the after-commit sinks
    assert (stats.written, stats.rejected, stats.rejected_by_reason) == (1, 2, {"rejected_by_database": 2})
    assert {tp: m.offset for tp, m in consumer.commits[-1].items()} == {p0: 7, p1: 41}


class HeldTimescale(FakeTimescale):
    """A table whose transactions wait until the test lets them commit."""

    def __init__(self, claimed: dict[tuple[str, int], int], fence_once: list[tuple[str, int]] | None = None) -> None:
        super().__init__(claimed, fence_once)
        self.release_commit = asyncio.Event()
        self.flushing = asyncio.Event()

    async def flush(self) -> int:
        self.flushing.set()
        await self.release_commit.wait()
        return await super().flush()


class RecordingQuotes(FakeSink):
    def __init__(self) -> None:
        self.buffered: list[Tick] = []
        self.published: list[int] = []  # tick seqs, in the order they reached "Redis"

    def write(self, rows: Sequence[Any]) -> None:
        self.buffered.extend(rows)

    async def flush(self) -> int:
        self.published += [t.seq for t in self.buffered]
        n, self.buffered = len(self.buffered), []
        return n


class CountingConsumer(FakeConsumer):
    def __init__(self, batches: list[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]]) -> None:
        super().__init__(batches)
        self.fetches: list[int] = []  # max_records of each getmany

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        self.fetches.append(max_records)
        return await super().getmany(timeout_ms=timeout_ms, max_records=max_records)


async def test_quotes_and_fetching_do_not_wait_for_the_write_and_memory_stays_at_two_batches() -> None:
    p0 = TopicPartition(TOPIC, 0)
    batches = [{p0: [record(0, 2 * i), record(0, 2 * i + 1)]} for i in range(5)]
    consumer = CountingConsumer(batches)
    timescale = HeldTimescale(claimed={(TOPIC, 0): 1})
    quotes = RecordingQuotes()
    loop = make_loop(consumer, timescale, quotes=quotes, batch=BatchSettings(max_rows=2, max_wait_ms=1))
    run = asyncio.create_task(loop.run(asyncio.Event(), until_idle_s=0.01))
    await timescale.flushing.wait()
    for _ in range(20):  # let the loop take all it will while the first write is held
        await asyncio.sleep(0)
    # The first batch is being written and the second one taken behind it, quotes
    # already out for both; with the next batch full, the loop stopped fetching.
    assert quotes.published == [0, 1, 2, 3]
    assert timescale.committed_rows == []
    assert consumer.fetches == [2, 2]
    timescale.release_commit.set()
    stats = await run
    assert [offset for _, _, offset in timescale.committed_rows] == list(range(10))
    assert quotes.published == list(range(10))
    assert stats.written == 10
    assert [c[p0].offset for c in consumer.commits][-1] == 10


async def test_a_fenced_batch_discards_the_batch_taken_behind_it_too() -> None:
    p0, p1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    consumer = FakeConsumer([{p0: [record(0, 5), record(0, 6)]}, {p0: [record(0, 7)], p1: [record(1, 40)]}])
    timescale = HeldTimescale(claimed={(TOPIC, 0): 1, (TOPIC, 1): 1}, fence_once=[(TOPIC, 0)])
    loop = make_loop(consumer, timescale, batch=BatchSettings(max_rows=10, max_wait_ms=1))
    run = asyncio.create_task(loop.run(asyncio.Event(), until_idle_s=0.01))
    await timescale.flushing.wait()
    for _ in range(20):
        await asyncio.sleep(0)
    timescale.release_commit.set()
    stats = await run
    # Partition 0 goes back to where the fenced batch started (not to 7, where the
    # batch behind it did), partition 1 to where the batch behind started; the
    # fake consumer has nothing more to give, so nothing is written or committed.
    assert sorted(consumer.seeks) == [(0, 5), (1, 40)]
    assert timescale.committed_rows == []
    assert stats.fenced == 1
    assert consumer.commits == []


class LaggingConsumer(FakeConsumer):
    """Reports a high watermark of 100 and a position of 90 on every partition."""

    def highwater(self, tp: TopicPartition) -> int | None:
        return 100

    async def position(self, tp: TopicPartition) -> int:
        return 90


class ReassigningTimescale(FakeTimescale):
    """At its second flush, notes what partition 1's lag was and gives the
    partition to another consumer (a rebalance while a batch is written)."""

    def __init__(self, consumer: FakeConsumer, topic: str) -> None:
        super().__init__(claimed={(topic, 0): 1, (topic, 1): 1})
        self._consumer, self._topic = consumer, topic
        self.flushes = 0
        self.lag_seen: float | None = None

    async def flush(self) -> int:
        self.flushes += 1
        if self.flushes == 2:
            self.lag_seen = metrics.CONSUMER_LAG_SECONDS.value((self._topic, "1"))
            self._consumer.assigned = {TopicPartition(self._topic, 0)}
        return await super().flush()


async def test_lag_in_seconds_and_tick_to_row_latency_follow_the_stored_ticks() -> None:
    """Per partition: the newest stored tick time makes the lag in seconds, the
    oldest tick of each batch the tick-to-row observation; a partition taken by
    another consumer stops being reported (it would add a frozen value to the new owner's)."""
    topic = f"lag-{time.monotonic_ns()}"  # series of its own in the process-wide registry
    now_ns = time.time_ns()

    def at(partition: int, offset: int, age_s: float) -> ConsumerRecord[bytes, bytes]:
        tick = Tick(symbol="AAA", exchange="X", price_e9=10**9, size_e9=1, ts_ns=now_ns - int(age_s * 1e9),
                    source="t", seq=offset)  # fmt: skip
        value = encode_tick(tick)
        return ConsumerRecord(topic, partition, offset, 0, 0, b"AAA", value, None, 3, len(value), [])

    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    consumer = LaggingConsumer([{p0: [at(0, 0, 30), at(0, 1, 10)], p1: [at(1, 0, 5)]}, {p0: [at(0, 2, 2)]}])
    consumer.assigned = {p0, p1}
    timescale = ReassigningTimescale(consumer, topic)
    loop = IngestLoop(
        consumer,
        validator=TickValidator(ValidationSettings()),
        timescale=timescale,
        offsets=timescale,
        quotes=FakeSink(),
        dead_letters=FakeSink(),
        batch=BatchSettings(),
        retry=RetrySettings(initial_backoff_s=0.001),
        clock_ns=lambda: now_ns,  # every batch commits at now_ns
    )
    count_before = metrics.REGISTRY.get_sample_value("nexanest_consumer_tick_to_row_seconds_count") or 0.0
    sum_before = metrics.REGISTRY.get_sample_value("nexanest_consumer_tick_to_row_seconds_sum") or 0.0
    await loop.run(asyncio.Event(), until_idle_s=0.01)

    # One observation per partition per batch, each its oldest tick: 30 s and 5 s, then 2 s.
    assert metrics.REGISTRY.get_sample_value("nexanest_consumer_tick_to_row_seconds_count") == count_before + 3
    got = metrics.REGISTRY.get_sample_value("nexanest_consumer_tick_to_row_seconds_sum")
    assert got is not None
    assert abs(got - sum_before - 37.0) < 1e-6
    # Partition 0's newest stored tick is 2 s old at now_ns; the age is taken when read.
    lag = metrics.CONSUMER_LAG_SECONDS.value((topic, "0"))
    assert lag is not None
    assert 2.0 <= lag < 2.0 + (time.time_ns() - now_ns) / 1e9 + 0.001
    assert metrics.REGISTRY.get_sample_value("nexanest_consumer_lag_messages", {"topic": topic, "partition": "0"}) == 10
    # Partition 1 was reported after the first batch (its tick 5 s old), then went to
    # another consumer during the second: neither of its lags is reported any more.
    assert timescale.flushes == 2
    assert timescale.lag_seen is not None
    assert timescale.lag_seen >= 5.0
    assert metrics.CONSUMER_LAG_SECONDS.value((topic, "1")) is None
    assert (
        metrics.REGISTRY.get_sample_value("nexanest_consumer_lag_messages", {"topic": topic, "partition": "1"}) is None
    )
