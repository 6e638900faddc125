"""Binary COPY of ``stock_prices`` rows: asyncpg's record encoding against the sink's encoder.

    python -m benchmarks.micro.copy_encoding [--rows 200000] [--batch-rows 5000] [--symbols 200]

The suite's ``db_ceiling`` by three paths, batch by batch in turn: ``copy_rows``
(``stock_price_row`` + ``copy_records_to_table``), ``copy_buffer`` (the sink's
``StockPriceCopyEncoder``) and ``copy_preencoded`` (the server's share). That
the encoder's rows read back equal is ``tests/pipeline/sinks/test_copy_binary.py``'s.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.harness.run import Run, feed_config, main
from benchmarks.scenarios.limits import db_ceiling

PATHS = ("copy_rows", "copy_buffer", "copy_preencoded")


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    feed = feed_config(args.rows, args.symbols, args.seed, run.source("copy"), time.time_ns() - 3600 * 10**9)
    paths = await db_ceiling(run, feed, PATHS, args.batch_rows)
    records = paths["copy_rows"]
    return {
        "parameters": {"rows": args.rows, "batch_rows": args.batch_rows, "symbols": args.symbols},
        "paths": paths,
        "speedup_vs_records": {k: v["ticks_per_s"] / records["ticks_per_s"] for k, v in paths.items()},
        "client_cpu_vs_records": {
            k: records["client_cpu_us_per_row"] / v["client_cpu_us_per_row"] for k, v in paths.items()
        },
    }


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=200_000, help="rows per path (200,000)")
    parser.add_argument("--batch-rows", type=int, default=5_000, help="rows per COPY transaction (5,000)")


if __name__ == "__main__":
    raise SystemExit(main(__name__))
