"""Growth (issue 5): does the consumer's ingest rate stay flat while ``stock_prices`` grows to 10 million rows?

    python -m benchmarks.scenarios.growth [--quick] [--rows 10000000] [--slice-rows N] [--hours 48] [--runs 21]

**What runs.** The real consumer, ``run_consumer`` (decode, validate, quotes to
Redis, COPY + rollups + exactly-once offsets in one transaction, after-commit
sinks, Kafka commit), against a scratch database ``nexanest_bench_<run>`` on
the local cluster (created empty, the project's migrations applied as ``nexanest
migrate`` applies them, dropped at the end by ``harness.cleanup``), so the
user's tables are never written and the table starts at zero rows.

**How it grows.** Slice by slice: the slice's synthetic ticks (fixed seed, in
time order, spread over ``--hours`` of tick time ending about now, so 1-hour
chunks fill and roll one after another and "a day of 1-minute bars" exists) are
published to the run's topic while no consumer runs (untimed); then
``run_consumer(until_idle_s=...)`` drains them, resuming from the offsets it
stored with its rows, as a restarted consumer does. A slice's ticks/s is its
rows over the consumer's busy time (first fetch with records to the end of the
last write: the group join, the start-up quote rebuild and the idle wait are
outside). Batch times are the sink's own ``nexanest_sink_flush_seconds``
observations (timescale: the COPY transaction; redis_quotes: the quote round
trip). ``--quick`` keeps the full run's tick rate (58 ticks/s of tick time),
so it spans 4.8 hours: the bars a batch upserts grow with the tick time it covers.

``ratio_last_vs_first`` is the median ticks/s of the last 3 slices over the
median of the first 3 (fewer with fewer than 6 slices); the target is at least 0.9.

**Queries**, after ``ANALYZE``, at the final size, warm, each ``--runs`` times
interleaved, median client wall time through asyncpg without a statement cache
(every run planned), with planning and execution times from ``EXPLAIN ANALYZE``:
``latest_quote_redis`` (``read_quote``, checked against the symbol's last tick),
``latest_1000_bounded`` / ``_unbounded`` (the last 1,000 ticks of a symbol with
and without the README's time bound) and ``bars_1m_day`` (``ops.bars.fetch_bars``).

Needs the local stack and root (``runuser -u postgres`` creates the database).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, Final

import asyncpg
import uvloop

from benchmarks.harness import report
from benchmarks.harness.cleanup import clean_up, create_scratch_database
from benchmarks.harness.host import machine, restarted, service_identities
from benchmarks.harness.report import n as _n
from benchmarks.harness.run import Run
from benchmarks.harness.sampling import FlushTimes, percentile
from nexanest.consumers.ticks_to_timescale import open_quotes_redis, run_consumer
from nexanest.ops.bars import fetch_bars
from nexanest.ops.migrate import migrate
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.log import configure_logging
from nexanest.pipeline.settings import LogSettings, Settings, load_settings
from nexanest.pipeline.sinks.ohlcv import resolve_rollups
from nexanest.pipeline.sinks.redis_quotes import read_quote
from nexanest.pipeline.sinks.timescale import TimescaleSink
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.producers.publisher import TickPublisher
from nexanest.schemas.ticks import Tick

MODULE = "benchmarks.scenarios.growth"
TARGET_RATIO: Final = 0.9
QUICK_ROWS: Final = 1_000_000
FULL_ROWS: Final = 10_000_000
FULL_HOURS: Final = 48.0
LATEST_BOUNDED: Final = (
    "SELECT * FROM stock_prices WHERE symbol = $1 AND time > now() - INTERVAL '1 day' ORDER BY time DESC LIMIT 1000"
)
LATEST_UNBOUNDED: Final = "SELECT * FROM stock_prices WHERE symbol = $1 ORDER BY time DESC LIMIT 1000"
CHECKPOINTS: Final = "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
CHUNKS: Final = "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'stock_prices'"
log = report.log("growth")


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


async def load(
    run: Run, settings: Settings, args: Any, start_ns: int, span_s: float
) -> tuple[list[dict[str, Any]], dict[str, Tick], dict[str, Any]]:
    """Grow ``stock_prices`` from empty to ``args.rows``, slice by slice, through
    the consumer; returns the slices, each symbol's last tick and load totals."""
    config = SyntheticConfig(
        symbols=args.symbols,
        rate=args.rows / span_s,
        count=args.rows,
        seed=args.seed,
        start_ns=start_ns,
        source=run.source("growth"),
        paced=False,
    )
    ticks = SyntheticFeed(config).generate()
    last_tick: dict[str, Tick] = {}
    slices: list[dict[str, Any]] = []
    written = retries = 0
    publish_s = busy_s = 0.0
    load_started = time.monotonic()
    await ensure_topics(settings.kafka)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        checkpoints = await _fetchval(settings, CHECKPOINTS)
        conn = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value())
        try:
            rollups = await resolve_rollups(conn, settings.consumer.rollups)  # as the consumer resolves it
        finally:
            await conn.close()
        publisher = TickPublisher(producer, settings.kafka.ticks_topic, config.source or "")
        with FlushTimes(TimescaleSink.name, "redis_quotes") as flushes:
            while written < args.rows:
                began = time.perf_counter()
                batch = list(islice(ticks, min(args.slice_rows, args.rows - written)))
                last_tick.update((t.symbol, t) for t in batch)
                published = -publisher.published  # publish_all returns the publisher's running total
                published += await publisher.publish_all(_chunks(batch))
                publish_s += time.perf_counter() - began
                run.check("growth", f"slice {len(slices) + 1} acknowledged by Kafka", len(batch), published)
                stats = await run_consumer(settings, asyncio.Event(), until_idle_s=args.idle_seconds)
                run.check("growth", f"slice {len(slices) + 1} written", len(batch), stats.written)
                assert stats.first_batch_at is not None
                assert stats.last_batch_at is not None
                slice_s = stats.last_batch_at - stats.first_batch_at
                busy_s += slice_s
                written += stats.written
                retries += stats.retries
                times = flushes.take()
                chunks = await _fetchval(settings, CHUNKS)
                size = await _fetchval(settings, "SELECT hypertable_size('stock_prices')")
                db = times[TimescaleSink.name] or [0.0]
                entry = {
                    "rows_in_table": written,
                    "rows": stats.written,
                    "batches": stats.batches,
                    "ticks_per_s": round(stats.written / slice_s, 1),
                    "chunks": chunks,
                    "table_mb": round(size / 2**20, 1),
                    "busy_s": round(slice_s, 3),
                    "redis_quotes_s": round(sum(times["redis_quotes"]), 3),
                    "redis_flushes": len(times["redis_quotes"]),
                    "batch_ms_p50": _ms(statistics.median(db)),
                    "batch_ms_p99": _ms(percentile(db, 99)),
                    "batch_ms_max": _ms(max(db)),
                    "retries": stats.retries,
                    "fenced": stats.fenced,
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                }
                slices.append(entry)
                log(
                    f"slice {len(slices):>3}: {written:>12,} rows  {entry['ticks_per_s']:>9,.0f} ticks/s"
                    f"  {chunks} chunks  {entry['table_mb']:,.0f} MB  load {entry['load_avg_1m']}"
                )
        checkpoints = await _fetchval(settings, CHECKPOINTS) - checkpoints
    finally:
        await producer.stop()
    totals = {
        "rows": written,
        "busy_s": round(busy_s, 1),
        "publish_s": round(publish_s, 1),
        "wall_s": round(time.monotonic() - load_started, 1),
        "ticks_per_s_overall": round(written / busy_s, 1),
        "retries": retries,
        "checkpoints": checkpoints,
        "rollups": rollups,
        "exactly_once": settings.consumer.exactly_once,
    }
    return slices, last_tick, totals


async def _fetchval(settings: Settings, sql: str) -> Any:
    conn = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value())
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _chunks(ticks: Sequence[Tick], size: int = 5_000) -> Any:
    for i in range(0, len(ticks), size):
        yield ticks[i : i + size]


# -- queries ---------------------------------------------------------------------------------------


class _CaptureQuery:
    """Stands in for a connection to learn the exact SQL and parameters
    ``fetch_bars`` sends, so ``EXPLAIN`` runs the project's query, not a copy."""

    def __init__(self) -> None:
        self.sql = ""
        self.params: tuple[Any, ...] = ()

    async def fetch(self, sql: str, *params: Any) -> list[Any]:
        self.sql, self.params = sql, params
        return []


def _plan_chunks(plan: dict[str, Any]) -> tuple[int, int]:
    """Chunks (``_hyper_*`` relations, of whichever hypertable the query reads) in a plan, and how
    many of them were executed at all (ChunkAppend skips the rest at run time)."""
    planned: set[str] = set()
    executed: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        name = node.get("Relation Name", "")
        if name.startswith("_hyper_"):
            planned.add(name)
            if node.get("Actual Loops", 0) > 0:
                executed.add(name)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return len(planned), len(executed)


async def measure_queries(
    settings: Settings, symbol: str, day: tuple[datetime, datetime], runs: int, expected: Tick
) -> dict[str, dict[str, Any]]:
    """Median wall time (and planning/execution from EXPLAIN ANALYZE) of the common reads."""
    capture = _CaptureQuery()
    await fetch_bars(capture, symbol, "1m", *day)
    sql: dict[str, tuple[str, tuple[Any, ...]]] = {
        "latest_1000_bounded": (LATEST_BOUNDED, (symbol,)),
        "latest_1000_unbounded": (LATEST_UNBOUNDED, (symbol,)),
        "bars_1m_day": (capture.sql, capture.params),
    }
    # The ingest role reads, as an application would; no statement cache, so each run is planned.
    conn = await asyncpg.connect(settings.timescale.dsn.get_secret_value(), statement_cache_size=0)
    quotes_redis = open_quotes_redis(settings)
    prefix = settings.redis.quote_key_prefix
    out: dict[str, dict[str, Any]] = {}
    try:
        quote = await read_quote(quotes_redis, symbol, prefix)  # warm, and checked
        if quote.get("ts_ns") != str(expected.ts_ns) or quote.get("seq") != str(expected.seq):
            raise RuntimeError(f"Redis quote of {symbol} is {quote}, expected the tick {expected}")
        rows_returned = {name: len(await conn.fetch(q, *p)) for name, (q, p) in sql.items()}
        bars = await fetch_bars(conn, symbol, "1m", *day)
        rows_returned["bars_1m_day"] = len(bars)
        wall: dict[str, list[float]] = {name: [] for name in ("latest_quote_redis", *sql)}
        planning: dict[str, list[float]] = {name: [] for name in sql}
        execution: dict[str, list[float]] = {name: [] for name in sql}
        chunks: dict[str, tuple[int, int]] = {}
        for _ in range(runs):
            began = time.perf_counter()
            await read_quote(quotes_redis, symbol, prefix)
            wall["latest_quote_redis"].append(time.perf_counter() - began)
            for name, (q, p) in sql.items():
                began = time.perf_counter()
                if name == "bars_1m_day":
                    await fetch_bars(conn, symbol, "1m", *day)  # the project's read, Decimal decoding and all
                else:
                    await conn.fetch(q, *p)
                wall[name].append(time.perf_counter() - began)
                doc = json.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {q}", *p))[0]
                planning[name].append(doc["Planning Time"])
                execution[name].append(doc["Execution Time"])
                chunks[name] = _plan_chunks(doc)
        out["latest_quote_redis"] = {"wall_ms": _ms(statistics.median(wall["latest_quote_redis"])), "rows": 1}
        for name in sql:
            out[name] = {
                "wall_ms": _ms(statistics.median(wall[name])),
                "planning_ms": round(statistics.median(planning[name]), 2),
                "execution_ms": round(statistics.median(execution[name]), 2),
                "rows": rows_returned[name],
                "chunks_planned": chunks[name][0],
                "chunks_executed": chunks[name][1],
                "sql": " ".join(sql[name][0].split()),
            }
    finally:
        await conn.close()
        await quotes_redis.aclose()
    return out


async def final_state(settings: Settings, rows: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """ANALYZE, sizes, and count checks of what the load left in the scratch database."""
    conn = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value())
    try:
        await conn.execute("ANALYZE")
        size = await conn.fetchrow("SELECT * FROM hypertable_detailed_size('stock_prices')")
        rollup = await conn.fetchval("SELECT hypertable_size('ohlcv_1m_rollup')")
        chunks = await conn.fetch(
            "SELECT range_start, range_end FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'stock_prices' ORDER BY range_start"
        )
        count = await conn.fetchval("SELECT count(*) FROM stock_prices")
        offsets = await conn.fetchval("SELECT coalesce(sum(next_offset), 0)::bigint FROM ingest_offsets")
        trades = await conn.fetchval("SELECT coalesce(sum(trade_count), 0)::bigint FROM ohlcv_1m_rollup")
        database_bytes = await conn.fetchval("SELECT pg_database_size(current_database())")
    finally:
        await conn.close()
    state = {
        "stock_prices_rows": count,
        "chunks": len(chunks),
        "rows_per_chunk": round(count / max(1, len(chunks))),
        "table_bytes": size["table_bytes"],
        "index_bytes": size["index_bytes"],
        "toast_bytes": size["toast_bytes"],
        "total_bytes": size["total_bytes"],
        "total_mb": round(size["total_bytes"] / 2**20, 1),
        "bytes_per_row": round(size["total_bytes"] / max(1, count), 1),
        "ohlcv_1m_rollup_mb": round(rollup / 2**20, 1),
        "database_mb": round(database_bytes / 2**20, 1),
        "first_chunk_start": chunks[0]["range_start"].isoformat() if chunks else None,
        "last_chunk_end": chunks[-1]["range_end"].isoformat() if chunks else None,
    }
    checks = [
        {"what": "rows in stock_prices", "expected": rows, "actual": count},
        {"what": "sum of ingest_offsets.next_offset", "expected": rows, "actual": offsets},
        {"what": "sum of ohlcv_1m trade_count", "expected": rows, "actual": trades},
    ]
    for c in checks:
        c["ok"] = c["expected"] == c["actual"]
    return state, checks


def ratio_of(slices: Sequence[dict[str, Any]], key: str = "ticks_per_s") -> tuple[float, int]:
    """Median of the last k slices over the median of the first k, k = min(3, half the slices)."""
    k = max(1, min(3, len(slices) // 2))
    first = statistics.median(s[key] for s in slices[:k])
    last = statistics.median(s[key] for s in slices[-k:])
    return round(last / first, 3), k


async def run_growth(args: Any) -> dict[str, Any]:
    base = load_settings()
    run = Run(base, "g")
    started, started_at = time.monotonic(), datetime.now(UTC)
    log(
        f"run {run.run_id}: {args.rows:,} rows in slices of {args.slice_rows:,}; "
        f"if interrupted: python -m benchmarks.harness.cleanup {run.run_id}"
    )
    identities = await service_identities(base)
    host = await machine(base)
    settings = run.settings("growth", run.topic("growth"))
    try:
        settings = create_scratch_database(settings, run.run_id)
        applied = await migrate(settings, ["timescale"])
        migrations = [s.migration.filename for s in applied]
        log(f"scratch database: {len(applied)} migrations applied ({', '.join(migrations)})")
        span_s = args.hours * 3600
        # Whole hours, ending at the current hour: chunk boundaries fall between
        # slices of tick time, and "the last day" is inside the data.
        start = started_at.replace(minute=0, second=0, microsecond=0) - timedelta(seconds=span_s)
        slices, last_tick, totals = await load(run, settings, args, int(start.timestamp()) * 10**9, span_s)
        state, checks = await final_state(settings, totals["rows"])
        symbol = "SYN0007" if args.symbols > 7 else "SYN0000"
        last = last_tick[symbol]
        day_end = datetime.fromtimestamp(last.ts_ns // 10**9 // 60 * 60 + 60, UTC)  # the end of its minute
        day = (day_end - timedelta(days=1), day_end)
        queries = await measure_queries(settings, symbol, day, args.runs, last)
    finally:
        log("cleaning up")
        cleanup = await clean_up(base, run.run_id)
    ratio, k = ratio_of(slices)
    rates = [s["ticks_per_s"] for s in slices]
    return {
        "benchmark": "growth",
        "command": args.command_line,
        "started_at": started_at.isoformat(timespec="seconds"),
        "run_id": run.run_id,
        "mode": "quick" if args.quick else "full",
        "machine": {**host, "load_avg_at_end": os.getloadavg()},
        "parameters": {
            "rows": args.rows,
            "symbols": args.symbols,
            "seed": args.seed,
            "slice_rows": args.slice_rows,
            "batch_rows": settings.batch.max_rows,
            "partitions": settings.kafka.partitions,
            "idle_seconds": args.idle_seconds,
            "tick_span_hours": args.hours,
            "tick_time_from": start.isoformat(),
            "ticks_per_s_of_tick_time": round(args.rows / span_s, 2),
            "query_runs": args.runs,
            "query_symbol": symbol,
            "query_day": [day[0].isoformat(), day[1].isoformat()],
        },
        "scratch": {"database": settings.timescale.dsn.get_secret_value().rsplit("/", 1)[-1], "migrations": migrations},
        "load": totals,
        "slices": slices,
        "ratio_last_vs_first": ratio,
        "ratio_definition": f"median ticks_per_s of the last {k} slices / median of the first {k}",
        "slowest_slice_vs_first": round(min(rates) / statistics.median(rates[:k]), 3),
        "target": {"bound": TARGET_RATIO, "met": ratio >= TARGET_RATIO},
        "queries_ms": {name: q["wall_ms"] for name, q in queries.items()},
        "queries": queries,
        "size": state,
        "checks": checks + run.checks,
        "services_restarted_during_run": restarted(identities, await service_identities(base)),
        "cleanup": cleanup,
        "duration_s": round(time.monotonic() - started, 1),
    }


# -- RESULTS.md ------------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    m, p, load_, size = result["machine"], result["parameters"], result["load"], result["size"]
    slices = result["slices"]
    k = max(1, min(3, len(slices) // 2))
    first = statistics.median(s["ticks_per_s"] for s in slices[:k])
    met = "met" if result["target"]["met"] else "**not met**"
    lines = [
        f"## {result['started_at'][:16]} · growth of stock_prices to {p['rows']:,} rows · run `{result['run_id']}`",
        "",
        f"Command: `{result['command']}` ({result['duration_s']:.0f} s; the load {load_['wall_s']:.0f} s, "
        f"of which publishing the slices {load_['publish_s']:.0f} s untimed).",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, shared; Python {m['python']}; "
        f"PostgreSQL {m['postgresql']} + TimescaleDB {m['timescaledb']} ({m['timescaledb_license']}), "
        f"shared_buffers {m['shared_buffers']}, synchronous_commit={m['synchronous_commit']}, "
        f"max_wal_size {m['max_wal_size']} ({load_['checkpoints']} checkpoints during the load); Redis {m['redis']}. "
        f"Load average {m['load_avg_at_start'][0]:.2f} at start, {m['load_avg_at_end'][0]:.2f} at end.",
        "",
        f"Setup: scratch database `{result['scratch']['database']}` (dropped afterwards) with the project's "
        f"migrations ({', '.join(result['scratch']['migrations'])}); the consumer, `run_consumer` (COPY, rollups "
        f"`{load_['rollups']}`, exactly-once offsets, Redis quotes), drains each slice from Kafka "
        f"({p['partitions']} partitions) in batches of up to {p['batch_rows']:,}, resuming from its stored offsets; "
        f"{p['rows']:,} synthetic ticks, {p['symbols']} symbols, seed {p['seed']}, {p['tick_span_hours']:g} h of "
        f"tick time ({p['ticks_per_s_of_tick_time']:,} ticks/s of tick time) in time order, each slice published "
        "before its consumer starts (untimed). ticks/s: the slice's rows over the consumer's busy time (first "
        "fetch to the end of the last write); batch ms: the COPY transactions, Redis ms: the quote round trips "
        "(`nexanest_sink_flush_seconds`).",
        "",
        f"| slice | rows in table | ticks/s | vs first {k} | chunks | table MB | batch p50 ms | p99 ms "
        "| Redis ms/flush | retries | load |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, s in enumerate(slices, 1):
        lines.append(
            f"| {i} | {s['rows_in_table']:,} | {_n(s['ticks_per_s'])} | {s['ticks_per_s'] / first:.2f} "
            f"| {s['chunks']} | {_n(s['table_mb'])} | {s['batch_ms_p50']:.1f} | {s['batch_ms_p99']:.1f} "
            f"| {s['redis_quotes_s'] * 1000 / max(1, s['redis_flushes']):.1f} | {s['retries']} "
            f"| {s['load_avg_1m']:.2f} |"
        )
    lines += [
        "",
        f"**Ratio** ({result['ratio_definition']}): **{result['ratio_last_vs_first']:.2f}** "
        f"(slowest slice {result['slowest_slice_vs_first']:.2f} of the first {k}). Target ≥ {TARGET_RATIO}: {met}. "
        f"Overall {_n(load_['ticks_per_s_overall'])} ticks/s.",
        "",
        f"Queries at {size['stock_prices_rows']:,} rows, {size['chunks']} chunks, after ANALYZE (median of "
        f"{p['query_runs']} warm runs, asyncpg without statement cache; symbol {p['query_symbol']}):",
        "",
        "| query | wall ms | planning ms | execution ms | rows | chunks planned / executed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, q in result["queries"].items():
        if "planning_ms" in q:
            lines.append(
                f"| {name} | {q['wall_ms']:.2f} | {q['planning_ms']:.2f} | {q['execution_ms']:.2f} | {q['rows']:,} "
                f"| {q['chunks_planned']} / {q['chunks_executed']} |"
            )
        else:
            lines.append(f"| {name} (`read_quote`) | {q['wall_ms']:.2f} | | | 1 | |")
    lines += [
        "",
        f"Size: stock_prices {size['total_mb']:,} MB ({size['table_bytes'] / 2**20:,.0f} MB heap, "
        f"{size['index_bytes'] / 2**20:,.0f} MB indexes), {size['bytes_per_row']:.0f} bytes a row, "
        f"{size['rows_per_chunk']:,} rows a chunk; ohlcv_1m_rollup {size['ohlcv_1m_rollup_mb']:,} MB; "
        f"the whole database {size['database_mb']:,} MB.",
        "",
        f"Checks: {sum(c['ok'] for c in result['checks'])} of {len(result['checks'])} passed ("
        + "; ".join(f"{c['what']} {c['actual']:,}" for c in result["checks"] if "slice" not in c["what"])
        + "; every slice acknowledged by Kafka and written whole).",
        "",
        "Reading (generated from the figures above): " + reading(result),
    ]
    lines += report.restarted_warning(result)
    return "\n".join(lines) + "\n"


def reading(result: dict[str, Any]) -> str:
    """A few sentences that state what the figures say, computed from them (no judgement is hard-coded)."""
    slices, q, size = result["slices"], result["queries"], result["size"]
    k = max(1, min(3, len(slices) // 2))
    first = statistics.median(s["ticks_per_s"] for s in slices[:k])
    slowest = min(range(len(slices)), key=lambda i: slices[i]["ticks_per_s"])
    half = len(slices) // 2
    early = statistics.median(s["ticks_per_s"] for s in slices[:half] or slices)
    late = statistics.median(s["ticks_per_s"] for s in slices[half:])
    verdict = "meets" if result["target"]["met"] else "misses"
    bounded, unbounded, bars = q["latest_1000_bounded"], q["latest_1000_unbounded"], q["bars_1m_day"]
    text = [
        f"at {size['stock_prices_rows']:,} rows the ingest rate is {result['ratio_last_vs_first']:.2f} of the rate on "
        f"the empty table, so it {verdict} the target of at least 0.9; the median of the second half of the slices is "
        f"{late / early:.2f} of the first half's. The slowest slice (no. {slowest + 1}, at "
        f"{slices[slowest]['rows_in_table']:,} rows, load average {slices[slowest]['load_avg_1m']:.2f}) ran at "
        f"{slices[slowest]['ticks_per_s'] / first:.2f} of the first {k}.",
        f"The last 1,000 ticks of a symbol take {bounded['wall_ms']:.1f} ms with the time bound "
        f"({bounded['chunks_planned']} chunks planned, planning {bounded['planning_ms']:.1f} ms) and "
        f"{unbounded['wall_ms']:.1f} ms without ({unbounded['chunks_planned']} chunks planned, planning "
        f"{unbounded['planning_ms']:.1f} ms, {unbounded['chunks_executed']} executed).",
        f"A day of 1-minute bars ({bars['rows']:,} bars) takes {bars['wall_ms']:.1f} ms from the rollup table; "
        f"the latest quote from Redis {q['latest_quote_redis']['wall_ms']:.2f} ms.",
    ]
    return " ".join(text)


def main() -> int:
    parser = report.parser(__doc__, f"{QUICK_ROWS:,} rows over 4.8 h of tick time (a few minutes)")
    parser.add_argument("--rows", type=int, default=FULL_ROWS, help=f"rows stock_prices grows to ({FULL_ROWS:,})")
    parser.add_argument("--symbols", type=int, default=300, help="symbols in the feed (300)")
    parser.add_argument("--seed", type=int, default=1, help="feed seed (1)")
    parser.add_argument("--slice-rows", type=int, default=0, help="rows per slice (rows/20, at least 5 batches)")
    parser.add_argument("--hours", type=float, default=0, help="tick time the rows span (48; quick 4.8)")
    parser.add_argument("--runs", type=int, default=21, help="timed runs per query (21)")
    parser.add_argument("--idle-seconds", type=float, default=1.5, help="the consumer's until_idle_s per slice")
    args = parser.parse_args()
    configure_logging(LogSettings(level="warning"))
    if args.quick:
        args.rows = QUICK_ROWS
    args.hours = args.hours or FULL_HOURS * args.rows / FULL_ROWS
    batch = load_settings().batch.max_rows
    wanted = args.slice_rows or max(5 * batch, args.rows // 20)  # a slice of 1-2 batches is mostly noise
    args.slice_rows = max(batch, wanted // batch * batch)  # whole consumer batches
    args.command_line = report.command_line(MODULE)
    result = uvloop.run(run_growth(args))
    report.save("growth", result, markdown(result), args)
    return 0 if all(c["ok"] for c in result["checks"]) and not result["cleanup"].get("failed") else 1


if __name__ == "__main__":
    sys.exit(main())
