"""What the pipeline's OHLCV rollups cost: the consumer's rate with the 1m/5m/1h/1d bars
kept in the COPY transaction (``consumer.rollups = pipeline``) against none (``off``).

    python -m benchmarks.micro.rollup_cost [--ticks 200000] [--rounds 2] [--symbols 200]

Each round runs both modes (``run_consumer`` over a fresh topic each, ten
minutes of tick time apart), rotating which goes first; best and median rates,
and the sinks' own flush times. A rollups run counts only if its 1m bars add up
to its ticks.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from benchmarks.harness.run import Run, busy_s, main, rotated
from benchmarks.harness.sampling import observed, percentile
from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.pipeline import metrics
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
            at_ns = start_ns + (len(run.sources) + 1) * 600 * 10**9
            settings, source = await run.backlog(name, args.ticks, at_ns, rollups=rollups, quote_rebuild_window_s=0)
            sinks = (metrics.FLUSH_SECONDS.labels(TimescaleSink.name), metrics.FLUSH_SECONDS.labels(BarCacheSink.name))
            with observed(*sinks) as ((_, copies), (_, bars)):
                stats = await run_consumer(settings, asyncio.Event(), until_idle_s=2.0)
            run.check(name, "rows written", args.ticks, stats.written)
            rates[mode].append(stats.written / busy_s(stats))
            flushes[mode].setdefault(TimescaleSink.name, []).extend(copies)
            flushes[mode].setdefault(BarCacheSink.name, []).extend(bars)
            if mode == "rollups_on":
                run.check(name, "ticks in its 1m bars", args.ticks, int(await run.sql(_BARS, source) or 0))
    on, off = max(rates["rollups_on"]), max(rates["rollups_off"])
    medians = statistics.median(rates["rollups_on"]) / statistics.median(rates["rollups_off"])
    out = {"rollups_on_ticks_per_s": on, "rollups_off_ticks_per_s": off, "all_runs": rates}
    out |= {"on_to_off_ratio": on / off, "median_on_to_off_ratio": medians}
    ms = {
        m: {k: {"median": 1000 * statistics.median(s), "p90": 1000 * percentile(s, 90)} for k, s in f.items() if s}
        for m, f in flushes.items()
    }
    return out | {"flush_ms_per_batch": ms}


OPTIONS = {"ticks": (200_000, None, "ticks per run"), "rounds": (2, None, "runs of each mode")}
SEED = 7  # the seed of its recorded runs


if __name__ == "__main__":
    raise SystemExit(main(__name__))
