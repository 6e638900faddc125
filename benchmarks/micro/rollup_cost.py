"""What the pipeline's OHLCV rollups cost: the consumer's ingest rate with the
1m/5m/1h/1d bars maintained in the COPY transaction (``consumer.rollups =
pipeline``, the Apache edition's path) against the same consumer writing no bars
(``off``), side by side in one run.

    python -m benchmarks.micro.rollup_cost [--ticks 200000] [--rounds 2] [--symbols 200]

The same ticks go to a fresh topic per run, each under a source of its own and
ten minutes of tick time apart (each run's bars are its own); each round runs
both modes, rotating which goes first; ``run_consumer`` drains each topic. The
best rate of each mode is kept and the medians reported too. A rollups run
counts only if its 1m bars add up to exactly its ticks. Per batch, the sinks'
own flush times: ``timescale`` (the transaction) and ``redis_bars`` (the bar cache).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from benchmarks.harness.run import Run, busy_s, feed_config, main, publish, rotated
from benchmarks.harness.sampling import FlushTimes, percentile
from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.pipeline.sinks.bar_cache import BarCacheSink
from nexanest.pipeline.sinks.timescale import TimescaleSink

_BARS = (
    "SELECT sum(trade_count) FROM ohlcv_1m_rollup WHERE bucket >= (SELECT min(time) FROM stock_prices"
    " WHERE source = $1) - interval '1 minute' AND bucket <= (SELECT max(time) FROM stock_prices WHERE source = $1)"
)


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"rollups_on": [], "rollups_off": []}
    flushes: dict[str, dict[str, list[float]]] = {mode: {} for mode in rates}
    start_ns = time.time_ns() - 5 * 24 * 3600 * 10**9  # inside the validator's 7-day window
    for round_no in range(args.rounds):
        for mode in rotated(list(rates), round_no):
            name = f"{round_no}-{mode.replace('_', '-')}"
            rollups = "pipeline" if mode == "rollups_on" else "off"
            settings = run.settings(name, run.topic(name), rollups=rollups, quote_rebuild_window_s=0)
            source = run.source(name)
            feed = feed_config(args.ticks, args.symbols, 7, source, start_ns + len(run.sources) * 600 * 10**9)
            await publish(settings.kafka, feed, source)
            with FlushTimes(TimescaleSink.name, BarCacheSink.name) as times:
                stats = await run_consumer(settings, asyncio.Event(), until_idle_s=2.0)
            run.check(name, "rows written", args.ticks, stats.written)
            rates[mode].append(stats.written / busy_s(stats))
            for sink, seconds in times.take().items():
                flushes[mode].setdefault(sink, []).extend(seconds)
            if mode == "rollups_on":
                run.check(name, "ticks in its 1m bars", args.ticks, int(await run.sql(_BARS, source) or 0))
    on, off = max(rates["rollups_on"]), max(rates["rollups_off"])
    return {
        "parameters": {
            "ticks": args.ticks,
            "symbols": args.symbols,
            "rounds": args.rounds,
            "batch": run.base.batch.max_rows,
        },
        "rollups_on_ticks_per_s": on,
        "rollups_off_ticks_per_s": off,
        "on_to_off_ratio": on / off,
        "median_on_to_off_ratio": statistics.median(rates["rollups_on"]) / statistics.median(rates["rollups_off"]),
        "flush_ms_per_batch": {
            mode: {
                sink: {"median": 1000 * statistics.median(s), "p90": 1000 * percentile(s, 90)}
                for sink, s in sinks.items()
                if s
            }
            for mode, sinks in flushes.items()
        },
        "all_runs": rates,
    }


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ticks", type=int, default=200_000, help="ticks per run (200,000)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each mode (2)")


if __name__ == "__main__":
    raise SystemExit(main(__name__))
