"""End-to-end ingest throughput against the database's raw COPY ceiling, in one run.

    python benchmarks/e2e_throughput.py [--ticks 200000] [--symbols 200] [--seed 1]

1. Publishes N synthetic ticks to a fresh topic (the producer figure).
2. Runs the real consumer (decode, validate, COPY + offsets, Redis quotes,
   Kafka commit) until the topic is drained: ticks/s from its first fetch to
   the end of its last batch.
3. COPYs the same rows, in batches of the same size, straight into an empty
   copy of ``stock_prices`` (same columns, indexes and chunk interval): the
   database ceiling.

Prints one JSON object: both rates, their ratio, and the machine's cores.
Needs the local stack (``make stack-up``) and migrations applied. The rows it
writes are deleted afterwards; its topics are left for inspection.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
import uuid
from pathlib import Path

import asyncpg
import uvloop
from report import print_and_save  # benchmarks/report.py (scripts run from this folder)

from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.log import configure_logging
from nexanest.pipeline.settings import LogSettings, Settings, load_settings, namespaced
from nexanest.pipeline.sinks.timescale import COLUMNS, stock_price_row
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.producers.publisher import TickPublisher


def bench_settings(base: Settings, run_id: str) -> Settings:
    return namespaced(base, f"bench.{run_id}")


async def copy_ceiling(settings: Settings, config: SyntheticConfig, batch_rows: int) -> float:
    rows = [stock_price_row(t, 0, i) for i, t in enumerate(SyntheticFeed(config).generate())]
    table = f"bench_ceiling_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value())
    try:
        await admin.execute(f"CREATE TABLE {table} (LIKE stock_prices INCLUDING DEFAULTS INCLUDING INDEXES)")
        await admin.execute(f"SELECT create_hypertable('{table}', 'time', chunk_time_interval => INTERVAL '1 hour')")
        started = time.perf_counter()
        for i in range(0, len(rows), batch_rows):
            async with admin.transaction():
                await admin.copy_records_to_table(table, records=rows[i : i + batch_rows], columns=COLUMNS)
        elapsed = time.perf_counter() - started
    finally:
        await admin.execute(f"DROP TABLE IF EXISTS {table}")
        await admin.close()
    return len(rows) / elapsed


async def main(args: argparse.Namespace) -> dict[str, object]:
    run_id = uuid.uuid4().hex[:8]
    settings = bench_settings(load_settings(), run_id)
    config = SyntheticConfig(
        symbols=args.symbols,
        rate=100_000,
        count=args.ticks,
        seed=args.seed,
        start_ns=time.time_ns() - 3600 * 10**9,
        source=f"bench-{run_id}",
        paced=False,
    )
    producer = make_producer(settings.kafka)
    await ensure_topics(settings.kafka)
    await producer.start()
    try:
        started = time.perf_counter()
        published = await TickPublisher(producer, settings.kafka.ticks_topic, config.source).publish_all(
            SyntheticFeed(config).ticks()
        )
        produce_s = time.perf_counter() - started
    finally:
        await producer.stop()

    stats = await run_consumer(settings, asyncio.Event(), until_idle_s=3.0)
    assert stats.written == args.ticks, f"consumer wrote {stats.written} of {args.ticks}"
    assert stats.first_batch_at is not None
    assert stats.last_batch_at is not None
    pipeline_rate = stats.written / (stats.last_batch_at - stats.first_batch_at)

    ceiling_rate = await copy_ceiling(settings, config, settings.batch.max_rows)

    admin = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value())
    try:
        await admin.execute("DELETE FROM stock_prices WHERE source = $1", config.source)
    finally:
        await admin.close()

    return {
        "benchmark": "e2e_throughput",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "ticks": args.ticks,
        "symbols": args.symbols,
        "batch_max_rows": settings.batch.max_rows,
        "producer_ticks_per_s": round(published / produce_s),
        "pipeline_ticks_per_s": round(pipeline_rate),
        "copy_ceiling_ticks_per_s": round(ceiling_rate),
        "pipeline_to_ceiling_ratio": round(pipeline_rate / ceiling_rate, 3),
        "batches": stats.batches,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=200_000, help="ticks to push through (default 200000)")
    parser.add_argument("--symbols", type=int, default=200, help="symbols (default 200)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--output", type=Path, default=None, help="also write the JSON here (default benchmarks/results/<time>.json)"
    )
    args = parser.parse_args()
    configure_logging(LogSettings(level="warning"))
    result = uvloop.run(main(args))  # the event loop the `nexanest` command uses
    print_and_save("e2e_throughput", result, args.output)
