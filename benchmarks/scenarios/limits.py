"""The limits every figure of the pipeline is set against.

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

from benchmarks.harness.host import KAFKA_SH
from benchmarks.harness.run import Run
from benchmarks.harness.sampling import run_sampled
from nexanest.pipeline.kafka import make_consumer
from nexanest.pipeline.sinks.copy_binary import StockPriceCopyEncoder
from nexanest.pipeline.sinks.timescale import COLUMNS, stock_price_row
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.schemas.ticks import decode_tick


async def db_ceiling(run: Run, config: SyntheticConfig) -> dict[str, Any]:
    """COPY the feed's rows as asyncpg encodes records, batch by batch; then the
    same batches, encoded beforehand by the product's ``StockPriceCopyEncoder``.
    Only the COPY transactions are timed; building rows and buffers is not."""
    batch_rows, partitions = run.base.batch.max_rows, run.base.kafka.partitions
    encoder, encoded, n = StockPriceCopyEncoder(), [], 0
    seconds = {"copy_records": 0.0, "copy_preencoded": 0.0}
    conn = await asyncpg.connect(run.admin_dsn)
    try:
        tables = {k: await run.scratch_table(conn, k.replace("copy_", "ceiling_")) for k in seconds}
        ticks = SyntheticFeed(config).generate()
        while entries := [(t, (n + i) % partitions, n + i) for i, t in enumerate(itertools.islice(ticks, batch_rows))]:
            records = [stock_price_row(*e) for e in entries]
            encoded.append(encoder.encode(entries))
            n += len(entries)
            started = time.perf_counter()
            async with conn.transaction():
                await conn.copy_records_to_table(tables["copy_records"], records=records, columns=COLUMNS)
            seconds["copy_records"] += time.perf_counter() - started
        for part in encoded:
            started = time.perf_counter()
            async with conn.transaction():
                await conn.copy_to_table(tables["copy_preencoded"], source=part, columns=COLUMNS, format="binary")
            seconds["copy_preencoded"] += time.perf_counter() - started
        for key, table in tables.items():
            run.check(
                f"db_ceiling {key}",
                "rows in scratch table",
                config.count,
                await conn.fetchval(f"SELECT count(*) FROM {table}"),
            )
            await conn.execute(f"DROP TABLE {table}")
    finally:
        await conn.close()
    out = {k: {"ticks_per_s": n / s, "seconds": s, "rows": n, "batch_rows": batch_rows} for k, s in seconds.items()}
    out["copy_preencoded"]["bytes_per_row"] = sum(len(p) for p in encoded) / max(n, 1)
    return out


async def kafka_perf_tool(run: Run, topic: str, ticks: int) -> dict[str, Any]:
    """Kafka's ConsumerPerformance over the feed topic; parses its CSV summary."""
    k = run.base.kafka
    argv = [
        str(KAFKA_SH),
        "run-class",
        "org.apache.kafka.tools.ConsumerPerformance",
        "--bootstrap-server",
        k.bootstrap_servers,
    ]
    argv += ["--topic", topic, "--num-records", str(ticks), "--group", run.group("kafka-perf")]
    argv += ["--fetch-size", str(k.max_partition_fetch_bytes), "--timeout", "30000"]
    proc = await run_sampled(argv, os.environ, timeout_s=300)
    proc.check_exit()
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    at = next(i for i, ln in enumerate(lines) if ln.startswith("start.time"))
    row = dict(
        zip((h.strip() for h in lines[at].split(",")), (v.strip() for v in lines[at + 1].split(",")), strict=True)
    )
    consumed = int(float(row["data.consumed.in.nMsg"]))
    run.check("kafka_perf_tool", "records consumed", ticks, consumed)
    return {
        "ticks_per_s": float(row["fetch.nMsg.sec"]),
        "ticks_per_s_incl_group_join": float(row["nMsg.sec"]),
        "rebalance_ms": float(row["rebalance.time.ms"]),
        "rows": consumed,
        "tool_output": row,
    }


async def client_ceiling(run: Run, topic: str, ticks: int, idle_s: float) -> dict[str, Any]:
    """aiokafka getmany (the pipeline's consumer settings and batch size) + msgspec
    decode of every record into a ``Tick``; nothing written, nothing committed."""
    b = run.base.batch
    consumer = make_consumer(run.base.kafka, topic, group_id=run.group("client"))
    await consumer.start()
    decoded, first_at, last_at = 0, 0.0, time.monotonic()
    try:
        while decoded < ticks and time.monotonic() - last_at < idle_s + 10:
            records = await consumer.getmany(timeout_ms=b.max_wait_ms, max_records=b.max_rows)
            first_at = first_at or (time.monotonic() if records else 0.0)
            for messages in records.values():
                decoded += len([decode_tick(m.value) for m in messages])
            last_at = time.monotonic() if records else last_at
    finally:
        await consumer.stop()
    run.check("client_ceiling", "records decoded", ticks, decoded)
    return {"ticks_per_s": decoded / (last_at - first_at), "seconds": last_at - first_at, "rows": decoded}
