"""The consumer's trouble events through the real services: a dead-letter burst
and a lag that crosses its threshold once and recovers once, in the table and,
decodable and shaped like their frozen samples, on the topic."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import pytest

from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.settings import Settings
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.producers.publisher import TickPublisher
from tests.pipeline.test_events import read_events
from tests.schemas.event_samples import assert_like_sample

pytestmark = pytest.mark.integration


async def test_dlq_burst_and_one_lag_high_then_one_lag_recovered(
    isolated: Settings, timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    settings = isolated.model_copy(
        update={
            "batch": isolated.batch.model_copy(update={"max_rows": 50}),
            "events": isolated.events.model_copy(update={"dlq_burst_messages": 5, "lag_high_messages": 100}),
        }
    )
    await ensure_topics(settings.kafka)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        for i in range(30):
            await producer.send(settings.kafka.ticks_topic, b"\xc1 not msgpack %d" % i, key=b"BAD")
        config = SyntheticConfig(
            symbols=10,
            rate=0,
            count=1_000,
            seed=7,
            start_ns=time.time_ns() - 10**9,
            source=f"ev-{test_id}",
            paced=False,
        )
        await TickPublisher(producer, settings.kafka.ticks_topic, config.source).publish_all(
            SyntheticFeed(config).ticks()
        )
    finally:
        await producer.stop()

    stats = await run_consumer(settings, asyncio.Event(), until_idle_s=2.0)
    assert (stats.written, stats.rejected) == (1_000, 30)
    assert stats.batches >= 20

    rows = await timescale_pool.fetch(
        "SELECT event_type, severity, details FROM system_events"
        " WHERE component = 'consumer.ticks_to_timescale' AND details->>'group' = $1 ORDER BY time",
        settings.kafka.consumer_group,
    )
    kinds = [r["event_type"] for r in rows]
    assert kinds[0] == "started"
    assert kinds[-1] == "stopped"
    assert kinds.count("lag_high") == 1
    assert kinds.count("lag_recovered") == 1
    assert kinds.index("lag_high") < kinds.index("lag_recovered")
    high = json.loads(rows[kinds.index("lag_high")]["details"])
    assert high["lag"] > 100
    assert json.loads(rows[kinds.index("lag_recovered")]["details"])["lag"] <= 50
    bursts = [json.loads(r["details"]) for r in rows if r["event_type"] == "dlq_burst"]
    assert bursts
    assert all(b["rejected"] > 5 and "undecodable" in b["reasons"] for b in bursts)
    assert sum(b["rejected"] for b in bursts) <= 30
    assert {r["severity"] for r in rows if r["event_type"] in ("dlq_burst", "lag_high")} == {"warning"}

    # The topic carries the same events, each decodable and shaped like its sample.
    on_topic = [assert_like_sample(value, "consumer.ticks_to_timescale") for _, value in await read_events(settings)]
    assert [e.event_type for e in on_topic] == kinds  # one key, one partition: in the order emitted
    assert {e.details["group"] for e in on_topic} == {settings.kafka.consumer_group}
