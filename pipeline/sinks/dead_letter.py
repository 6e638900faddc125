"""``DeadLetterSink``: messages that cannot be ingested, kept with their reason.

Each rejected record is re-published to the dead-letter topic with its
original key, bytes and headers untouched and the reason in headers of its own
(``nexanest.*``), so it can be inspected and replayed as it first arrived.
``flush`` returns only once Kafka has acknowledged every one: the consumer
commits past a bad record only after it is safe here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Final, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from nexanest.pipeline import metrics
from nexanest.pipeline.errors import RetryableError

HEADER_REASON: Final = "nexanest.reason"
HEADER_DETAIL: Final = "nexanest.detail"
HEADER_TOPIC: Final = "nexanest.source.topic"
HEADER_PARTITION: Final = "nexanest.source.partition"
HEADER_OFFSET: Final = "nexanest.source.offset"
HEADER_REJECTED_NS: Final = "nexanest.rejected_ns"
#: The headers this sink adds; an original header of the same name is not kept
#: (it would be read as ours), every other original header is.
DEAD_LETTER_HEADERS: Final = frozenset(
    (HEADER_REASON, HEADER_DETAIL, HEADER_TOPIC, HEADER_PARTITION, HEADER_OFFSET, HEADER_REJECTED_NS)
)


class Rejected(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str
    #: The record's own headers, as consumed.
    headers: Sequence[tuple[str, bytes]] = ()


class DeadLetterSink:
    name = "dead_letter"

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._pending: list[Rejected] = []

    def write(self, rows: Sequence[Rejected]) -> None:
        self._pending.extend(rows)

    async def flush(self) -> int:
        if not self._pending:
            return 0
        started = time.perf_counter()
        now = str(time.time_ns()).encode()
        try:
            futures = [
                await self._producer.send(
                    self._topic,
                    value=r.value or b"",
                    key=r.key,
                    headers=[
                        *((k, v) for k, v in r.headers if k not in DEAD_LETTER_HEADERS),
                        (HEADER_REASON, r.reason.encode()),
                        (HEADER_DETAIL, r.detail.encode(errors="replace")),
                        (HEADER_TOPIC, r.topic.encode()),
                        (HEADER_PARTITION, str(r.partition).encode()),
                        (HEADER_OFFSET, str(r.offset).encode()),
                        (HEADER_REJECTED_NS, now),
                    ],
                )
                for r in self._pending
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise RetryableError("kafka", exc) from exc
        count = len(self._pending)
        for r in self._pending:
            metrics.count_rejected(r.reason)
        metrics.FLUSH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        self._pending = []
        return count

    async def close(self) -> None:
        self._pending = []
