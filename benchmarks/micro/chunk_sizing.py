"""Chunk interval of ``stock_prices``: insert rate, size and query speed per interval, in one run.

    python -m benchmarks.micro.chunk_sizing [--ticks 2000000] [--hours 48] [--intervals "15 minutes,1 hour,1 day"]

Per interval an empty copy of ``stock_prices`` with that chunk interval; the same
ticks (in time order over ``--hours``) go into every table by binary COPY, each
batch into all tables in rotating order (only the COPYs timed, the last 10%
apart). Then chunks, sizes, and the users' queries (``time_queries``).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from benchmarks.harness.run import Run, copy_in_turns, main, time_queries
from nexanest.producers.feeds.synthetic import SyntheticFeed

QUERIES = {
    "latest_1000": "SELECT * FROM {t} WHERE symbol = $1 ORDER BY time DESC LIMIT 1000",
    "symbol_1h": "SELECT * FROM {t} WHERE symbol = $1 AND time >= $2 AND time < $2 + INTERVAL '1 hour' ORDER BY time",
    "symbol_1d": "SELECT * FROM {t} WHERE symbol = $1 AND time >= $2 AND time < $2 + INTERVAL '1 day' ORDER BY time",
    "bucket_1m_1d": (
        "SELECT time_bucket('1 minute', time) AS bucket, first(price, time), max(price), min(price),"
        " last(price, time), sum(size), count(*) FROM {t} WHERE symbol = $1 AND time >= $2"
        " AND time < $2 + INTERVAL '1 day' GROUP BY bucket ORDER BY bucket"
    ),
    "window_5m": "SELECT * FROM {t} WHERE time >= $1 AND time < $1 + INTERVAL '5 minutes'",
}


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    intervals = [s.strip() for s in args.intervals.split(",") if s.strip()]
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=args.hours)
    start_ns, rate = int(start.timestamp()) * 10**9, args.ticks / args.hours / 3600
    feed = run.feed(args.ticks, run.source("chunks"), start_ns, rate)
    ticks = list(SyntheticFeed(feed).generate())
    tables = {iv: f"bench_{run.run_id}_{i}" for i, iv in enumerate(intervals)}
    tail_from = (len(ticks) - len(ticks) // 10) // args.batch_rows  # the last 10% of batches
    conn = await asyncpg.connect(run.admin_dsn, statement_cache_size=0)
    try:
        for iv, t in tables.items():
            await conn.execute(f"CREATE TABLE {t} (LIKE stock_prices INCLUDING DEFAULTS INCLUDING INDEXES)")
            await conn.execute(f"SELECT create_hypertable('{t}', 'time', chunk_time_interval => INTERVAL '{iv}')")
        copy_s = await copy_in_turns(conn, tables, ticks, args.batch_rows, run.base.kafka.partitions)
        symbol, mid = "SYN0007", start + timedelta(hours=args.hours / 2)
        end = datetime.fromtimestamp(ticks[-1].ts_ns / 1e9, UTC).replace(minute=0, second=0, microsecond=0)
        params: dict[str, tuple[Any, ...]] = {
            "latest_1000": (symbol,),
            "symbol_1h": (symbol, mid.replace(minute=0)),
            "symbol_1d": (symbol, end - timedelta(days=1)),
            "bucket_1m_1d": (symbol, end - timedelta(days=1)),
            "window_5m": (mid + timedelta(minutes=17),),
        }
        out: dict[str, dict[str, Any]] = {}
        for iv, t in tables.items():
            await conn.execute(f"ANALYZE {t}")
            size = await conn.fetchrow(f"SELECT * FROM hypertable_detailed_size('{t}')")
            chunks = await conn.fetchval("SELECT count(*) FROM show_chunks($1::regclass)", t)
            run.check(iv, "rows", len(ticks), await conn.fetchval(f"SELECT count(*) FROM {t}"))
            out[iv] = {"chunks": chunks, "rows_per_chunk": len(ticks) / chunks, "total_mb": size["total_bytes"] / 2**20}
            out[iv] |= {"index_share": size["index_bytes"] / size["total_bytes"]}
            out[iv] |= {"ticks_per_s": len(ticks) / sum(copy_s[iv])}
            tail_rows = len(ticks) - tail_from * args.batch_rows
            out[iv] |= {"ticks_per_s_last_10pct": tail_rows / sum(copy_s[iv][tail_from:])}
        queries = {f"{iv}|{q}": (sql.format(t=tables[iv]), params[q]) for q, sql in QUERIES.items() for iv in intervals}
        for name, timed in (await time_queries(conn, queries, args.runs)).items():
            out[name.split("|")[0]][name.split("|")[1]] = timed
    finally:
        await conn.close()
    parameters = {"ticks_per_s_of_tick_time": feed.rate, "from": start.isoformat()}
    return {"parameters": parameters, "intervals": out}


OPTIONS = {
    "ticks": (2_000_000, None, "ticks per table"),
    "hours": (48.0, None, "tick time the ticks span"),
    "intervals": ("15 minutes,1 hour,6 hours,1 day", None, "comma-separated intervals"),
    "batch_rows": (5_000, None, "rows per COPY transaction"),
    "runs": (7, None, "timed runs per query and table"),
}


if __name__ == "__main__":
    raise SystemExit(main(__name__))
