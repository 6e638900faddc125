"""The limits every figure of the pipeline is set against (the suite's; scale-out's model uses ``db_ceiling``):
the database's binary COPY, Kafka's own ``ConsumerPerformance``, aiokafka ``getmany`` + msgspec decode."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from benchmarks.harness.run import Run, rotated
from benchmarks.harness.sampling import KAFKA_SH, run_sampled
from nexanest.pipeline.kafka import make_consumer
from nexanest.pipeline.sinks.copy_binary import StockPriceCopyEncoder
from nexanest.pipeline.sinks.timescale import COLUMNS, stock_price_row
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.schemas.ticks import decode_tick

#: The one index ``copy_one_index`` keeps: the one the reads of a symbol need (latest ticks, ranges).
ONE_INDEX = "symbol, time DESC"


async def db_ceiling(
    run: Run,
    config: SyntheticConfig,
    paths: Sequence[str] = ("copy_records", "copy_preencoded", "copy_one_index"),
    batch_rows: int = 0,
) -> dict[str, Any]:
    """COPY the feed's rows, one transaction per batch, each batch by every path in
    rotating order: ``copy_records`` (asyncpg encodes records built before timing),
    ``copy_rows`` (the same, building them with ``stock_price_row`` timed),
    ``copy_buffer`` (the product's ``StockPriceCopyEncoder``, timed) and
    ``copy_preencoded`` (buffers encoded before timing: the server's share) and
    ``copy_one_index`` (the same buffers into a table with only the ``ONE_INDEX``
    index: what the database takes when the table keeps no index a read does
    not need). Wall and this process's CPU time (the client's share) from the
    rows in hand to the commit."""
    batch_rows, p = batch_rows or run.base.batch.max_rows, run.base.kafka.partitions
    rows = [(t, i % p, i) for i, t in enumerate(SyntheticFeed(config).generate())]
    batches, encoder = [rows[i : i + batch_rows] for i in range(0, len(rows), batch_rows)], StockPriceCopyEncoder()
    preencoded = {"copy_preencoded", "copy_one_index"}.intersection(paths)
    encoded = [StockPriceCopyEncoder().encode(b) for b in batches] if preencoded else []
    built = [[stock_price_row(*r) for r in b] for b in batches] if "copy_records" in paths else []
    wall, cpu = dict.fromkeys(paths, 0.0), dict.fromkeys(paths, 0.0)
    conn = await asyncpg.connect(run.admin_dsn)
    try:
        only = {"copy_one_index": ONE_INDEX}
        tables = {path: await run.scratch_table(conn, path, only_index=only.get(path, "")) for path in paths}
        if "copy_one_index" in tables:  # the reference holds only if the table really has one index
            indexes = await conn.fetchval(
                "SELECT count(*) FROM pg_indexes WHERE tablename = $1", tables["copy_one_index"]
            )
            run.check("db_ceiling copy_one_index", "indexes on its table", 1, indexes)
        for i, batch in enumerate(batches):
            for path in rotated(paths, i):
                wall_0, cpu_0 = time.perf_counter(), time.process_time()
                async with conn.transaction():
                    if path in ("copy_records", "copy_rows"):
                        records = built[i] if path == "copy_records" else [stock_price_row(*r) for r in batch]
                        await conn.copy_records_to_table(tables[path], records=records, columns=COLUMNS)
                    else:  # a bytearray: asyncpg takes bytes for a file name
                        data = encoded[i] if path in preencoded else encoder.encode(batch)
                        await conn.copy_to_table(tables[path], source=data, columns=COLUMNS, format="binary")
                wall[path] += time.perf_counter() - wall_0
                cpu[path] += time.process_time() - cpu_0
        for path, table in tables.items():
            stored = await conn.fetchval(f"SELECT count(*) FROM {table}")
            run.check(f"db_ceiling {path}", "rows in its table", len(rows), stored)
            await conn.execute(f"DROP TABLE {table}")
    finally:
        await conn.close()
    figures = {"rows": len(rows), "batch_rows": batch_rows}
    return {
        k: {"ticks_per_s": len(rows) / wall[k], "client_cpu_us_per_row": cpu[k] / len(rows) * 1e6} | figures
        for k in paths
    }


async def kafka_perf_tool(run: Run, topic: str, ticks: int) -> dict[str, Any]:
    """Kafka's ConsumerPerformance over the feed topic; parses its CSV summary."""
    k = run.base.kafka
    tool = "org.apache.kafka.tools.ConsumerPerformance"
    argv = [str(KAFKA_SH), "run-class", tool, "--bootstrap-server", k.bootstrap_servers]
    argv += ["--topic", topic, "--num-records", str(ticks), "--group", run.group("kafka-perf")]
    argv += ["--fetch-size", str(k.max_partition_fetch_bytes), "--timeout", "30000"]
    proc = await run_sampled(argv, os.environ, timeout_s=300)
    proc.check_exit()
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    at = next(i for i, ln in enumerate(lines) if ln.startswith("start.time"))
    row = dict(zip(*(map(str.strip, lines[i].split(",")) for i in (at, at + 1)), strict=True))
    consumed = int(float(row["data.consumed.in.nMsg"]))
    run.check("kafka_perf_tool", "records consumed", ticks, consumed)
    rates = {"ticks_per_s": float(row["fetch.nMsg.sec"]), "ticks_per_s_incl_group_join": float(row["nMsg.sec"])}
    return rates | {"rebalance_ms": float(row["rebalance.time.ms"]), "rows": consumed, "tool_output": row}


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
