"""The first tick path end to end: synthetic feed -> Kafka -> consumer -> TimescaleDB + Redis."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from decimal import Decimal

import asyncpg
import msgspec
import pytest
import redis.asyncio as redis
from aiokafka import AIOKafkaConsumer, TopicPartition

from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.pipeline.db import e9_to_decimal
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.dead_letter import HEADER_OFFSET, HEADER_REASON
from nexanest.pipeline.sinks.redis_quotes import read_quote
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.producers.publisher import publish_feed
from nexanest.schemas.ticks import Tick, encode_tick, format_e9

pytestmark = pytest.mark.integration


async def publish(settings: Settings, feed: SyntheticFeed) -> int:
    return await publish_feed(settings.kafka, feed, feed.config.source)


async def committed_and_end_offsets(settings: Settings) -> tuple[dict[int, int | None], dict[int, int]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=settings.kafka.consumer_group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(settings.kafka.ticks_topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(settings.kafka.ticks_topic) or set()
        tps = [TopicPartition(settings.kafka.ticks_topic, p) for p in sorted(partitions)]
        end = await consumer.end_offsets(tps)
        committed = {tp.partition: await consumer.committed(tp) for tp in tps}
        return committed, {tp.partition: off for tp, off in end.items()}
    finally:
        await consumer.stop()


async def test_20k_ticks_50_symbols_land_exactly_once(
    isolated: Settings, timescale_pool: asyncpg.Pool, quotes_redis: redis.Redis, test_id: str
) -> None:
    config = SyntheticConfig(
        symbols=50,
        rate=20_000,
        count=20_000,
        seed=20_251_125,
        start_ns=time.time_ns() - 60 * 10**9,
        source=f"e2e-{test_id}",
        paced=False,
    )
    expected = list(SyntheticFeed(config).generate())
    assert await publish(isolated, SyntheticFeed(config)) == 20_000

    stats = await run_consumer(isolated, asyncio.Event(), until_idle_s=3.0)
    assert stats.consumed == 20_000
    assert stats.written == 20_000
    assert stats.rejected == 0

    # The table holds exactly the produced rows: count, no repeats, and exact sums per symbol.
    count, distinct = await timescale_pool.fetchrow(
        "SELECT count(*), count(DISTINCT source_seq) FROM stock_prices WHERE source = $1", config.source
    )
    assert (count, distinct) == (20_000, 20_000)
    want: dict[str, tuple[int, Decimal, Decimal]] = {}
    sums: dict[str, list[Decimal | int]] = defaultdict(lambda: [0, Decimal(0), Decimal(0)])
    for t in expected:
        acc = sums[t.symbol]
        acc[0] = int(acc[0]) + 1
        acc[1] += e9_to_decimal(t.price_e9)
        acc[2] += e9_to_decimal(t.size_e9)
    want = {s: (int(a[0]), Decimal(a[1]), Decimal(a[2])) for s, a in sums.items()}
    rows = await timescale_pool.fetch(
        "SELECT symbol, count(*) AS n, sum(price) AS p, sum(size) AS s FROM stock_prices"
        " WHERE source = $1 GROUP BY symbol",
        config.source,
    )
    got = {r["symbol"]: (r["n"], r["p"], r["s"]) for r in rows}
    assert len(got) == 50
    assert got == want

    # Each Redis quote is the latest tick of its symbol.
    latest: dict[str, Tick] = {}
    for t in expected:
        if t.symbol not in latest or (t.ts_ns, t.seq) > (latest[t.symbol].ts_ns, latest[t.symbol].seq):
            latest[t.symbol] = t
    for symbol, t in latest.items():
        quote = await read_quote(quotes_redis, symbol, isolated.redis.quote_key_prefix)
        assert quote["price"] == format_e9(t.price_e9), symbol
        assert quote["bid"] == format_e9(t.bid_e9 or 0)
        assert quote["ask"] == format_e9(t.ask_e9 or 0)
        assert quote["ts_ns"] == str(t.ts_ns)
        assert quote["seq"] == str(t.seq)

    # Offsets are committed to Kafka and stored in TimescaleDB, both at the log end.
    committed, end = await committed_and_end_offsets(isolated)
    assert sum(end.values()) == 20_000
    assert committed == end
    stored = await timescale_pool.fetch(
        "SELECT partition, next_offset FROM ingest_offsets WHERE consumer_group = $1 AND topic = $2",
        isolated.kafka.consumer_group,
        isolated.kafka.ticks_topic,
    )
    assert {r["partition"]: r["next_offset"] for r in stored} == {p: e for p, e in end.items() if e > 0}

    # The consumer reported its life cycle in system_events.
    events = await timescale_pool.fetch(
        "SELECT event_type FROM system_events WHERE component = 'consumer.ticks_to_timescale'"
        " AND message LIKE '%' || $1 || '%' ORDER BY time",
        isolated.kafka.consumer_group,
    )
    assert [e["event_type"] for e in events] == ["started"]
    stopped = await timescale_pool.fetchrow(
        "SELECT details FROM system_events WHERE event_type = 'stopped' AND details->>'group' = $1",
        isolated.kafka.consumer_group,
    )
    assert stopped is not None
    details = json.loads(stopped["details"])
    assert (details["written"], details["consumed"], details["rejected"]) == (20_000, 20_000, 0)

    # A second run finds nothing new: it resumes from the stored offsets.
    again = await run_consumer(isolated, asyncio.Event(), until_idle_s=1.0)
    assert again.consumed == 0


async def test_malformed_messages_are_set_aside_and_good_ones_written(
    isolated: Settings, timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    source = f"bad-{test_id}"
    now = time.time_ns()

    def good(seq: int) -> Tick:
        return Tick(
            symbol="GOOD",
            exchange="XNAS",
            price_e9=10 * 10**9 + seq,
            size_e9=10**9,
            ts_ns=now - 1_000 + seq,
            source=source,
            seq=seq,
            bid_e9=9 * 10**9,
            ask_e9=11 * 10**9,
        )

    crossed = msgspec.structs.replace(good(10), bid_e9=12 * 10**9)
    messages: list[tuple[bytes, str]] = [
        (encode_tick(good(1)), "ok"),
        (b"\xc1\xffnot msgpack", "undecodable"),
        (encode_tick(good(2)), "ok"),
        (encode_tick(crossed), "crossed_quote"),
        (msgspec.msgpack.encode({"symbol": "GOOD", "price_e9": "NaN"}), "schema_violation"),
        (encode_tick(msgspec.structs.replace(good(11), symbol="bad symbol")), "bad_symbol"),
        (encode_tick(good(3)), "ok"),
    ]
    await ensure_topics(isolated.kafka)
    producer = make_producer(isolated.kafka)
    await producer.start()
    try:
        for value, _ in messages:
            await producer.send_and_wait(isolated.kafka.ticks_topic, value, key=b"GOOD")  # one partition, in order
    finally:
        await producer.stop()

    stats = await run_consumer(isolated, asyncio.Event(), until_idle_s=2.0)
    assert stats.consumed == 7
    assert stats.written == 3
    assert stats.rejected_by_reason == {"undecodable": 1, "schema_violation": 1, "crossed_quote": 1, "bad_symbol": 1}
    seqs = await timescale_pool.fetch(
        "SELECT source_seq FROM stock_prices WHERE source = $1 ORDER BY source_seq", source
    )
    assert [r["source_seq"] for r in seqs] == [1, 2, 3]

    # The dead-letter topic holds the original bytes, the reason and where each came from.
    dlq = AIOKafkaConsumer(
        isolated.kafka.dead_letter_topic,
        bootstrap_servers=isolated.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await dlq.start()
    try:
        got: list[tuple[bytes, str, int]] = []
        deadline = time.monotonic() + 10
        while len(got) < 4 and time.monotonic() < deadline:
            for records in (await dlq.getmany(timeout_ms=500)).values():
                for r in records:
                    headers = {k: v.decode() for k, v in r.headers}
                    got.append((r.value, headers[HEADER_REASON], int(headers[HEADER_OFFSET])))
    finally:
        await dlq.stop()
    bad = [(value, reason, offset) for offset, (value, reason) in enumerate(messages) if reason != "ok"]
    assert sorted(got, key=lambda g: g[2]) == bad
