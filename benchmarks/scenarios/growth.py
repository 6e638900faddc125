"""Growth (issue 5): does the consumer's ingest rate stay flat while ``stock_prices`` grows to 10 million rows?

    python -m benchmarks.scenarios.growth [--quick] [--rows 10000000] [--slice-rows N] [--hours 48] [--runs 21]

``run_consumer`` grows the empty table slice by slice: a slice (in time order,
over ``--hours`` of tick time ending now) is published, then drained, the
consumer resuming from its stored offsets. ``ratio_last_vs_first``: the median
rate of the last 3 slices over the first 3's (target: at least 0.9). Then the
common reads at that size (``time_queries``; bars through ``ops.bars.fetch_bars``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from benchmarks.harness import report
from benchmarks.harness.report import cells, n, table
from benchmarks.harness.run import Run, busy_s, main, publish, time_queries
from benchmarks.harness.sampling import observed, percentile
from nexanest.consumers.ticks_to_timescale import open_quotes_redis, run_consumer
from nexanest.ops.bars import fetch_bars
from nexanest.pipeline import metrics
from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.ohlcv_mode import resolve_rollups
from nexanest.pipeline.sinks.redis_quotes import read_quote
from nexanest.pipeline.sinks.timescale import TimescaleSink
from nexanest.producers.feeds.synthetic import SyntheticFeed
from nexanest.schemas.ticks import Tick

TARGET = 0.9
LATEST = "SELECT * FROM stock_prices WHERE symbol = $1 {} ORDER BY time DESC LIMIT 1000"
CHECKPOINTS = "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
SLICES = "slice|rows in table|ticks/s|vs first {k}|chunks|table MB|batch p50 ms|p99 ms|Redis ms/flush|retries|load"
SLICE_CELLS = "no rows_in_table:0 ticks_per_s:0 vs_first:2 chunks table_mb:0 batch_ms_p50:1 batch_ms_p99:1 redis_ms:1"
SLICE_CELLS += " retries load_avg_1m:2"
log = report.log("growth")


async def load(
    run: Run, args: argparse.Namespace, settings: Settings, start: datetime
) -> tuple[list[dict[str, Any]], dict[str, Tick], dict[str, Any]]:
    """Grow ``stock_prices`` from empty to ``args.rows`` through the consumer, slice
    by slice; the slices, each symbol's last tick, and load totals."""
    start_ns, rate = int(start.timestamp()) * 10**9, args.rows / (args.hours * 3600)
    feed = run.feed(args.rows, run.source("growth"), start_ns, rate)
    ticks, last_tick, slices = SyntheticFeed(feed).generate(), dict[str, Tick](), list[dict[str, Any]]()
    conn = await asyncpg.connect(run.admin_dsn)
    try:
        rollups = await resolve_rollups(conn, settings.consumer.rollups)  # as the consumer resolves it
        checkpoints, publish_s, began = await conn.fetchval(CHECKPOINTS), 0.0, time.monotonic()
        sinks = (metrics.FLUSH_SECONDS.labels(TimescaleSink.name), metrics.FLUSH_SECONDS.labels("redis_quotes"))
        with observed(*sinks) as ((_, copies), (_, quote_flushes)):
            while (written := sum(s["rows"] for s in slices)) < args.rows:
                batch = list(itertools.islice(ticks, min(args.slice_rows, args.rows - written)))
                last_tick.update((t.symbol, t) for t in batch)
                published, seconds = await publish(settings.kafka, batch, feed.source)
                publish_s += seconds
                run.check("growth", f"slice {len(slices) + 1} acknowledged by Kafka", len(batch), published)
                stats = await run_consumer(settings, asyncio.Event(), until_idle_s=args.idle_seconds)
                run.check("growth", f"slice {len(slices) + 1} written", len(batch), stats.written)
                busy, db, quotes = busy_s(stats), list(copies) or [0.0], list(quote_flushes) or [0.0]
                del copies[:], quote_flushes[:]  # the next slice's flushes start from none
                row = {"no": len(slices) + 1, "rows_in_table": written + stats.written, "rows": stats.written}
                row |= {"ticks_per_s": stats.written / busy, "busy_s": busy, "retries": stats.retries}
                row |= {"chunks": await conn.fetchval("SELECT count(*) FROM show_chunks('stock_prices')")}
                row |= {"table_mb": await conn.fetchval("SELECT hypertable_size('stock_prices')") / 2**20}
                row |= {"batch_ms_p50": 1000 * statistics.median(db), "batch_ms_p99": 1000 * percentile(db, 99)}
                row |= {"redis_ms": 1000 * statistics.mean(quotes), "load_avg_1m": os.getloadavg()[0]}
                slices.append(row)
                log(f"slice {row['no']}: {row['rows_in_table']:,} rows, {n(row['ticks_per_s'])} ticks/s")
        checkpoints = await conn.fetchval(CHECKPOINTS) - checkpoints
    finally:
        await conn.close()
    busy = sum(s["busy_s"] for s in slices)
    totals = {"busy_s": busy, "publish_s": publish_s, "wall_s": time.monotonic() - began, "checkpoints": checkpoints}
    return slices, last_tick, totals | {"ticks_per_s_overall": args.rows / busy, "rollups": rollups}


class _Capture:
    """Stands in for a connection to learn the SQL and parameters ``fetch_bars``
    sends, so ``EXPLAIN`` runs the project's query, not a copy."""

    sql, params = "", ()

    async def fetch(self, sql: str, *params: Any) -> list[Any]:
        self.sql, self.params = sql, params
        return []


async def queries(
    args: argparse.Namespace, settings: Settings, symbol: str, day: tuple[datetime, datetime], last: Tick
) -> dict[str, Any]:
    """The common reads as an application makes them (the ingest role; the latest quote from Redis)."""
    capture = _Capture()
    await fetch_bars(capture, symbol, "1m", *day)  # the project's query, not a copy
    redis, prefix = open_quotes_redis(settings), settings.redis.quote_key_prefix
    conn = await asyncpg.connect(settings.timescale.dsn.get_secret_value(), statement_cache_size=0)
    try:
        quote = await read_quote(redis, symbol, prefix)
        if (quote.get("ts_ns"), quote.get("seq")) != (str(last.ts_ns), str(last.seq)):
            raise RuntimeError(f"Redis quote of {symbol} is {quote}, expected the tick {last}")
        wall = []
        for _ in range(args.runs):
            began = time.perf_counter()
            await read_quote(redis, symbol, prefix)
            wall.append((time.perf_counter() - began) * 1000)
        out: dict[str, Any] = {"latest_quote_redis": {"wall_ms": statistics.median(wall), "rows": 1}}
        reads: dict[str, tuple[str, Sequence[Any]]] = {
            "latest_1000_bounded": (LATEST.format("AND time > now() - INTERVAL '1 day'"), (symbol,))
        }
        reads |= {"latest_1000_unbounded": (LATEST.format(""), (symbol,)), "bars_1m_day": (capture.sql, capture.params)}
        return out | await time_queries(conn, reads, args.runs)
    finally:
        await conn.close()
        await redis.aclose()


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    args.hours = args.hours or 48.0 * args.rows / 10_000_000
    batch = run.base.batch.max_rows  # whole consumer batches, at least 5 to a slice (1-2 are mostly noise)
    args.slice_rows = max(batch, (args.slice_rows or max(5 * batch, args.rows // 20)) // batch * batch)
    # Whole hours, ending at the current hour: chunk boundaries fall between slices of tick time.
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=args.hours)
    settings = run.settings("growth", run.topic("growth"))
    slices, last_tick, totals = await load(run, args, settings, start)
    conn = await asyncpg.connect(run.admin_dsn)
    try:
        await conn.execute("ANALYZE")
        size = dict(await conn.fetchrow("SELECT * FROM hypertable_detailed_size('stock_prices')"))
        size |= {"chunks": await conn.fetchval("SELECT count(*) FROM show_chunks('stock_prices')")}
        size |= {"rollup_mb": await conn.fetchval("SELECT hypertable_size('ohlcv_1m_rollup')") / 2**20}
        size |= {"database_mb": await conn.fetchval("SELECT pg_database_size(current_database())") / 2**20}
        for what, sql in (
            ("rows in stock_prices", "SELECT count(*) FROM stock_prices"),
            ("sum of ingest_offsets.next_offset", "SELECT sum(next_offset)::bigint FROM ingest_offsets"),
            ("sum of ohlcv_1m trade_count", "SELECT sum(trade_count)::bigint FROM ohlcv_1m_rollup"),
        ):
            run.check("growth", what, args.rows, await conn.fetchval(sql), strict=False)
    finally:
        await conn.close()
    symbol = "SYN0007" if args.symbols > 7 else "SYN0000"
    day_end = datetime.fromtimestamp(last_tick[symbol].ts_ns // 10**9 // 60 * 60 + 60, UTC)  # the end of its minute
    reads = await queries(args, settings, symbol, (day_end - timedelta(days=1), day_end), last_tick[symbol])
    k = max(1, min(3, len(slices) // 2))
    first = statistics.median(s["ticks_per_s"] for s in slices[:k])
    for s in slices:
        s["vs_first"] = s["ticks_per_s"] / first
    ratio = statistics.median(s["ticks_per_s"] for s in slices[-k:]) / first
    parameters = {"slice_rows": args.slice_rows, "hours": args.hours, "batch_rows": batch, "symbol": symbol}
    parameters |= {"partitions": run.base.kafka.partitions, "from": start.isoformat()}
    out = {"parameters": parameters, "load": totals, "slices": slices, "k": k, "ratio_last_vs_first": ratio}
    return out | {"target": {"bound": TARGET, "met": ratio >= TARGET}, "queries": reads, "size": size}


def markdown(result: dict[str, Any]) -> str:
    p, ld, size, q, slices, k = (result[key] for key in ("parameters", "load", "size", "queries", "slices", "k"))
    rows, chunks, slowest = p["rows"], size["chunks"], min(s["vs_first"] for s in slices)
    note = f"; the load {ld['wall_s']:.0f} s, of which publishing the slices {ld['publish_s']:.0f} s untimed"
    for name, r in q.items():
        r["query"] = f"{name} (`read_quote`)" if name == "latest_quote_redis" else name
        r["chunks"] = f"{r['chunks_planned']:.0f} / {r['chunks_executed']:.0f}" if "chunks_planned" in r else ""
    lines = [
        *report.heading(result, f"growth of stock_prices to {rows:,} rows", note),
        f"Setup: `run_consumer` (rollups `{ld['rollups']}`, exactly-once offsets, Redis quotes) drains each slice from "
        f"Kafka ({p['partitions']} partitions, batches of up to {p['batch_rows']:,}) into the scratch database "
        f"(migrations {', '.join(result['scratch']['migrations'])}), resuming from its stored offsets; {rows:,} "
        f"ticks, {p['symbols']} symbols, seed {p['seed']}, {p['hours']:g} h of tick time in time order; "
        f"{ld['checkpoints']} checkpoints during the load. ticks/s: rows over the consumer's busy time; batch ms: the "
        "COPY transactions, Redis ms: the quote round trips (`nexanest_sink_flush_seconds`).",
        "",
        *table(SLICES.format(k=k), (cells(s, SLICE_CELLS) for s in slices), "r" * 11),
        "",
        f"**Ratio** (median ticks_per_s of the last {k} slices / median of the first {k}): "
        f"**{result['ratio_last_vs_first']:.2f}** (slowest slice {slowest:.2f} of the first {k}). Target ≥ {TARGET}: "
        f"{'met' if result['target']['met'] else '**not met**'}. Overall {n(ld['ticks_per_s_overall'])} ticks/s.",
        "",
        f"Queries at {rows:,} rows, {chunks} chunks, after ANALYZE (median of {p['runs']} warm runs, asyncpg without "
        f"statement cache; symbol {p['symbol']}):",
        "",
        *table(
            "query|wall ms|planning ms|execution ms|rows|chunks planned / executed",
            (cells(r, "query wall_ms:2 planning_ms:2 execution_ms:2 rows:0 chunks") for r in q.values()),
            "lrrrrr",
        ),
        "",
        f"Size: stock_prices {n(size['total_bytes'] / 2**20, 1)} MB ({n(size['table_bytes'] / 2**20)} MB heap, "
        f"{n(size['index_bytes'] / 2**20)} MB indexes), {size['total_bytes'] / rows:.0f} bytes a row, "
        f"{n(rows / chunks)} rows a chunk; ohlcv_1m_rollup {n(size['rollup_mb'], 1)} MB; the whole database "
        f"{n(size['database_mb'], 1)} MB.",
        "",
        f"Checks: {sum(c['ok'] for c in result['checks'])} of {len(result['checks'])} passed ("
        + "; ".join(f"{c['what']} {c['actual']:,}" for c in result["checks"] if "slice" not in c["what"])
        + "; every slice acknowledged by Kafka and written whole).",
        *report.closing(result),
    ]
    return "\n".join(lines) + "\n"


OPTIONS = {
    "rows": (10_000_000, 1_000_000, "rows stock_prices grows to"),
    "slice_rows": (0, None, "rows per slice, 0: rows/20, at least 5 batches"),
    "hours": (0.0, None, "tick time the rows span, 0: 48 h per 10M rows"),
    "runs": (21, None, "timed runs per query"),
    "idle_seconds": (1.5, None, "the consumer's until_idle_s per slice"),
}
QUICK = "1,000,000 rows over 4.8 h of tick time (a few minutes)"

if __name__ == "__main__":
    raise SystemExit(main(__name__))
