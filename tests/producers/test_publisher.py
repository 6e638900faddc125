"""``TickPublisher`` against the real broker: the record batches it builds itself
must land exactly where and as Kafka's own keyed ``send`` would put them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import LeaderNotAvailableError, OutOfOrderSequenceNumber, TopicAuthorizationFailedError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from nexanest.ops.topic_reader import BoundedReader
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.settings import Settings
from nexanest.producers.publisher import TickPublisher
from nexanest.schemas.ticks import HEADER_RESENT, Tick
from tests.producers.feeds.venue_server import until
from tests.producers.ticks_topic import read_ticks

pytestmark = pytest.mark.integration


def ticks(count: int, symbols: int) -> list[Tick]:
    now = time.time_ns()
    return [
        Tick(
            symbol=f"S{i % symbols}",
            exchange="X",
            price_e9=(100 + i) * 10**9,
            size_e9=10**9,
            ts_ns=now + i,
            source="pub",
            seq=i,
        )
        for i in range(count)
    ]


async def test_batches_land_on_the_keyed_partition_in_order(isolated: Settings) -> None:
    # Small producer batches (16 KiB, the minimum) so one publish fills several
    # record batches per partition and the overflow path runs.
    kafka = isolated.kafka.model_copy(update={"max_batch_bytes": 16 * 1024, "partitions": 6})
    await ensure_topics(kafka)
    producer = make_producer(kafka)
    await producer.start()
    sent = ticks(6_000, 40)
    try:
        publisher = TickPublisher(producer, kafka.ticks_topic, "pub")
        await publisher.publish(sent[:5_000])
        await publisher.publish(sent[5_000:])
    finally:
        await producer.stop()
    assert publisher.published == 6_000

    got = await read_ticks(isolated, 6_000)
    assert len(got) == 6_000
    assert sorted(t.seq for _, _, t in got) == list(range(6_000))  # each once
    partitioner, partitions = DefaultPartitioner(), list(range(6))
    by_symbol: dict[str, list[int]] = {}
    for partition, key, tick in got:
        assert key == tick.symbol.encode()
        # The partition Kafka's default partitioner (murmur2, as the Java client) picks.
        assert partition == partitioner(key, partitions, partitions)
        by_symbol.setdefault(tick.symbol, []).append(tick.seq)
    assert len(by_symbol) == 40
    for seqs in by_symbol.values():
        assert seqs == sorted(seqs)  # a symbol's ticks in the order published
    assert [t for _, _, t in sorted(got, key=lambda g: g[2].seq)] == sent


class FailingFirstDeliveries:
    """The real producer, except that the first ``failures`` record batches it is
    handed fail as a broker restart makes them fail once their retries expire."""

    def __init__(self, producer: AIOKafkaProducer, failures: int) -> None:
        self._producer = producer
        self._failures = failures
        self.failed = 0
        self.lost_records = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[object]:
        if self.failed < self._failures:
            self.failed += 1
            self.lost_records += builder.record_count()
            lost: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            lost.set_exception(LeaderNotAvailableError())
            return lost
        future: asyncio.Future[object] = await self._producer.send_batch(builder, topic, partition=partition)
        return future


async def test_a_batch_lost_to_a_retriable_error_is_sent_again(isolated: Settings) -> None:
    kafka = isolated.kafka.model_copy(update={"partitions": 6})
    await ensure_topics(kafka)
    producer = make_producer(kafka)
    await producer.start()
    sent = ticks(600, 12)
    try:
        failing = FailingFirstDeliveries(producer, failures=4)
        publisher = TickPublisher(failing, kafka.ticks_topic, "pub")
        await publisher.publish(sent)
    finally:
        await producer.stop()
    assert failing.failed == 4
    assert publisher.published == 600
    got = await read_ticks(isolated, 600)
    assert sorted(t.seq for _, _, t in got) == list(range(600))  # each once, none lost
    # The ticks sent again say so: the consumer looks them up instead of judging
    # them by their partition's high-water mark of seq (they may follow later ones).
    async with BoundedReader(kafka, kafka.ticks_topic) as reader:
        headers = [r.headers async for batch in reader.batches() for r in batch]
    assert len(headers) == 600
    assert sum(1 for h in headers if (HEADER_RESENT, b"1") in h) == failing.lost_records > 0
    assert all(h in ((), [], ((HEADER_RESENT, b"1"),), [(HEADER_RESENT, b"1")]) for h in headers)


async def test_a_batch_lost_to_another_error_fails_the_publish(isolated: Settings) -> None:
    class Refused(FailingFirstDeliveries):
        async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[object]:
            lost: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            lost.set_exception(TopicAuthorizationFailedError())
            return lost

    await ensure_topics(isolated.kafka)
    producer = make_producer(isolated.kafka)
    await producer.start()
    try:
        publisher = TickPublisher(Refused(producer, 0), isolated.kafka.ticks_topic, "pub")
        with pytest.raises(TopicAuthorizationFailedError):
            await publisher.publish(ticks(10, 2))
    finally:
        await producer.stop()
    assert publisher.published == 0


class SequenceLost(FailingFirstDeliveries):
    """As the broker answers an idempotent producer whose sequence has a gap it
    cannot close (a batch expired while the broker restarted): every batch the
    producer is handed from then on fails. Only a new producer gets past it."""

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[object]:
        self.failed += 1
        lost: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        lost.set_exception(OutOfOrderSequenceNumber())
        return lost


async def batches_of(sent: list[Tick], size: int) -> AsyncIterator[list[Tick]]:
    for start in range(0, len(sent), size):
        yield sent[start : start + size]


async def test_a_lost_idempotent_sequence_goes_on_through_a_new_producer(isolated: Settings) -> None:
    kafka = isolated.kafka.model_copy(update={"partitions": 6})
    await ensure_topics(kafka)
    producer = make_producer(kafka)
    await producer.start()
    made: list[AIOKafkaProducer] = []

    def new_producer() -> AIOKafkaProducer:
        made.append(make_producer(kafka))
        return made[-1]

    sent = ticks(600, 12)
    broken = SequenceLost(producer, failures=0)
    try:
        publisher = TickPublisher(broken, kafka.ticks_topic, "pub", new_producer=new_producer)
        assert await publisher.publish_all(batches_of(sent, 100), in_flight=3) == 600
    finally:
        await producer.stop()
    assert broken.failed >= 1
    assert len(made) == 1  # one replacement, however many batches the old one failed
    assert made[0]._closed  # stopped by the publisher that made it
    got = await read_ticks(isolated, 600)
    assert sorted(t.seq for _, _, t in got) == list(range(600))  # each once, none lost

    # Without a way to make a new producer the failure surfaces, as before.
    producer = make_producer(kafka)
    await producer.start()
    try:
        with pytest.raises(OutOfOrderSequenceNumber):
            await TickPublisher(SequenceLost(producer, 0), kafka.ticks_topic, "pub").publish(sent[:10])
    finally:
        await producer.stop()


class StalledDeliveries(FailingFirstDeliveries):
    """The real producer, except that no delivery completes until ``release`` is set:
    a broker that takes the records and does not answer (slow, or away)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        super().__init__(producer, failures=0)
        self.release = asyncio.Event()

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[object]:
        delivery: asyncio.Future[object] = await self._producer.send_batch(builder, topic, partition=partition)

        async def answered() -> object:
            await self.release.wait()
            return await delivery

        return asyncio.ensure_future(answered())


async def test_a_stalled_kafka_holds_the_feed_back_and_loses_nothing(isolated: Settings) -> None:
    """Backpressure: while Kafka acknowledges nothing, the feed's iterator is not
    advanced past ``in_flight`` + 1 batches (memory stays bounded by them, no tick is
    dropped or buffered elsewhere); once Kafka answers, every tick lands, once."""
    await ensure_topics(isolated.kafka)
    producer = make_producer(isolated.kafka)
    await producer.start()
    sent, in_flight = ticks(2_000, 10), 3
    yielded = 0

    async def feed() -> AsyncIterator[list[Tick]]:
        nonlocal yielded
        for start in range(0, len(sent), 100):  # 20 batches
            yielded += 1
            yield sent[start : start + 100]

    stalled = StalledDeliveries(producer)
    try:
        publisher = TickPublisher(stalled, isolated.kafka.ticks_topic, "pub")
        publishing = asyncio.create_task(publisher.publish_all(feed(), in_flight=in_flight))
        await until(lambda: yielded >= in_flight + 1, "the feed asked for its first batches", 30)
        assert yielded == in_flight + 1
        # Held there: however long Kafka stays silent (2 s of it here), the feed is not asked for more.
        for _ in range(200):
            await asyncio.sleep(0.01)
            assert yielded == in_flight + 1
        assert not publishing.done()
        assert publisher.published == 0
        stalled.release.set()
        assert await asyncio.wait_for(publishing, 60) == 2_000
    finally:
        stalled.release.set()
        await producer.stop()
    assert yielded == 20
    got = await read_ticks(isolated, 2_000)
    assert sorted(t.seq for _, _, t in got) == list(range(2_000))  # each once, none lost
