"""What the pipeline's OHLCV rollups cost: the consumer's ingest rate with the
1m/5m/1h/1d bars maintained in the COPY transaction (``consumer.rollups =
pipeline``, the Apache edition's path) against the same consumer writing no
bars (``off``), side by side in one run.

    python -m benchmarks.micro.rollup_cost [--ticks 200000] [--rounds 2] [--symbols 200]

The same synthetic ticks (one seed) go to a fresh topic per run, each under a
source of its own and ten minutes of tick time apart, so each run's bars are its
own; each round runs both modes, rotating which goes first. ``run_consumer``
drains each topic into a scratch database (``harness.cleanup`` drops it). The
best rate of each mode is kept and the medians are reported too (on a shared
machine a single best run can flatter either side). A rollups run counts only
if its 1m bars add up to exactly the ticks it wrote. Per batch, the sinks' own
flush times (``nexanest_sink_flush_seconds``): ``timescale`` (the transaction:
COPY, and with rollups the bar upsert) and ``redis_bars`` (the bar cache, after
the commit); the Python aggregation before the transaction is in the rate only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import asyncpg
import uvloop

from benchmarks.harness.cleanup import clean_up, prepare_database
from benchmarks.harness.report import print_and_save
from benchmarks.harness.run import Run
from benchmarks.harness.sampling import FlushTimes, percentile
from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.pipeline.edition import detect_edition
from nexanest.pipeline.log import configure_logging
from nexanest.pipeline.settings import LogSettings, load_settings
from nexanest.pipeline.sinks.bar_cache import BarCacheSink
from nexanest.pipeline.sinks.timescale import TimescaleSink
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.producers.publisher import publish_feed

RUN_SPACING_NS = 600 * 10**9
MODES = ("rollups_on", "rollups_off")


async def rollup_cost(args: argparse.Namespace) -> dict[str, object]:
    run = Run(load_settings(), "r")
    base = run.base
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    flushes: dict[str, dict[str, list[float]]] = {mode: {} for mode in MODES}
    # Inside the validator's 7-day window.
    start_ns = time.time_ns() - 5 * 24 * 3600 * 10**9
    try:
        run.base, _ = await prepare_database(base, run.run_id)
        conn = await asyncpg.connect(run.admin_dsn)
        try:
            edition = await detect_edition(conn)
            if edition != "apache":
                raise SystemExit(f"the pipeline's rollups run on the Apache edition; this server is {edition}")
            for round_no in range(args.rounds):
                for mode in MODES[round_no % 2 :] + MODES[: round_no % 2]:
                    name = f"{round_no}-{mode.replace('_', '-')}"
                    rollups = "pipeline" if mode == "rollups_on" else "off"
                    settings = run.settings(name, run.topic(name), rollups=rollups, quote_rebuild_window_s=0)
                    source = run.source(name)
                    config = SyntheticConfig(
                        symbols=args.symbols,
                        rate=100_000,
                        count=args.ticks,
                        seed=7,
                        start_ns=start_ns + len(run.sources) * RUN_SPACING_NS,
                        source=source,
                        paced=False,
                    )
                    await publish_feed(settings.kafka, SyntheticFeed(config), source)
                    with FlushTimes(TimescaleSink.name, BarCacheSink.name) as times:
                        stats = await run_consumer(settings, asyncio.Event(), until_idle_s=2.0)
                    run.check(name, "rows written", args.ticks, stats.written)
                    assert stats.first_batch_at is not None
                    assert stats.last_batch_at is not None
                    rates[mode].append(stats.written / (stats.last_batch_at - stats.first_batch_at))
                    for sink, seconds in times.take().items():
                        flushes[mode].setdefault(sink, []).extend(seconds)
                    if mode == "rollups_on":
                        bars = await conn.fetchval(
                            "SELECT sum(trade_count) FROM ohlcv_1m_rollup WHERE bucket >= $1::timestamptz - "
                            "interval '1 minute' AND bucket <= (SELECT max(time) FROM stock_prices WHERE source = $2)",
                            await conn.fetchval("SELECT min(time) FROM stock_prices WHERE source = $1", source),
                            source,
                        )
                        run.check(name, "ticks in its 1m bars", args.ticks, int(bars or 0))
        finally:
            await conn.close()
    finally:
        cleanup = await clean_up(base, run.run_id)
    best_on, best_off = max(rates["rollups_on"]), max(rates["rollups_off"])
    return {
        "benchmark": "rollup_cost",
        "run_id": run.run_id,
        "machine": {"cores": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
        "edition": edition,
        "ticks_per_run": args.ticks,
        "symbols": args.symbols,
        "batch_max_rows": base.batch.max_rows,
        "rounds": args.rounds,
        "rollups_on_ticks_per_s": round(best_on),
        "rollups_off_ticks_per_s": round(best_off),
        "on_to_off_ratio": round(best_on / best_off, 3),
        "loss_percent": round(100 * (1 - best_on / best_off), 1),
        "median_on_to_off_ratio": round(
            statistics.median(rates["rollups_on"]) / statistics.median(rates["rollups_off"]), 3
        ),
        "flush_ms_per_batch": {
            mode: {
                sink: {
                    "batches": len(s),
                    "median": round(1000 * statistics.median(s), 1),
                    "p90": round(1000 * percentile(s, 90), 1),
                }
                for sink, s in sinks.items()
                if s
            }
            for mode, sinks in flushes.items()
        },
        "all_runs": {k: [round(v) for v in vs] for k, vs in rates.items()},
        "checks": run.checks,
        "cleanup": cleanup,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=200_000, help="ticks per run (default 200000)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each mode (default 2)")
    parser.add_argument("--symbols", type=int, default=200, help="symbols in the feed (default 200)")
    args = parser.parse_args()
    configure_logging(LogSettings(level="warning"))
    print_and_save("rollup_cost", uvloop.run(rollup_cost(args)))
