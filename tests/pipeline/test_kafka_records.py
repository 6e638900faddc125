"""``TickConsumer``: aiokafka's records as unpacked, against the real broker, and the
loud failure when aiokafka's internals are not the ones it was written for."""

from __future__ import annotations

import aiokafka
import pytest
from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.structs import ConsumerRecord

from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.kafka import ensure_topics, make_consumer, make_producer
from nexanest.pipeline.kafka_records import SUPPORTED_AIOKAFKA, RawRecord, TickConsumer, check_internals
from nexanest.pipeline.settings import Settings


def test_the_installed_aiokafka_is_the_one_checked() -> None:
    """A new aiokafka (constraints.txt) fails here first: read its fetcher, then
    add the version to ``SUPPORTED_AIOKAFKA``."""
    assert aiokafka.__version__ in SUPPORTED_AIOKAFKA
    check_internals()


def test_other_versions_and_missing_internals_fail_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiokafka, "__version__", "9.9.9")
    with pytest.raises(ConfigurationError, match=r"installed: 9\.9\.9"):
        check_internals()
    monkeypatch.undo()
    monkeypatch.delattr(PartitionRecords, "_consumer_record")
    with pytest.raises(ConfigurationError, match=r"PartitionRecords\._consumer_record"):
        check_internals()


def test_deserializers_are_refused() -> None:
    with pytest.raises(ValueError, match="deserializers"):
        TickConsumer("t", value_deserializer=bytes)


@pytest.mark.integration
async def test_records_arrive_as_unpacked_in_order_with_their_keys_values_and_headers(isolated: Settings) -> None:
    """lz4 batches from the idempotent producer, one record with headers and one
    without a value: every record once, in offset order, across takes bounded by
    ``max_records``, none a ``ConsumerRecord``, and the position after the last."""
    kafka = isolated.kafka.model_copy(update={"partitions": 1})
    await ensure_topics(kafka)
    producer = make_producer(kafka)
    await producer.start()
    sent: list[tuple[bytes, bytes | None, list[tuple[str, bytes]]]]
    sent = [(f"K{i}".encode(), f"value {i}".encode(), []) for i in range(250)]
    sent[7] = (b"K7", b"value 7", [("trace", b"abc"), ("empty", b"")])
    sent[9] = (b"K9", None, [])
    try:
        futures = [await producer.send(kafka.ticks_topic, v, key=k, headers=h, partition=0) for k, v, h in sent]
        for future in futures:
            await future
    finally:
        await producer.stop()

    consumer = make_consumer(kafka, kafka.ticks_topic, group_id=f"{kafka.consumer_group}-records")
    assert isinstance(consumer, TickConsumer)
    await consumer.start()
    got: list[RawRecord] = []
    try:
        tp = TopicPartition(kafka.ticks_topic, 0)
        for _ in range(200):
            if len(got) >= len(sent):
                break
            fetched = await consumer.getmany(timeout_ms=500, max_records=40)
            assert all(len(records) <= 40 for records in fetched.values())
            got += fetched.get(tp, [])
        assert await consumer.position(tp) == len(sent)
    finally:
        await consumer.stop()
    assert [r.offset for r in got] == list(range(len(sent)))
    assert not any(isinstance(r, ConsumerRecord) for r in got)
    assert [(r.key, r.value, list(r.headers)) for r in got] == sent
