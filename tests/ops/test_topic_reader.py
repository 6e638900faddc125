"""``BoundedReader``: a finite, group-less read of a topic (integration)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import NewTopic

from nexanest.ops.topic_reader import BoundedReader
from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.settings import Settings

pytestmark = pytest.mark.integration


async def send(settings: Settings, topic: str, values: list[tuple[int, bytes]], timestamp_ms: int) -> None:
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, partition=partition, timestamp_ms=timestamp_ms)
            for partition, value in values
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def test_reads_from_a_time_to_the_end_captured_at_open(isolated: Settings) -> None:
    topic = isolated.kafka.ticks_topic
    await ensure_topics(isolated.kafka, [NewTopic(topic, num_partitions=3, replication_factor=1)])
    t0 = 1_764_000_000_000
    await send(isolated, topic, [(0, b"old-0"), (1, b"old-1")], t0)
    await send(isolated, topic, [(0, b"new-0"), (0, b"new-0b"), (2, b"new-2")], t0 + 60_000)

    async with BoundedReader(isolated.kafka, topic, from_ms=t0 + 1) as reader:
        assert {p: (r.start, r.end) for p, r in reader.ranges.items()} == {0: (1, 3), 1: (1, 1), 2: (0, 1)}
        assert reader.total == 3
        # Written after open: beyond the captured end, not read.
        await send(isolated, topic, [(0, b"later"), (1, b"later")], t0 + 120_000)
        got = [(r.partition, r.value) async for batch in reader.batches() for r in batch]
    assert sorted(got) == [(0, b"new-0"), (0, b"new-0b"), (2, b"new-2")]
    assert not any(r.truncated for r in reader.ranges.values())

    async with BoundedReader(isolated.kafka, topic) as everything:
        assert everything.total == 7
        assert len([r async for batch in everything.batches() for r in batch]) == 7


async def test_a_missing_topic_is_a_configuration_error(isolated: Settings) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        async with BoundedReader(isolated.kafka, isolated.kafka.ticks_topic + ".nope"):
            pass
