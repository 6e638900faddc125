"""Growth (issue 5): does the consumer's ingest rate stay flat while ``stock_prices`` grows to 10 million rows?

    python -m benchmarks.scenarios.growth [--quick] [--rows 10000000] [--slice-rows N] [--hours 48] [--runs 21]

The real consumer, ``run_consumer``, grows the scratch database's empty table
slice by slice: a slice's ticks (in time order, over ``--hours`` of tick time
ending about now, so 1-hour chunks fill and roll) are published while no
consumer runs, then ``run_consumer(until_idle_s=...)`` drains them, resuming
from its stored offsets as a restarted consumer does. A slice's ticks/s is its
rows over the consumer's busy time; batch times are the sinks' own
``nexanest_sink_flush_seconds`` observations. ``ratio_last_vs_first`` is the
median of the last 3 slices over that of the first 3 (target: at least 0.9).
At the final size, after ``ANALYZE``, the common reads (the latest quote, the
last 1,000 ticks of a symbol with and without a time bound, a day of 1-minute
bars through ``ops.bars.fetch_bars``), each ``--runs`` times: median wall time
(no statement cache: each run planned) and planning/execution from EXPLAIN.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from benchmarks.harness import report
from benchmarks.harness.report import cells, n, table
from benchmarks.harness.run import Run, busy_s, feed_config, main, publish, time_queries
from benchmarks.harness.sampling import FlushTimes, percentile
from nexanest.consumers.ticks_to_timescale import open_quotes_redis, run_consumer
from nexanest.ops.bars import fetch_bars
from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.ohlcv import resolve_rollups
from nexanest.pipeline.sinks.redis_quotes import read_quote
from nexanest.pipeline.sinks.timescale import TimescaleSink
from nexanest.producers.feeds.synthetic import SyntheticFeed
from nexanest.schemas.ticks import Tick

TARGET = 0.9
LATEST = "SELECT * FROM stock_prices WHERE symbol = $1 {} ORDER BY time DESC LIMIT 1000"
CHECKPOINTS = "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
SLICES = "slice|rows in table|ticks/s|vs first {k}|chunks|table MB|batch p50 ms|p99 ms|Redis ms/flush|retries|load"
SLICE_CELLS = (
    "no rows_in_table:0 ticks_per_s:0 vs_first:2 chunks table_mb:0 batch_ms_p50:1 batch_ms_p99:1 redis_ms:1 retries "
    "load_avg_1m:2"
)
log = report.log("growth")


async def load(
    run: Run, args: argparse.Namespace, settings: Settings, start: datetime
) -> tuple[list[dict[str, Any]], dict[str, Tick], dict[str, Any]]:
    """Grow ``stock_prices`` from empty to ``args.rows`` through the consumer, slice
    by slice; the slices, each symbol's last tick, and load totals."""
    feed = feed_config(
        args.rows,
        args.symbols,
        args.seed,
        run.source("growth"),
        int(start.timestamp()) * 10**9,
        args.rows / (args.hours * 3600),
    )
    ticks, last_tick, slices = SyntheticFeed(feed).generate(), dict[str, Tick](), list[dict[str, Any]]()
    conn = await asyncpg.connect(run.admin_dsn)
    try:
        rollups = await resolve_rollups(conn, settings.consumer.rollups)  # as the consumer resolves it
        checkpoints, publish_s, began = await conn.fetchval(CHECKPOINTS), 0.0, time.monotonic()
        with FlushTimes(TimescaleSink.name, "redis_quotes") as flushes:
            while (written := sum(s["rows"] for s in slices)) < args.rows:
                batch = list(itertools.islice(ticks, min(args.slice_rows, args.rows - written)))
                last_tick.update((t.symbol, t) for t in batch)
                published, seconds = await publish(settings.kafka, batch, feed.source)
                publish_s += seconds
                run.check("growth", f"slice {len(slices) + 1} acknowledged by Kafka", len(batch), published)
                stats = await run_consumer(settings, asyncio.Event(), until_idle_s=args.idle_seconds)
                run.check("growth", f"slice {len(slices) + 1} written", len(batch), stats.written)
                busy, times = busy_s(stats), flushes.take()
                db, quotes = times[TimescaleSink.name] or [0.0], times["redis_quotes"] or [0.0]
                slices.append(
                    {
                        "no": len(slices) + 1,
                        "rows_in_table": written + stats.written,
                        "rows": stats.written,
                        "batches": stats.batches,
                        "ticks_per_s": stats.written / busy,
                        "busy_s": busy,
                        "chunks": await conn.fetchval("SELECT count(*) FROM show_chunks('stock_prices')"),
                        "table_mb": await conn.fetchval("SELECT hypertable_size('stock_prices')") / 2**20,
                        "batch_ms_p50": 1000 * statistics.median(db),
                        "batch_ms_p99": 1000 * percentile(db, 99),
                        "redis_ms": 1000 * statistics.mean(quotes),
                        "retries": stats.retries,
                        "load_avg_1m": os.getloadavg()[0],
                    }
                )
                log(
                    f"slice {len(slices)}: {slices[-1]['rows_in_table']:,} rows, {n(slices[-1]['ticks_per_s'])} ticks/s"
                )
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
        return out | await time_queries(
            conn,
            {
                "latest_1000_bounded": (LATEST.format("AND time > now() - INTERVAL '1 day'"), (symbol,)),
                "latest_1000_unbounded": (LATEST.format(""), (symbol,)),
                "bars_1m_day": (capture.sql, capture.params),
            },
            args.runs,
        )
    finally:
        await conn.close()
        await redis.aclose()


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    args.rows = 1_000_000 if args.quick else args.rows
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
    parameters = {
        key: getattr(args, key) for key in ("rows", "symbols", "seed", "slice_rows", "hours", "runs", "idle_seconds")
    }
    parameters |= {
        "batch_rows": batch,
        "partitions": run.base.kafka.partitions,
        "symbol": symbol,
        "from": start.isoformat(),
    }
    return {
        "parameters": parameters,
        "load": totals,
        "slices": slices,
        "k": k,
        "ratio_last_vs_first": ratio,
        "target": {"bound": TARGET, "met": ratio >= TARGET},
        "queries": reads,
        "size": size,
    }


def markdown(result: dict[str, Any]) -> str:
    p, ld, size, q, slices, k = (result[key] for key in ("parameters", "load", "size", "queries", "slices", "k"))
    rows, chunks = p["rows"], size["chunks"]
    slowest = min(slices, key=lambda s: s["ticks_per_s"])
    half = len(slices) // 2
    halves = statistics.median(s["ticks_per_s"] for s in slices[half:]) / statistics.median(
        s["ticks_per_s"] for s in slices[:half] or slices
    )
    met = "met" if result["target"]["met"] else "**not met**"
    bounded, unbounded, bars = q["latest_1000_bounded"], q["latest_1000_unbounded"], q["bars_1m_day"]
    lines = [
        *report.heading(
            result,
            f"growth of stock_prices to {rows:,} rows",
            f"; the load {ld['wall_s']:.0f} s, of which publishing the slices {ld['publish_s']:.0f} s untimed",
        ),
        f"Setup: scratch database `{result['scratch']['database']}` (dropped afterwards) with the project's "
        f"migrations ({', '.join(result['scratch']['migrations'])}); the consumer, `run_consumer` (COPY, rollups "
        f"`{ld['rollups']}`, "
        f"exactly-once offsets, Redis quotes), drains each slice from Kafka ({p['partitions']} partitions) in batches "
        f"of up to {p['batch_rows']:,}, resuming from its stored offsets; {rows:,} synthetic ticks, {p['symbols']} "
        f"symbols, seed {p['seed']}, {p['hours']:g} h of tick time ({rows / p['hours'] / 3600:,.2f} ticks/s of tick "
        "time) in time order, each slice published before its consumer starts (untimed); "
        f"{ld['checkpoints']} checkpoints during the load. ticks/s: the slice's rows over the consumer's busy time "
        "(first fetch to the end of the last write); batch ms: the COPY transactions, Redis ms: the quote round trips "
        "(`nexanest_sink_flush_seconds`).",
        "",
        *table(SLICES.format(k=k), (cells(s, SLICE_CELLS) for s in slices), "r" * 11),
        "",
        f"**Ratio** (median ticks_per_s of the last {k} slices / median of the first {k}): "
        f"**{result['ratio_last_vs_first']:.2f}** (slowest slice {slowest['vs_first']:.2f} of the first {k}). "
        f"Target ≥ {TARGET}: {met}. Overall {n(ld['ticks_per_s_overall'])} ticks/s.",
        "",
        f"Queries at {rows:,} rows, {chunks} chunks, after ANALYZE (median of {p['runs']} warm runs, asyncpg without "
        f"statement cache; symbol {p['symbol']}):",
        "",
        *table(
            "query|wall ms|planning ms|execution ms|rows|chunks planned / executed",
            [
                (
                    f"{name} (`read_quote`)" if name == "latest_quote_redis" else name,
                    *cells(r, "wall_ms:2 planning_ms:2 execution_ms:2 rows:0"),
                    f"{r['chunks_planned']:.0f} / {r['chunks_executed']:.0f}" if "chunks_planned" in r else "",
                )
                for name, r in q.items()
            ],
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
        "",
        f"Reading (generated from the figures above): at {rows:,} rows the ingest rate is "
        f"{result['ratio_last_vs_first']:.2f} of the rate on the empty table, so it "
        f"{'meets' if result['target']['met'] else 'misses'} the target of at least {TARGET}; the median of the second "
        f"half of the slices is {halves:.2f} of the first half's. The slowest slice (no. {slowest['no']}, at "
        f"{slowest['rows_in_table']:,} rows, load average {slowest['load_avg_1m']:.2f}) ran at "
        f"{slowest['vs_first']:.2f} of the first {k}. The last 1,000 ticks of a symbol take "
        f"{bounded['wall_ms']:.1f} ms with the time bound "
        f"({bounded['chunks_planned']:.0f} chunks planned, planning {bounded['planning_ms']:.1f} ms) and "
        f"{unbounded['wall_ms']:.1f} ms without ({unbounded['chunks_planned']:.0f} chunks planned, planning "
        f"{unbounded['planning_ms']:.1f} ms, {unbounded['chunks_executed']:.0f} executed). A day of 1-minute bars "
        f"({bars['rows']:,} bars) takes {bars['wall_ms']:.1f} ms from the rollup table; the latest quote from Redis "
        f"{q['latest_quote_redis']['wall_ms']:.2f} ms.",
        *report.closing(result),
    ]
    return "\n".join(lines) + "\n"


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows stock_prices grows to (10M; quick 1M)")
    parser.add_argument("--slice-rows", type=int, default=0, help="rows per slice (rows/20, at least 5 batches)")
    parser.add_argument("--hours", type=float, default=0, help="tick time the rows span (48; quick 4.8)")
    parser.add_argument("--runs", type=int, default=21, help="timed runs per query (21)")
    parser.add_argument("--idle-seconds", type=float, default=1.5, help="the consumer's until_idle_s per slice")


QUICK = "1,000,000 rows over 4.8 h of tick time (a few minutes)"

if __name__ == "__main__":
    raise SystemExit(main(__name__))
