"""Chunk interval of ``stock_prices``: insert rate and query speed per interval, in one run.

    python -m benchmarks.micro.chunk_sizing [--ticks 2000000] [--hours 48] [--symbols 300]
        [--intervals "15 minutes,1 hour,6 hours,1 day"] [--batch-rows 5000] [--runs 7] [--seed 1]

For each interval, an empty copy of ``stock_prices`` (``LIKE ... INCLUDING
DEFAULTS INCLUDING INDEXES``, so the same columns, defaults, time index and
``(symbol, time DESC)`` index) made a hypertable with that chunk interval. The
same synthetic ticks (``--ticks`` over ``--hours`` of tick time, ``--symbols``
symbols, in time order as a live feed arrives) go into every table in
``--batch-rows`` transactions of binary COPY (``StockPriceCopyEncoder``, the
sink's encoder). Each batch is encoded once and copied into every table in
turn, the order rotating per batch, so load from anything else on the shared
machine falls on all intervals alike. Only the COPY transactions are timed.

Then, per table: chunks, table and index bytes (``hypertable_detailed_size``),
and after ``ANALYZE`` the users' queries, warm (one untimed run first), each
``--runs`` times interleaved across tables, the median client wall time (the
connection has no statement cache, so every run is planned, as an application
query with fresh parameters is), plus the median planning and execution times
from ``EXPLAIN ANALYZE``:

* ``latest_1000``: the latest 1,000 ticks of a symbol;
* ``symbol_1h``: one symbol over a 1-hour range;
* ``symbol_1d``: one symbol over the last full day of data;
* ``bucket_1m_1d``: 1-minute OHLCV of one symbol over that day (``time_bucket``, ``first``/``last``);
* ``window_5m``: every tick in a 5-minute window.

Prints one JSON object and writes it to ``benchmarks/results/chunk_sizing-<time>.json``.
Needs TimescaleDB up with migrations applied (``make db-start migrate``); the
scratch tables are created as the owner role and dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

from benchmarks.harness.report import print_and_save
from nexanest.pipeline.settings import load_settings
from nexanest.pipeline.sinks.copy_binary import COPY_COLUMNS, StockPriceCopyEncoder
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed

QUERIES: dict[str, str] = {
    "latest_1000": "SELECT * FROM {t} WHERE symbol = $1 ORDER BY time DESC LIMIT 1000",
    "symbol_1h": "SELECT * FROM {t} WHERE symbol = $1 AND time >= $2 AND time < $2 + INTERVAL '1 hour' ORDER BY time",
    "symbol_1d": "SELECT * FROM {t} WHERE symbol = $1 AND time >= $2 AND time < $2 + INTERVAL '1 day' ORDER BY time",
    "bucket_1m_1d": (
        "SELECT time_bucket('1 minute', time) AS bucket, first(price, time) AS open, max(price) AS high,"
        " min(price) AS low, last(price, time) AS close, sum(size) AS volume, count(*) AS trades"
        " FROM {t} WHERE symbol = $1 AND time >= $2 AND time < $2 + INTERVAL '1 day'"
        " GROUP BY bucket ORDER BY bucket"
    ),
    "window_5m": "SELECT * FROM {t} WHERE time >= $1 AND time < $1 + INTERVAL '5 minutes'",
}


def interval_name(interval: str) -> str:
    return (
        interval.replace(" ", "").replace("minutes", "m").replace("hours", "h").replace("hour", "h").replace("day", "d")
    )


async def main(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings()
    run_id = uuid.uuid4().hex[:8]
    intervals = [s.strip() for s in args.intervals.split(",") if s.strip()]
    span_s = int(args.hours * 3600)
    # Start on a whole hour, --hours ago, so the data ends about now.
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(seconds=span_s)
    start_ns = int(start.timestamp()) * 10**9
    config = SyntheticConfig(
        symbols=args.symbols,
        rate=args.ticks / span_s,
        count=args.ticks,
        seed=args.seed,
        start_ns=start_ns,
        source=f"bench-chunks-{run_id}",
        paced=False,
    )
    partitions = settings.kafka.partitions
    encoder = StockPriceCopyEncoder()
    conn = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value(), statement_cache_size=0)
    tables = {iv: f"bench_chunks_{interval_name(iv)}_{run_id}" for iv in intervals}
    columns = list(COPY_COLUMNS)
    try:
        for iv, t in tables.items():
            await conn.execute(f"CREATE TABLE {t} (LIKE stock_prices INCLUDING DEFAULTS INCLUDING INDEXES)")
            await conn.execute(f"SELECT create_hypertable('{t}', 'time', chunk_time_interval => INTERVAL '{iv}')")

        # Load: one batch at a time into every table, order rotating.
        n_batches = -(-args.ticks // args.batch_rows)
        tail_from = n_batches - max(1, n_batches // 10)  # the last 10% of batches
        load_s = dict.fromkeys(intervals, 0.0)
        tail_s = dict.fromkeys(intervals, 0.0)
        tail_rows = 0
        batch: list[Any] = []
        index = 0
        written = 0
        load_started = time.perf_counter()

        async def flush(rows: list[Any], number: int) -> None:
            data = encoder.encode(rows)
            order = intervals[number % len(intervals) :] + intervals[: number % len(intervals)]
            for iv in order:
                began = time.perf_counter()
                async with conn.transaction():
                    await conn.copy_to_table(tables[iv], source=data, columns=columns, format="binary")
                took = time.perf_counter() - began
                load_s[iv] += took
                if number >= tail_from:
                    tail_s[iv] += took

        for i, tick in enumerate(SyntheticFeed(config).generate()):
            batch.append((tick, i % partitions, i))
            if len(batch) == args.batch_rows:
                await flush(batch, index)
                written += len(batch)
                if index >= tail_from:
                    tail_rows += len(batch)
                index += 1
                batch = []
        if batch:
            await flush(batch, index)
            written += len(batch)
            tail_rows += len(batch)
            index += 1
        load_wall_s = time.perf_counter() - load_started
        last_ns = start_ns + (written - 1) * int(1e9 / config.rate)  # the feed's clock
        last_tick = datetime.fromtimestamp(last_ns / 1e9, UTC)

        for t in tables.values():
            await conn.execute(f"ANALYZE {t}")

        per_table: dict[str, dict[str, Any]] = {}
        for iv, t in tables.items():
            count = await conn.fetchval(f"SELECT count(*) FROM {t}")
            chunks = await conn.fetchval(
                "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = $1", t
            )
            size = await conn.fetchrow(f"SELECT * FROM hypertable_detailed_size('{t}')")
            per_table[iv] = {
                "rows": count,
                "chunks": chunks,
                "rows_per_chunk": round(count / chunks),
                "table_bytes": size["table_bytes"],
                "index_bytes": size["index_bytes"],
                "total_bytes": size["total_bytes"],
                "total_mb": round(size["total_bytes"] / 2**20, 1),
                "avg_chunk_mb": round(size["total_bytes"] / chunks / 2**20, 2),
                "insert_ticks_per_s": round(written / load_s[iv]),
                "insert_ticks_per_s_last_10pct": round(tail_rows / tail_s[iv]),
                "copy_seconds": round(load_s[iv], 2),
            }
            assert count == written, f"{t} holds {count} rows, expected {written}"

        # Query parameters: a symbol, an hour in the middle, the last full day, 5 minutes in the middle.
        symbol = "SYN0007"
        end = last_tick.replace(minute=0, second=0, microsecond=0)
        mid = start + timedelta(seconds=span_s // 2)
        params: dict[str, tuple[Any, ...]] = {
            "latest_1000": (symbol,),
            "symbol_1h": (symbol, mid.replace(minute=0)),
            "symbol_1d": (symbol, end - timedelta(days=1)),
            "bucket_1m_1d": (symbol, end - timedelta(days=1)),
            "window_5m": (mid + timedelta(minutes=17),),
        }
        wall: dict[str, dict[str, list[float]]] = {iv: {q: [] for q in QUERIES} for iv in intervals}
        plan: dict[str, dict[str, list[float]]] = {iv: {q: [] for q in QUERIES} for iv in intervals}
        execute: dict[str, dict[str, list[float]]] = {iv: {q: [] for q in QUERIES} for iv in intervals}
        rows_returned: dict[str, dict[str, int]] = {iv: {} for iv in intervals}
        for iv, t in tables.items():  # warm-up, untimed
            for q, sql in QUERIES.items():
                rows_returned[iv][q] = len(await conn.fetch(sql.format(t=t), *params[q]))
        for r in range(args.runs):
            for q, sql in QUERIES.items():
                order = intervals[r % len(intervals) :] + intervals[: r % len(intervals)]
                for iv in order:
                    text = sql.format(t=tables[iv])
                    began = time.perf_counter()
                    await conn.fetch(text, *params[q])
                    wall[iv][q].append(time.perf_counter() - began)
                    explain = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {text}", *params[q])
                    doc = json.loads(explain)[0]
                    plan[iv][q].append(doc["Planning Time"])
                    execute[iv][q].append(doc["Execution Time"])
        for iv in intervals:
            per_table[iv]["query_ms"] = {q: round(statistics.median(wall[iv][q]) * 1000, 2) for q in QUERIES}
            per_table[iv]["planning_ms"] = {q: round(statistics.median(plan[iv][q]), 2) for q in QUERIES}
            per_table[iv]["execution_ms"] = {q: round(statistics.median(execute[iv][q]), 2) for q in QUERIES}
            per_table[iv]["rows_returned"] = rows_returned[iv]
        server = await conn.fetchval("SELECT version()")
        timescaledb = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        shared_buffers = await conn.fetchval("SHOW shared_buffers")
    finally:
        for t in tables.values():
            await conn.execute(f"DROP TABLE IF EXISTS {t}")
        await conn.close()

    baseline = "1 hour" if "1 hour" in per_table else intervals[0]
    ratios = {
        iv: {
            "insert_rate": round(v["insert_ticks_per_s"] / per_table[baseline]["insert_ticks_per_s"], 2),
            "insert_rate_last_10pct": round(
                v["insert_ticks_per_s_last_10pct"] / per_table[baseline]["insert_ticks_per_s_last_10pct"], 2
            ),
            "total_bytes": round(v["total_bytes"] / per_table[baseline]["total_bytes"], 2),
            "query_ms": {q: round(v["query_ms"][q] / per_table[baseline]["query_ms"][q], 2) for q in QUERIES},
        }
        for iv, v in per_table.items()
    }
    return {
        "benchmark": "chunk_sizing",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()},
        "server": server,
        "timescaledb": timescaledb,
        "shared_buffers": shared_buffers,
        "ticks": written,
        "symbols": args.symbols,
        "tick_span_hours": args.hours,
        "ticks_per_s_of_tick_time": round(config.rate, 2),
        "data_from": start.isoformat(),
        "batch_rows": args.batch_rows,
        "query_runs": args.runs,
        "query_params": {q: [p.isoformat() if isinstance(p, datetime) else p for p in v] for q, v in params.items()},
        "load_wall_seconds": round(load_wall_s, 1),
        "intervals": per_table,
        f"vs_{baseline.replace(' ', '_')}": ratios,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=2_000_000, help="ticks per table (default 2000000)")
    parser.add_argument("--hours", type=float, default=48, help="tick time the ticks span (default 48)")
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument("--intervals", default="15 minutes,1 hour,6 hours,1 day", help="comma-separated intervals")
    parser.add_argument("--batch-rows", type=int, default=5_000, help="rows per COPY transaction (default 5000)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per query and table (default 7)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None, help="JSON file (default benchmarks/results/<time>.json)")
    args = parser.parse_args()
    result = uvloop.run(main(args))  # the event loop the `nexanest` command uses
    print_and_save("chunk_sizing", result, args.output)
