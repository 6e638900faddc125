"""``TickPublisher``: ticks from any feed adapter onto the ``ticks`` topic.

Keyed by symbol, so each symbol's ticks stay in order on one partition. Sends
are batched: a whole batch is handed to the producer's accumulator, then the
publisher waits for all acknowledgements at once (no per-tick round trip).
With the idempotent producer a retried send is never duplicated in Kafka.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from nexanest.pipeline import metrics
from nexanest.pipeline.log import get_logger
from nexanest.schemas.ticks import Tick, encode_tick

_log = get_logger(__name__)


class TickPublisher:
    def __init__(self, producer: AIOKafkaProducer, topic: str, source: str) -> None:
        self._producer = producer
        self._topic = topic
        self._produced = metrics.TICKS_PRODUCED.labels(source)
        self._errors = metrics.PRODUCE_ERRORS.labels(source)
        self.published = 0

    async def publish(self, ticks: Sequence[Tick]) -> None:
        """Send a batch and wait until Kafka acknowledged every tick of it.

        Raises ``KafkaError`` if any tick could not be delivered after the
        producer's own retries; the caller decides whether to retry the batch
        (safe: the feed's ``source``/``seq`` identify the ticks).
        """
        send = self._producer.send
        topic = self._topic
        futures = [await send(topic, encode_tick(t), key=t.symbol.encode()) for t in ticks]
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        self._produced.inc(len(ticks) - len(failed))
        self.published += len(ticks) - len(failed)
        if failed:
            self._errors.inc(len(failed))
            first = failed[0]
            raise first if isinstance(first, KafkaError) else KafkaError(repr(first))

    async def publish_all(self, batches: AsyncIterator[Sequence[Tick]], stop: asyncio.Event | None = None) -> int:
        """Publish every batch the feed yields, until it ends or ``stop`` is set."""
        async for batch in batches:
            await self.publish(batch)
            if stop is not None and stop.is_set():
                break
        await self._producer.flush()
        return self.published
