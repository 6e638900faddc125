"""Binary COPY of ``stock_prices`` rows: asyncpg's record encoding against ours, in one run.

    python -m benchmarks.micro.copy_encoding [--rows 200000] [--batch-rows 5000] [--symbols 200] [--seed 1]

The same synthetic ticks go, one transaction per batch as the sink does it,
into four empty copies of ``stock_prices`` (same columns, defaults, indexes and
1 hour chunks), batch by batch in turn so that load from anything else on the
machine falls on all paths alike:

* ``records``: ``stock_price_row`` per tick (``Decimal``, ``datetime``), then
  ``copy_records_to_table`` (asyncpg encodes each value);
* ``buffer``: ``StockPriceCopyEncoder.encode`` straight from the tick's
  integers, then ``copy_to_table(source=<bytearray>, format="binary")``;
* ``chunks``: the same encoder, but ``source`` is an async iterable that
  encodes ``--chunk-rows`` rows per step, so the server can parse a chunk
  while the next one is encoded;
* ``preencoded``: the buffers encoded before timing, only the COPY timed: the
  server's share, the ceiling of any client-side encoding.

Timed per path: from the ticks in hand to the COPY committed (wall), and this
process's CPU time over the same span (the client's share). Before timing, each
path writes one untimed batch (statement preparation, text caches, the chunk).
Afterwards the four tables must hold the same rows (``EXCEPT ALL`` both ways).

Prints one JSON object (ns/row, rows/s, ratios against ``records``) and writes
it to ``benchmarks/results/copy_encoding-<time>.json``. Needs TimescaleDB up with
migrations applied (``make stack-up migrate``); the scratch tables are created as
the owner role and dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

from benchmarks.harness.report import print_and_save
from nexanest.pipeline.settings import load_settings
from nexanest.pipeline.sinks.copy_binary import COPY_HEADER, COPY_TRAILER, StockPriceCopyEncoder
from nexanest.pipeline.sinks.timescale import COLUMNS, stock_price_row
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.schemas.ticks import Tick

Rows = Sequence[tuple[Tick, int, int]]


@dataclass(frozen=True, slots=True)
class Batch:
    rows: Rows
    encoded: bytearray  # for the preencoded path only


Path_ = Callable[[asyncpg.Connection, str, Batch], Awaitable[object]]


def make_rows(config: SyntheticConfig, partitions: int) -> list[tuple[Tick, int, int]]:
    return [(tick, i % partitions, i) for i, tick in enumerate(SyntheticFeed(config).generate())]


async def copy_records(conn: asyncpg.Connection, table: str, batch: Batch) -> object:
    records = [stock_price_row(tick, partition, offset) for tick, partition, offset in batch.rows]
    return await conn.copy_records_to_table(table, records=records, columns=COLUMNS)


def copy_buffer(encoder: StockPriceCopyEncoder) -> Path_:
    async def run(conn: asyncpg.Connection, table: str, batch: Batch) -> object:
        # A bytearray (or memoryview), never bytes: asyncpg takes bytes for a file name.
        return await conn.copy_to_table(table, source=encoder.encode(batch.rows), columns=COLUMNS, format="binary")

    return run


async def copy_preencoded(conn: asyncpg.Connection, table: str, batch: Batch) -> object:
    return await conn.copy_to_table(table, source=batch.encoded, columns=COLUMNS, format="binary")


def copy_chunks(encoder: StockPriceCopyEncoder, chunk_rows: int) -> Path_:
    header, trailer = len(COPY_HEADER), len(COPY_TRAILER)

    async def stream(rows: Rows) -> AsyncIterator[bytes | memoryview]:
        yield COPY_HEADER
        for i in range(0, len(rows), chunk_rows):
            # Each encode is a whole stream: send only its rows.
            yield memoryview(encoder.encode(rows[i : i + chunk_rows]))[header:-trailer]
        yield COPY_TRAILER

    async def run(conn: asyncpg.Connection, table: str, batch: Batch) -> object:
        return await conn.copy_to_table(table, source=stream(batch.rows), columns=COLUMNS, format="binary")

    return run


async def scratch_table(conn: asyncpg.Connection, name: str) -> str:
    await conn.execute(f"CREATE TABLE {name} (LIKE stock_prices INCLUDING DEFAULTS INCLUDING INDEXES)")
    await conn.execute(f"SELECT create_hypertable('{name}', 'time', chunk_time_interval => INTERVAL '1 hour')")
    return name


async def main(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings()
    run_id = uuid.uuid4().hex[:8]
    start_ns = time.time_ns() - 3600 * 10**9
    config = SyntheticConfig(
        symbols=args.symbols,
        rate=100_000,
        count=args.rows,
        seed=args.seed,
        start_ns=start_ns,
        source=f"bench-copy-{run_id}",
        paced=False,
    )
    rows = make_rows(config, settings.kafka.partitions)
    warmup = make_rows(
        SyntheticConfig(
            symbols=args.symbols,
            rate=100_000,
            count=args.batch_rows,
            seed=args.seed + 1,
            start_ns=start_ns,
            source=f"bench-copy-warmup-{run_id}",
            paced=False,
        ),
        settings.kafka.partitions,
    )
    encoder = StockPriceCopyEncoder()
    pre_encoder = StockPriceCopyEncoder()  # for the preencoded path, outside any timing
    batches = [
        Batch(rows[i : i + args.batch_rows], pre_encoder.encode(rows[i : i + args.batch_rows]))
        for i in range(0, len(rows), args.batch_rows)
    ]
    paths: dict[str, Path_] = {
        "records": copy_records,
        "buffer": copy_buffer(encoder),
        "chunks": copy_chunks(encoder, args.chunk_rows),
        "preencoded": copy_preencoded,
    }
    conn = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value())
    tables: dict[str, str] = {}
    try:
        for name in paths:
            tables[name] = await scratch_table(conn, f"bench_copy_{name}_{run_id}")
        for name, path in paths.items():
            async with conn.transaction():
                await path(conn, tables[name], Batch(warmup, pre_encoder.encode(warmup)))
        wall = dict.fromkeys(paths, 0.0)
        cpu = dict.fromkeys(paths, 0.0)
        for i, batch in enumerate(batches):
            # Rotate the order too, so no path always runs right after another.
            names = list(paths)[i % len(paths) :] + list(paths)[: i % len(paths)]
            for name in names:
                wall_0, cpu_0 = time.perf_counter(), time.process_time()
                async with conn.transaction():
                    await paths[name](conn, tables[name], batch)
                wall[name] += time.perf_counter() - wall_0
                cpu[name] += time.process_time() - cpu_0

        counts = {
            name: await conn.fetchval(f"SELECT count(*) FROM {t} WHERE source = $1", config.source)
            for name, t in tables.items()
        }
        cols = ", ".join(COLUMNS)
        differing = {}
        for name in ("buffer", "chunks", "preencoded"):
            a, b = tables["records"], tables[name]
            differing[name] = await conn.fetchval(
                f"SELECT (SELECT count(*) FROM (SELECT {cols} FROM {a} EXCEPT ALL SELECT {cols} FROM {b}) x)"
                f" + (SELECT count(*) FROM (SELECT {cols} FROM {b} EXCEPT ALL SELECT {cols} FROM {a}) y)"
            )
        server = await conn.fetchval("SELECT version()")
    finally:
        for t in tables.values():
            await conn.execute(f"DROP TABLE IF EXISTS {t}")
        await conn.close()

    n = len(rows)
    assert all(c == n for c in counts.values()), f"rows written {counts}, expected {n} each"
    assert all(d == 0 for d in differing.values()), f"tables differ from records: {differing}"

    # Client-side cost alone, outside any I/O: building the records vs encoding.
    started = time.perf_counter()
    for batch in batches:
        [stock_price_row(t, p, o) for t, p, o in batch.rows]
    build_rows_s = time.perf_counter() - started
    started = time.perf_counter()
    for batch in batches:
        encoder.encode(batch.rows)
    encode_s = time.perf_counter() - started

    per_path = {
        name: {
            "ns_per_row": round(wall[name] / n * 1e9),
            "rows_per_s": round(n / wall[name]),
            "client_cpu_ns_per_row": round(cpu[name] / n * 1e9),
            "seconds": round(wall[name], 3),
        }
        for name in paths
    }
    return {
        "benchmark": "copy_encoding",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()},
        "server": server,
        "asyncpg": asyncpg.__version__,
        "rows": n,
        "symbols": args.symbols,
        "batch_rows": args.batch_rows,
        "chunk_rows": args.chunk_rows,
        "paths": per_path,
        "client_only_ns_per_row": {
            "stock_price_row (records path, before asyncpg encodes)": round(build_rows_s / n * 1e9),
            "StockPriceCopyEncoder.encode": round(encode_s / n * 1e9),
        },
        "speedup_vs_records": {name: round(wall["records"] / wall[name], 2) for name in paths if name != "records"},
        "client_cpu_ratio_vs_records": {
            name: round(cpu["records"] / cpu[name], 2) for name in paths if name != "records"
        },
        "rows_checked_equal": n,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="rows per path (default 200000)")
    parser.add_argument("--batch-rows", type=int, default=5_000, help="rows per COPY transaction (default 5000)")
    parser.add_argument("--chunk-rows", type=int, default=1_000, help="rows per chunk of the chunks path")
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None, help="JSON file (default benchmarks/results/<time>.json)")
    args = parser.parse_args()
    result = uvloop.run(main(args))  # the event loop the `nexanest` command uses
    print_and_save("copy_encoding", result, args.output)
