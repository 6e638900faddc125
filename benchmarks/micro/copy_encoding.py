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

from benchmarks.harness.run import Run, main
from benchmarks.scenarios.limits import db_ceiling

PATHS = ("copy_rows", "copy_buffer", "copy_preencoded")


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    feed = run.feed(args.rows, run.source("copy"), time.time_ns() - 3600 * 10**9)
    paths = await db_ceiling(run, feed, PATHS, args.batch_rows)
    rate, cpu = (paths["copy_rows"][k] for k in ("ticks_per_s", "client_cpu_us_per_row"))
    speedup = {k: v["ticks_per_s"] / rate for k, v in paths.items()}
    less_cpu = {k: cpu / v["client_cpu_us_per_row"] for k, v in paths.items()}
    return {"paths": paths, "speedup_vs_records": speedup, "client_cpu_vs_records": less_cpu}


OPTIONS = {"rows": (200_000, None, "rows per path"), "batch_rows": (5_000, None, "rows per COPY transaction")}


if __name__ == "__main__":
    raise SystemExit(main(__name__))
