"""Reading back what a test published to its ticks topic (a per-test topic, see
``tests/conftest.py``), with each record's partition and key for the tests that
check where the publisher put it."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer

from nexanest.pipeline.settings import Settings
from nexanest.schemas.ticks import Tick, decode_tick


async def read_ticks(settings: Settings, expected: int, timeout_s: float = 30.0) -> list[tuple[int, bytes, Tick]]:
    """Records of the ticks topic as (partition, key, tick) until ``expected`` arrived (or the
    deadline), then one poll more, so that a record too many is seen too."""
    consumer = AIOKafkaConsumer(
        settings.kafka.ticks_topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: list[tuple[int, bytes, Tick]] = []

    async def poll() -> None:
        for tp, records in (await consumer.getmany(timeout_ms=500)).items():
            got.extend((tp.partition, r.key or b"", decode_tick(r.value or b"")) for r in records)

    try:
        deadline = time.monotonic() + timeout_s
        while len(got) < expected and time.monotonic() < deadline:
            await poll()
        await poll()
    finally:
        await consumer.stop()
    return got
