"""Reading a topic between fixed offsets, outside any consumer group.

Operator tools (``nexanest verify``, ``nexanest dlq inspect``) look at what a
topic holds without disturbing the pipeline: ``BoundedReader`` assigns every
partition itself, never joins a group, never commits, and stops at the end
offsets it captured when it opened. A topic that is still being written to
therefore yields a finite, well-defined set of records, and a second reader
opened later sees a superset.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from nexanest.pipeline.errors import ConfigurationError, PipelineError
from nexanest.pipeline.kafka import consumer_options, make_admin, start_client
from nexanest.pipeline.settings import KafkaSettings

#: Records per ``getmany``: bounds the memory of one batch, like the consumer's ``batch.max_rows``.
DEFAULT_BATCH_RECORDS = 5_000

#: A progress callback for long reads (the CLI prints to stderr; tests pass none).
Progress = Callable[[str], None]


class ProgressThrottle:
    """Calls ``emit`` at most every ``every_s`` seconds: long reads report, short ones stay quiet."""

    def __init__(self, emit: Progress | None, every_s: float = 2.0) -> None:
        self._emit = emit
        self._every_s = every_s
        self._last = time.monotonic()

    def __call__(self, message: str) -> None:
        if self._emit is not None and time.monotonic() - self._last >= self._every_s:
            self._emit(message)
            self._last = time.monotonic()


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """The offsets ``[start, end)`` a reader will read from one partition."""

    partition: int
    #: The first offset the log still holds; records below it were deleted by retention.
    log_start: int
    start: int
    end: int

    @property
    def records(self) -> int:
        return self.end - self.start

    @property
    def truncated(self) -> bool:
        """Reading starts at the log start, and retention has deleted records
        before it: some of what was asked for may be gone."""
        return self.start == self.log_start and self.log_start > 0


async def topic_partitions(kafka: KafkaSettings, topic: str) -> list[int]:
    """The partition numbers of ``topic``; raises ``ConfigurationError`` if it does not exist."""
    admin = make_admin(kafka)
    await start_client(admin, kafka)
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for entry in described:
        if entry["topic"] == topic and entry["error_code"] == 0 and entry["partitions"]:
            return sorted(int(p["partition"]) for p in entry["partitions"])
    raise ConfigurationError(f"Kafka topic {topic!r} does not exist (see `nexanest topics`)")


class BoundedReader:
    """Read ``topic`` from a point in time (or the beginning) up to the end
    offsets captured by ``open``.

    ``from_ms`` is a Kafka record timestamp in ms: each partition starts at the
    first record whose timestamp is at or after it (``offsets_for_times``), or
    is empty if there is none. Use it as an approximate lower bound and filter
    the records yourself; timestamps are set by producers and need not match
    the payload's own time.

    Use as ``async with BoundedReader(...) as reader: async for batch in
    reader.batches(): ...``. ``batches`` raises ``PipelineError`` if a
    partition makes no progress for ``stall_timeout_s`` (a broker gone away).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        from_ms: int | None = None,
        batch_records: int = DEFAULT_BATCH_RECORDS,
        stall_timeout_s: float = 30.0,
        client_suffix: str = "reader",
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._from_ms = from_ms
        self._batch_records = batch_records
        self._stall_timeout_s = stall_timeout_s
        self._consumer = AIOKafkaConsumer(group_id=None, **consumer_options(kafka, client_suffix))
        #: Per partition, what ``batches`` will read; filled by ``open``.
        self.ranges: dict[int, PartitionRange] = {}
        #: Records yielded so far.
        self.read = 0

    @property
    def total(self) -> int:
        """Records between the start and end offsets (what ``batches`` yields
        at most; fewer where the log has gaps, such as transaction markers)."""
        return sum(r.records for r in self.ranges.values())

    async def open(self) -> None:
        partitions = await topic_partitions(self._kafka, self._topic)
        await start_client(self._consumer, self._kafka)
        tps = [TopicPartition(self._topic, p) for p in partitions]
        log_starts = await self._consumer.beginning_offsets(tps)
        ends = await self._consumer.end_offsets(tps)
        starts = dict(log_starts)
        if self._from_ms is not None:
            found = await self._consumer.offsets_for_times({tp: max(0, self._from_ms) for tp in tps})
            for tp in tps:
                hit = found.get(tp)
                # No record at or after from_ms: nothing to read in this partition.
                starts[tp] = ends[tp] if hit is None else max(hit.offset, log_starts[tp])
        self.ranges = {
            tp.partition: PartitionRange(tp.partition, log_starts[tp], min(starts[tp], ends[tp]), ends[tp])
            for tp in tps
        }

    async def close(self) -> None:
        """Idempotent, and safe after a failed ``open``."""
        await self._consumer.stop()

    async def __aenter__(self) -> BoundedReader:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def batches(self) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
        """Yield the records of ``ranges`` in batches, each from one partition, in offset order."""
        consumer = self._consumer
        active = {TopicPartition(self._topic, r.partition): r.end for r in self.ranges.values() if r.start < r.end}
        consumer.assign(list(active))
        for tp in active:
            consumer.seek(tp, self.ranges[tp.partition].start)
        last_progress = time.monotonic()
        while active:
            fetched = await consumer.getmany(*active, timeout_ms=500, max_records=self._batch_records)
            for tp, records in fetched.items():
                end = active.get(tp)
                if end is None or not records:
                    continue
                inside = records if records[-1].offset < end else [r for r in records if r.offset < end]
                if inside:
                    self.read += len(inside)
                    last_progress = time.monotonic()
                    yield inside
            for tp in list(active):
                # The position, not the last record, decides: read_committed skips markers.
                if await consumer.position(tp) >= active[tp]:
                    del active[tp]
                    consumer.pause(tp)
            if active and time.monotonic() - last_progress > self._stall_timeout_s:
                stuck = {tp.partition: (await consumer.position(tp), end) for tp, end in active.items()}
                raise PipelineError(
                    f"reading {self._topic}: no progress for {self._stall_timeout_s:.0f}s; "
                    f"partition: (position, end) = {stuck}"
                )
