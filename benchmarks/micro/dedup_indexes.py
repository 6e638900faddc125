"""``stock_prices`` with three indexes against one: COPY rate, and every promised read, in one run (issue 15).

    python -m benchmarks.micro.dedup_indexes [--ticks 1000000] [--hours 2] [--tables three,one,one_brin]

Tables, each an empty hypertable shaped like ``stock_prices`` (1-hour chunks):

* ``three``: the schema before migration 0008, the hypertable's default (time DESC)
  index, (symbol, time DESC) and the unique (source, source_seq, time);
* ``one``: (symbol, time DESC) only, as after 0008;
* ``one_brin``: ``one`` plus a BRIN index on time (an option for time-window reads,
  not in the schema).

The same ticks (spread over ``--hours`` up to now, so "the last minute" has rows) go
into every table by binary COPY, each batch into all tables in rotating order
(only the COPYs timed). Then each query the README and the services promise runs
on every table (``time_queries``: median wall and EXPLAIN ANALYZE times), and the
plan's access path of each is recorded (which index, or a sequential scan).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from benchmarks.harness.run import Run, copy_in_turns, main, time_queries
from nexanest.pipeline.db import ns_to_datetime
from nexanest.pipeline.sinks.timescale import STORED_ALREADY
from nexanest.producers.feeds.synthetic import SyntheticFeed

DDL = {
    "three": [
        "SELECT create_hypertable('{t}', 'time', chunk_time_interval => INTERVAL '1 hour')",
        "CREATE INDEX ON {t} (symbol, time DESC)",
        "CREATE UNIQUE INDEX ON {t} (source, source_seq, time)",
    ],
    "one": [
        "SELECT create_hypertable('{t}', 'time', chunk_time_interval => INTERVAL '1 hour',"
        " create_default_indexes => false)",
        "CREATE INDEX ON {t} (symbol, time DESC)",
    ],
    "one_brin": [
        "SELECT create_hypertable('{t}', 'time', chunk_time_interval => INTERVAL '1 hour',"
        " create_default_indexes => false)",
        "CREATE INDEX ON {t} (symbol, time DESC)",
        "CREATE INDEX ON {t} USING brin (time)",
    ],
}

_COLS = "time, price, size, bid, ask, exchange, source, source_seq"
#: name -> (SQL with {t}, where it comes from). Parameters are filled in by ``params``.
QUERIES = {
    "latest_1000": ("SELECT * FROM {t} WHERE symbol = $1 ORDER BY time DESC LIMIT 1000", "README, market data"),
    "latest_1000_bounded": (
        "SELECT * FROM {t} WHERE symbol = $1 AND time > now() - INTERVAL '1 day' ORDER BY time DESC LIMIT 1000",
        "README (give latest N a time bound)",
    ),
    "ticks_page": (
        f"SELECT {_COLS} FROM {{t}} WHERE symbol = $1 AND time >= $2 AND time < $3"
        " AND (time, source, source_seq) > ($2, $4, $5) ORDER BY time, source, source_seq LIMIT 1000",
        "market_data/repository.py _TICKS_AFTER",
    ),
    "bars_1m_hour_symbol": (
        "SELECT time_bucket('1 minute', time) AS b, first(price, time), max(price), min(price), last(price, time),"
        " sum(size), count(*) FROM {t} WHERE symbol = $1 AND time >= $2 AND time < $3 GROUP BY b ORDER BY b",
        "bars repair --symbol, GROUP BY check",
    ),
    "spread_sum": (
        "SELECT coalesce(sum(ask - bid), 0), count(*) FROM {t} WHERE symbol = $1 AND time >= $2 AND time < $3"
        " AND bid IS NOT NULL AND ask IS NOT NULL",
        "analytics/series.py",
    ),
    "latest_per_symbol_5m": (
        "SELECT DISTINCT ON (symbol) symbol, time, price, size, bid, ask, exchange, source, source_seq FROM {t}"
        " WHERE time > now() - make_interval(secs => 300) ORDER BY symbol, time DESC, source_seq DESC",
        "quote_rebuild.py (start-up)",
    ),
    "latest_price_lateral": (
        "SELECT s.symbol, x.time FROM unnest($1::text[]) AS s(symbol) CROSS JOIN LATERAL ("
        " SELECT time, source_seq, price FROM {t} p WHERE p.symbol = s.symbol AND p.time > now() - make_interval(secs"
        " => 3600) ORDER BY time DESC, source_seq DESC LIMIT 1) AS x",
        "sinks/indices.py seed",
    ),
    "status_rate_60s": (
        "SELECT count(*) FROM {t} WHERE time > now() - interval '60 seconds' AND time <= now()",
        "ops/status_pipeline.py",
    ),
    "status_newest_by_partition": (
        "SELECT kafka_partition, max(time) FROM {t} WHERE time > now() - interval '300 seconds' AND time <= now()"
        " GROUP BY kafka_partition",
        "ops/status_pipeline.py",
    ),
    "window_5m": ("SELECT * FROM {t} WHERE time >= $1 AND time < $1 + INTERVAL '5 minutes'", "dashboards, windows"),
    "verify_5m": (
        "SELECT kafka_partition, source, source_seq, symbol, price FROM {t}"
        " WHERE time >= $1 AND time < $1 + INTERVAL '5 minutes' AND source = ANY($2::text[])",
        "ops/verify.py (reads every row of the window anyway)",
    ),
    "lookup_1000_resent": (
        STORED_ALREADY.replace("{table}", "{t}"),
        "sinks/timescale.py write_checked (re-sends, DLQ replays)",
    ),
}


async def access_paths(conn: asyncpg.Connection, sql: str, params: tuple[Any, ...]) -> list[str]:
    """The distinct scan nodes of the plan: node type and index (if any), chunks folded."""
    doc = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *params))[0]
    seen: set[str] = set()
    nodes = [doc["Plan"]]
    while nodes:
        node = nodes.pop()
        nodes += node.get("Plans", [])
        kind = node["Node Type"]
        if "Scan" in kind and kind not in ("Subquery Scan", "Function Scan", "Values Scan"):
            index = node.get("Index Name", "")
            seen.add(f"{kind} {index.split('_chunk_')[-1]}".strip() if index else kind)
    return sorted(seen)


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    names = [n.strip() for n in args.tables.split(",") if n.strip()]
    end = datetime.now(UTC)
    start = end - timedelta(hours=args.hours)
    start_ns, rate = int(start.timestamp() * 1e9), args.ticks / args.hours / 3600
    feed = run.feed(args.ticks, run.source("idx"), start_ns, rate)
    ticks = list(SyntheticFeed(feed).generate())
    tables = {n: f"bench_{run.run_id}_{n}" for n in names}
    conn = await asyncpg.connect(run.admin_dsn, statement_cache_size=0)
    try:
        for n, t in tables.items():
            await conn.execute(f"CREATE TABLE {t} (LIKE stock_prices INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
            for ddl in DDL[n]:
                await conn.execute(ddl.format(t=t))
        copy_s = await copy_in_turns(conn, tables, ticks, args.batch_rows, run.base.kafka.partitions)
        symbol, mid = "SYN0007", start + timedelta(hours=args.hours / 2)
        sample = ticks[len(ticks) // 2 : len(ticks) // 2 + 1000]
        params: dict[str, tuple[Any, ...]] = {
            "latest_1000": (symbol,),
            "latest_1000_bounded": (symbol,),
            "ticks_page": (symbol, mid, mid + timedelta(hours=1), "", 0),
            "bars_1m_hour_symbol": (symbol, mid, mid + timedelta(hours=1)),
            "spread_sum": (symbol, mid, mid + timedelta(hours=1)),
            "latest_per_symbol_5m": (),
            "latest_price_lateral": ([f"SYN{i:04d}" for i in range(0, args.symbols, 10)],),
            "status_rate_60s": (),
            "status_newest_by_partition": (),
            "window_5m": (mid,),
            "verify_5m": (mid, [feed.source]),
            "lookup_1000_resent": (
                [t.symbol for t in sample],
                [ns_to_datetime(t.ts_ns) for t in sample],
                [t.source for t in sample],
                [t.seq for t in sample],
            ),
        }
        out: dict[str, dict[str, Any]] = {}
        for n, t in tables.items():
            await conn.execute(f"ANALYZE {t}")
            size = await conn.fetchrow(f"SELECT * FROM hypertable_detailed_size('{t}')")
            run.check(n, "rows", len(ticks), await conn.fetchval(f"SELECT count(*) FROM {t}"))
            out[n] = {"ticks_per_s": len(ticks) / sum(copy_s[n]), "total_mb": size["total_bytes"] / 2**20}
            out[n] |= {"index_mb": size["index_bytes"] / 2**20}
        queries = {f"{n}|{q}": (sql.format(t=tables[n]), params[q]) for q, (sql, _) in QUERIES.items() for n in names}
        for name, timed in (await time_queries(conn, queries, args.runs)).items():
            n, q = name.split("|")
            sql, qp = queries[name]
            out[n][q] = timed | {"plan": await access_paths(conn, sql, qp)}
        lookup = await conn.fetch(queries[f"{names[-1]}|lookup_1000_resent"][0], *params["lookup_1000_resent"])
        run.check("lookup_1000_resent", "re-sent ticks found stored", len(sample), len(lookup))
    finally:
        await conn.close()
    three = out.get("three", {}).get("ticks_per_s")
    ratios = {f"copy_{n}_vs_three": out[n]["ticks_per_s"] / three for n in names} if three else {}
    result = {"tables": out, "ratios": ratios, "sources": {q: s for q, (_, s) in QUERIES.items()}}
    return result | {"parameters": {"from": start.isoformat(), "to": end.isoformat()}}


OPTIONS = {
    "ticks": (1_000_000, None, "ticks per table"),
    "hours": (2.0, None, "tick time the ticks span, up to now"),
    "tables": ("three,one,one_brin", None, "comma-separated: three,one,one_brin"),
    "batch_rows": (5_000, None, "rows per COPY transaction"),
    "runs": (5, None, "timed runs per query and table"),
}


if __name__ == "__main__":
    raise SystemExit(main(__name__))
