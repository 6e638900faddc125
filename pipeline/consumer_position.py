"""Where the consumer loop stands in Kafka: seeks, commits, and the lag it reports.

The database holds the offsets that count (``OffsetStore``); what is told to
Kafka here is for lag tooling and the group's view, so a failure is logged and
skipped, never raised. The lag gauges (messages and seconds) cover only the
partitions assigned to this consumer: one a rebalance gave to another is
forgotten, since a frozen value here would add to its new owner's.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from nexanest.pipeline import metrics
from nexanest.pipeline.batch import Batch
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.retry import Backoff
from nexanest.pipeline.settings import RetrySettings

_log = get_logger(__name__)


class ConsumerPosition:
    """The loop's consumer, seen from the loop: seek, commit, lag. Never raises
    for a rebalance that moved a partition meanwhile."""

    def __init__(self, consumer: AIOKafkaConsumer, retry: RetrySettings) -> None:
        self._consumer = consumer
        self._retry = retry
        #: (topic, partition) label sets this loop reports lag for.
        self._reported: set[tuple[str, str]] = set()

    def seek_if_assigned(self, tp: TopicPartition, offset: int) -> None:
        try:
            if tp in self._consumer.assignment():
                self._consumer.seek(tp, offset)
        except (AssertionError, IllegalStateError) as exc:  # assignment changed under the seek
            _log.warning("seek_skipped", partition=tp.partition, error=repr(exc))

    def observe_stored(self, batch: Batch, committed_ns: int) -> None:
        """The tick-to-row latency and the lag in seconds of a batch whose
        transaction committed at ``committed_ns``."""
        for tp, oldest in batch.oldest_ns.items():
            metrics.TICK_TO_ROW_SECONDS.observe(max(0, committed_ns - oldest) / 1e9)
            metrics.CONSUMER_LAG_SECONDS.observe((tp.topic, str(tp.partition)), batch.newest_ns[tp] / 1e9)
            self._reported.add((tp.topic, str(tp.partition)))

    async def report_lags(self) -> tuple[set[TopicPartition], dict[tuple[str, int], int]]:
        """Set the lag gauge of every partition assigned now, and forget those no
        longer assigned. Returns the assignment and the lags (for the monitor)."""
        # The group may have rebalanced while the batch was written: lag is
        # taken once, over what is assigned now, for the gauge and the monitor.
        assigned = self._consumer.assignment()
        lags = await self._assigned_lags(assigned)
        for (topic, partition), lag in lags.items():
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(lag)
            self._reported.add((topic, str(partition)))
        self._forget_revoked(assigned)
        return assigned, lags

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

    async def commit(self, next_offsets: dict[TopicPartition, int]) -> None:
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
