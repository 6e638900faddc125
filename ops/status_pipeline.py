"""``nexanest status``: the pipeline's figures, read without writing anything.

- lag of the consumer group per partition, in messages: the topic's end offset
  minus how far the group has consumed, the larger of the offset stored in
  TimescaleDB ``ingest_offsets`` (the exactly-once consumer's own record, written
  in the same transaction as the rows) and the one committed to Kafka (the
  at-least-once consumer's); in seconds: 0 when the partition is drained, else
  now minus the newest stored tick of that ``kafka_partition`` in the last
  ``LAG_WINDOW_S`` (``stock_prices`` has no topic column: it is the newest tick
  of that partition number from any topic written there).
- ticks/s: rows of ``stock_prices`` with ``time`` in the last 60 s, over 60;
  the age of the newest tick (looked for in the last ``LAG_WINDOW_S``);
- DLQ size: end minus beginning offsets of the dead-letter topic.

Kafka is read through an admin client and a consumer without a group (no join,
no commit), TimescaleDB with plain SELECTs on a read-only connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition

from nexanest.ops.status_services import DEFAULT_TIMEOUT_S, read_only_connection, status_admin
from nexanest.pipeline.kafka import consumer_options, start_client
from nexanest.pipeline.settings import Settings

#: How far back the tick queries look: they stay bounded on a large table.
LAG_WINDOW_S: Final = 3600
#: The window ticks/s is measured over.
RATE_WINDOW_S: Final = 60

_NEWEST_BY_PARTITION: Final = f"""
SELECT kafka_partition, max(time) AS newest FROM stock_prices
 WHERE time > now() - interval '{LAG_WINDOW_S} seconds' AND time <= now() AND kafka_partition = ANY($1::int[])
 GROUP BY kafka_partition
"""
_RATE: Final = f"""
SELECT count(*) AS n, (SELECT max(time) FROM stock_prices
         WHERE time > now() - interval '{LAG_WINDOW_S} seconds' AND time <= now())
       AS newest, now() AS now
  FROM stock_prices WHERE time > now() - interval '{RATE_WINDOW_S} seconds' AND time <= now()
"""
_STORED_OFFSETS: Final = """
SELECT partition, next_offset FROM ingest_offsets
 WHERE consumer_group = $1 AND topic = $2 AND next_offset IS NOT NULL
"""


@dataclass
class PartitionLag:
    partition: int
    end_offset: int
    consumed_offset: int | None
    lag_messages: int
    lag_seconds: float | None


async def _topic_offsets(settings: Settings, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """Beginning and end offsets of every partition of ``topic`` (none if it does not exist)."""
    consumer = AIOKafkaConsumer(group_id=None, **consumer_options(settings.kafka, "status"))
    try:
        await start_client(consumer, settings.kafka)
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return {}, {}
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: o for tp, o in begin.items()}, {tp.partition: o for tp, o in end.items()}


async def consumer_lag(settings: Settings) -> list[PartitionLag]:
    """The group's lag per partition of the ticks topic, in messages and seconds."""
    kafka = settings.kafka
    _, end = await _topic_offsets(settings, kafka.ticks_topic)
    committed: dict[int, int] = {}
    admin = status_admin(settings, DEFAULT_TIMEOUT_S)
    try:
        await admin.start()
        for tp, meta in (await admin.list_consumer_group_offsets(kafka.consumer_group)).items():
            if tp.topic == kafka.ticks_topic and meta.offset >= 0:
                committed[tp.partition] = meta.offset
    finally:
        await admin.close()
    conn = await read_only_connection(settings.timescale.dsn.get_secret_value())
    try:
        for r in await conn.fetch(_STORED_OFFSETS, kafka.consumer_group, kafka.ticks_topic):
            committed[r["partition"]] = max(committed.get(r["partition"], 0), r["next_offset"])
        lagging = [p for p, e in end.items() if e - committed.get(p, 0) > 0]
        newest = {r["kafka_partition"]: r["newest"] for r in await conn.fetch(_NEWEST_BY_PARTITION, lagging)}
        db_now: datetime = await conn.fetchval("SELECT now()")
    finally:
        await conn.close()
    out = []
    for p in sorted(end):
        consumed = committed.get(p)
        messages = max(0, end[p] - (consumed or 0))
        if messages == 0:
            seconds: float | None = 0.0
        elif p in newest:
            seconds = max(0.0, (db_now - newest[p]).total_seconds())
        else:
            seconds = None  # nothing of that partition stored within the window
        out.append(PartitionLag(p, end[p], consumed, messages, seconds))
    return out


async def tick_rate(settings: Settings) -> tuple[float, float | None]:
    """Ticks per second stored over the last ``RATE_WINDOW_S``, and the newest tick's age (s)."""
    conn = await read_only_connection(settings.timescale.dsn.get_secret_value())
    try:
        row = await conn.fetchrow(_RATE)
    finally:
        await conn.close()
    if row is None:
        raise RuntimeError("no row")
    age = None if row["newest"] is None else max(0.0, (row["now"] - row["newest"]).total_seconds())
    return row["n"] / RATE_WINDOW_S, age


async def dlq_size(settings: Settings) -> int:
    """Messages held by the dead-letter topic (end minus beginning offsets)."""
    begin, end = await _topic_offsets(settings, settings.kafka.dead_letter_topic)
    return sum(end[p] - begin.get(p, 0) for p in end)
