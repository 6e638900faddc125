"""Binary COPY of ``stock_prices`` rows: asyncpg's record encoding against the sink's encoder, in one run.

    python -m benchmarks.micro.copy_encoding [--rows 200000] [--batch-rows 5000] [--symbols 200]

The same synthetic ticks go, one transaction per batch as the sink does it,
into three empty copies of ``stock_prices``, batch by batch in rotating order:
``records`` (``stock_price_row`` per tick, then ``copy_records_to_table``:
asyncpg encodes each ``Decimal`` and ``datetime``), ``buffer``
(``StockPriceCopyEncoder.encode`` straight from the tick's integers, then
``copy_to_table``) and ``preencoded`` (buffers encoded before timing: the
server's share, the ceiling of any client-side encoding). Timed per path: wall
time from the ticks in hand to the COPY committed, and this process's CPU time
(the client's share); the first batch of each is a warm-up. Afterwards the
three tables must hold the same rows (``EXCEPT ALL`` both ways).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import asyncpg

from benchmarks.harness.run import Run, Scenario, as_json, feed_config, main, rotated
from nexanest.pipeline.sinks.copy_binary import StockPriceCopyEncoder
from nexanest.pipeline.sinks.timescale import COLUMNS, stock_price_row
from nexanest.producers.feeds.synthetic import SyntheticFeed


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    p = run.base.kafka.partitions
    feed = feed_config(args.rows, args.symbols, args.seed, run.source("copy"), time.time_ns() - 3600 * 10**9)
    rows = [(t, i % p, i) for i, t in enumerate(SyntheticFeed(feed).generate())]
    batches = [rows[i : i + args.batch_rows] for i in range(0, len(rows), args.batch_rows)]
    encoder = StockPriceCopyEncoder()
    encoded = [StockPriceCopyEncoder().encode(b) for b in batches]  # for preencoded, outside any timing
    sources = ("records", "buffer", "preencoded")
    wall, cpu = dict.fromkeys(sources, 0.0), dict.fromkeys(sources, 0.0)
    conn = await asyncpg.connect(run.admin_dsn)
    try:
        tables = {name: await run.scratch_table(conn, name) for name in sources}
        for i in range(len(batches)):
            for name in rotated(sources, i):
                wall_0, cpu_0 = time.perf_counter(), time.process_time()
                async with conn.transaction():
                    if name == "records":
                        records = [stock_price_row(*r) for r in batches[i]]
                        await conn.copy_records_to_table(tables[name], records=records, columns=COLUMNS)
                    else:  # a bytearray: asyncpg takes bytes for a file name
                        data = encoder.encode(batches[i]) if name == "buffer" else encoded[i]
                        await conn.copy_to_table(tables[name], source=data, columns=COLUMNS, format="binary")
                if i:  # the first batch prepares statements and creates the chunk: untimed
                    wall[name] += time.perf_counter() - wall_0
                    cpu[name] += time.process_time() - cpu_0
        columns = ", ".join(COLUMNS)
        for name in ("buffer", "preencoded"):
            a, b = tables["records"], tables[name]
            differ = await conn.fetchval(
                f"SELECT (SELECT count(*) FROM (SELECT {columns} FROM {a} EXCEPT ALL SELECT {columns} FROM {b}) x)"
                f" + (SELECT count(*) FROM (SELECT {columns} FROM {b} EXCEPT ALL SELECT {columns} FROM {a}) y)"
            )
            run.check(name, "rows differing from records", 0, differ)
            run.check(name, "rows", len(rows), await conn.fetchval(f"SELECT count(*) FROM {b}"))
    finally:
        await conn.close()
    timed = len(rows) - len(batches[0])
    started = time.perf_counter()
    for batch in batches:
        [stock_price_row(*r) for r in batch]
    build_s, started = time.perf_counter() - started, time.perf_counter()
    for batch in batches:
        encoder.encode(batch)
    encode_s = time.perf_counter() - started
    return {
        "parameters": {
            "rows": args.rows,
            "batch_rows": args.batch_rows,
            "symbols": args.symbols,
            "asyncpg": asyncpg.__version__,
        },
        "paths": {
            name: {
                "ns_per_row": wall[name] / timed * 1e9,
                "rows_per_s": timed / wall[name],
                "client_cpu_ns_per_row": cpu[name] / timed * 1e9,
            }
            for name in sources
        },
        "client_only_ns_per_row": {"stock_price_row": build_s / len(rows) * 1e9, "encoder": encode_s / len(rows) * 1e9},
        "speedup_vs_records": {name: wall["records"] / wall[name] for name in ("buffer", "preencoded")},
        "client_cpu_ratio_vs_records": {name: cpu["records"] / cpu[name] for name in ("buffer", "preencoded")},
    }


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=200_000, help="rows per path (200,000)")
    parser.add_argument("--batch-rows", type=int, default=5_000, help="rows per COPY transaction (5,000)")


COPY = Scenario(
    "copy_encoding",
    "c",
    "benchmarks.micro.copy_encoding",
    __doc__,
    "(no effect)",
    options,
    measure,
    as_json,
    lambda r: all(c["ok"] for c in r["checks"]),
)

if __name__ == "__main__":
    raise SystemExit(main(COPY))
