"""What exactly-once costs: ingest rate with offsets-in-the-transaction and fencing,
against plain commit-after-write (at-least-once), side by side in one run.

    python benchmarks/exactly_once_cost.py [--ticks 200000] [--rounds 2]

The same synthetic ticks are published to two fresh topics (under two source
names, so the uniqueness rule never fires). Each round consumes one topic with
exactly-once on and the other with it off, alternating which goes first, on
topics of their own; the best rate of each mode is kept. Prints JSON with both
rates and the relative loss.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

import asyncpg
import uvloop
from report import print_and_save  # benchmarks/report.py (scripts run from this folder)

from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.pipeline.log import configure_logging
from nexanest.pipeline.settings import LogSettings, Settings, load_settings, namespaced
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.producers.publisher import publish_feed


def run_settings(base: Settings, name: str, *, exactly_once: bool) -> Settings:
    return namespaced(base, f"bench.{name}", exactly_once=exactly_once, quote_rebuild_window_s=0)


async def publish(settings: Settings, config: SyntheticConfig) -> None:
    await publish_feed(settings.kafka, SyntheticFeed(config), config.source)


async def ingest_rate(settings: Settings, expected: int) -> float:
    stats = await run_consumer(settings, asyncio.Event(), until_idle_s=2.0)
    if stats.written != expected or stats.first_batch_at is None or stats.last_batch_at is None:
        raise RuntimeError(f"consumer wrote {stats.written} of {expected} rows")
    return stats.written / (stats.last_batch_at - stats.first_batch_at)


async def main(args: argparse.Namespace) -> dict[str, object]:
    base = load_settings()
    run_id = uuid.uuid4().hex[:8]
    start_ns = time.time_ns() - 3600 * 10**9
    rates: dict[str, list[float]] = {"exactly_once": [], "at_least_once": []}
    sources: list[str] = []
    for round_no in range(args.rounds):
        order = ["exactly_once", "at_least_once"] if round_no % 2 == 0 else ["at_least_once", "exactly_once"]
        for mode in order:
            name = f"eo-{run_id}-{round_no}-{mode}"
            settings = run_settings(base, name, exactly_once=mode == "exactly_once")
            config = SyntheticConfig(
                symbols=200, rate=100_000, count=args.ticks, seed=7, start_ns=start_ns, source=name, paced=False
            )
            sources.append(name)
            await publish(settings, config)
            rates[mode].append(await ingest_rate(settings, args.ticks))
    admin = await asyncpg.connect(base.timescale.admin_dsn.get_secret_value())
    try:
        await admin.execute("DELETE FROM stock_prices WHERE source = ANY($1::text[])", sources)
    finally:
        await admin.close()
    best_on, best_off = max(rates["exactly_once"]), max(rates["at_least_once"])
    return {
        "benchmark": "exactly_once_cost",
        "machine": {"cores": os.cpu_count()},
        "ticks_per_run": args.ticks,
        "rounds": args.rounds,
        "exactly_once_ticks_per_s": round(best_on),
        "at_least_once_ticks_per_s": round(best_off),
        "exactly_once_to_at_least_once_ratio": round(best_on / best_off, 3),
        "loss_percent": round(100 * (1 - best_on / best_off), 1),
        "all_runs": {k: [round(v) for v in vs] for k, vs in rates.items()},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=200_000, help="ticks per run (default 200000)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each mode (default 2)")
    args = parser.parse_args()
    configure_logging(LogSettings(level="warning"))
    result = uvloop.run(main(args))
    print_and_save("exactly_once_cost", result, None)
