"""``ResumeFromDatabase``: the consumer's rebalance listener.

Exactly once needs the consumer to resume where the database says, not where
Kafka's committed offsets say (those are written after the database commit and
may lag it): on assignment each partition is claimed in the ``OffsetStore``
(which fences its previous owner) and the consumer seeks to the stored offset.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError

from nexanest.pipeline.errors import RetryableError
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.offsets import OffsetStore
from nexanest.pipeline.retry import Backoff
from nexanest.pipeline.settings import RetrySettings

_log = get_logger(__name__)


class ResumeFromDatabase(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, claim each partition in TimescaleDB (fencing its previous
    owner) and seek to the offset stored with the last batch committed for it;
    Kafka's committed offset is only the fallback for a never-written partition."""

    def __init__(
        self, consumer: AIOKafkaConsumer, offsets: OffsetStore, topic: str, retry: RetrySettings | None = None
    ) -> None:
        self._consumer = consumer
        self._offsets = offsets
        self._topic = topic
        self._retry = retry or RetrySettings()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """The loop commits every batch before it fetches again; only forget the claims."""
        self._offsets.release([(tp.topic, tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        mine = sorted(tp.partition for tp in assigned if tp.topic == self._topic)
        resumed = await self.claim_and_seek(mine)
        _log.info("partitions_assigned", partitions=mine, resumed_from_db=resumed)

    async def claim_and_seek(self, partitions: list[int], *, fallback_offsets: dict[int, int] | None = None) -> int:
        """Claim ``partitions`` (retrying while the database is away) and seek each
        to its stored offset; a partition never written goes to its entry in
        ``fallback_offsets``, if any (else where Kafka's fetch position is).
        Returns how many partitions resumed from a stored offset."""
        backoff = Backoff(self._retry)
        while True:
            try:
                stored = await self._offsets.claim(self._topic, partitions)
                break
            except RetryableError as exc:
                delay = backoff.next_delay()
                _log.warning("claim_retry", error=str(exc), retry_in_s=round(delay, 3))
                await asyncio.sleep(delay)
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
