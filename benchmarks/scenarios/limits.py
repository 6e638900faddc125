"""The limits every figure of the pipeline is set against, and the feed they share.

* ``db_ceiling``: binary COPY of the feed's rows into empty copies of
  ``stock_prices`` (asyncpg ``copy_records_to_table`` in batches of
  ``batch.max_rows``, one transaction each), then the same batches from buffers
  the product's ``StockPriceCopyEncoder`` encoded beforehand (the server's share);
* ``kafka_perf_tool``: Kafka's own ``ConsumerPerformance`` (the broker ceiling);
* ``client_ceiling``: aiokafka ``getmany`` plus msgspec decode, no writes.

Used by the suite and by scale-out (its model's database ceiling).
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import asyncpg
from aiokafka.admin import NewTopic

from benchmarks.harness.host import KAFKA_SH
from benchmarks.harness.run import Run
from benchmarks.harness.sampling import rate, run_sampled
from nexanest.pipeline.kafka import ensure_topics, make_consumer, make_producer
from nexanest.pipeline.sinks.copy_binary import StockPriceCopyEncoder
from nexanest.pipeline.sinks.timescale import COLUMNS, stock_price_row
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.producers.publisher import TickPublisher
from nexanest.schemas.ticks import decode_tick

# -- the feed ----------------------------------------------------------------------


async def produce_feeds(bench: Run, configs: dict[str, SyntheticConfig]) -> dict[str, Any]:
    """Publish each feed (flat out) to its own topic: the same ticks, told apart by ``source``."""
    k = bench.base.kafka
    out: dict[str, Any] = {"partitions": k.partitions}
    for feed, config in configs.items():
        topic = bench.topic(feed)
        await ensure_topics(k, [NewTopic(topic, num_partitions=k.partitions, replication_factor=1)])
        producer = make_producer(k)
        await producer.start()
        try:
            started = time.perf_counter()
            published = await TickPublisher(producer, topic, config.source).publish_all(SyntheticFeed(config).ticks())
            elapsed = time.perf_counter() - started
        finally:
            await producer.stop()
        bench.check("producer", f"ticks of feed {feed} acknowledged by Kafka", config.count or 0, published)
        out[feed] = {
            "topic": topic,
            "source": config.source,
            "ticks": published,
            "ticks_per_s": rate(published, elapsed),
        }
    out["ticks_per_s"] = out[next(iter(configs))]["ticks_per_s"]  # the first feed's
    return out


# -- limits ---------------------------------------------------------------------


async def db_ceiling(run: Run, config: SyntheticConfig) -> dict[str, Any]:
    """COPY the feed's rows into an empty copy of stock_prices as asyncpg encodes
    records, batch by batch; then the same batches, encoded beforehand by the
    product's own ``StockPriceCopyEncoder``, into another (the server's share).
    Only the COPY transactions are timed; building rows and buffers is not."""
    batch_rows, partitions = run.base.batch.max_rows, run.base.kafka.partitions
    encoder = StockPriceCopyEncoder()
    encoded: list[bytearray] = []
    conn = await asyncpg.connect(run.admin_dsn)
    try:
        table, raw_table = await run.scratch_table(conn, "ceiling"), await run.scratch_table(conn, "ceiling_raw")
        copy_s = raw_s = 0.0
        n = 0
        ticks = SyntheticFeed(config).generate()
        while entries := [(t, (n + i) % partitions, n + i) for i, t in enumerate(itertools.islice(ticks, batch_rows))]:
            records = [stock_price_row(*e) for e in entries]
            encoded.append(encoder.encode(entries))
            n += len(entries)
            started = time.perf_counter()
            async with conn.transaction():
                await conn.copy_records_to_table(table, records=records, columns=COLUMNS)
            copy_s += time.perf_counter() - started
        for part in encoded:
            started = time.perf_counter()
            async with conn.transaction():
                await conn.copy_to_table(raw_table, source=part, columns=COLUMNS, format="binary")
            raw_s += time.perf_counter() - started
        for name, t in (("db_ceiling", table), ("db_ceiling_preencoded", raw_table)):
            rows = await conn.fetchval(f"SELECT count(*) FROM {t}")
            run.check(name, "rows in scratch table", config.count or 0, rows)
            await conn.execute(f"DROP TABLE {t}")
    finally:
        await conn.close()
    return {
        "copy_records": {"ticks_per_s": rate(n, copy_s), "seconds": copy_s, "batch_rows": batch_rows},
        "copy_preencoded": {
            "ticks_per_s": rate(n, raw_s),
            "seconds": raw_s,
            "batch_rows": batch_rows,
            "bytes_per_row": sum(len(p) for p in encoded) / max(n, 1),
        },
    }


async def kafka_perf_tool(bench: Run, ticks: int) -> dict[str, Any]:
    """Kafka's ConsumerPerformance over the feed topic; parses its CSV summary."""
    k = bench.base.kafka
    argv = [
        str(KAFKA_SH),
        "run-class",
        "org.apache.kafka.tools.ConsumerPerformance",
        "--bootstrap-server",
        k.bootstrap_servers,
        "--topic",
        bench.feed_topic,
        "--num-records",
        str(ticks),
        "--group",
        bench.group("kafka-perf"),
        "--fetch-size",
        str(k.max_partition_fetch_bytes),
        "--timeout",
        "30000",
    ]
    result = await run_sampled(argv, dict(os.environ), timeout_s=300)
    if result.returncode != 0:
        raise RuntimeError(f"ConsumerPerformance exited {result.returncode}: {result.stderr[-2000:]}")
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    header_at = next(i for i, ln in enumerate(lines) if ln.startswith("start.time"))
    names = [h.strip() for h in lines[header_at].split(",")]
    values = [v.strip() for v in lines[header_at + 1].split(",")]
    row = dict(zip(names, values, strict=True))
    consumed = int(float(row["data.consumed.in.nMsg"]))
    bench.check("kafka_perf_tool", "records consumed", ticks, consumed)
    return {
        "ticks_per_s": float(row["fetch.nMsg.sec"]),
        "ticks_per_s_incl_group_join": float(row["nMsg.sec"]),
        "mb_per_s": float(row["fetch.MB.sec"]),
        "rebalance_ms": float(row["rebalance.time.ms"]),
        "fetch_ms": float(row["fetch.time.ms"]),
        "records": consumed,
        "tool_output": row,
    }


async def client_ceiling(bench: Run, ticks: int, idle_s: float) -> dict[str, Any]:
    """aiokafka getmany (the pipeline's consumer settings and batch size) + msgspec
    decode of every record into a ``Tick``; nothing written, nothing committed."""
    k, b = bench.base.kafka, bench.base.batch
    consumer = make_consumer(k, bench.feed_topic, group_id=bench.group("client"))
    await consumer.start()
    decoded = 0
    first_at = last_at = None
    idle_since = time.monotonic()
    try:
        while decoded < ticks:
            records = await consumer.getmany(timeout_ms=b.max_wait_ms, max_records=b.max_rows)
            if not records:
                if time.monotonic() - idle_since > idle_s + 10:
                    break
                continue
            if first_at is None:
                first_at = time.monotonic()
            for messages in records.values():
                decoded_ticks = [decode_tick(m.value) for m in messages]
                decoded += len(decoded_ticks)
            idle_since = last_at = time.monotonic()
    finally:
        await consumer.stop()
    bench.check("client_ceiling", "records decoded", ticks, decoded)
    assert first_at is not None
    assert last_at is not None
    return {"ticks_per_s": rate(decoded, last_at - first_at), "seconds": last_at - first_at, "records": decoded}
