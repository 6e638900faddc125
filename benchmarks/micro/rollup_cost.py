"""What the pipeline's OHLCV rollups cost: ingest rate with the 1m/5m/1h/1d
bars maintained in the COPY transaction (``consumer.rollups = pipeline``, the
Apache edition's path) against the same consumer writing no bars (``off``),
side by side in one run.

    python benchmarks/rollup_cost.py [--ticks 200000] [--rounds 2] [--symbols 200]

(The four-statement form that ``upsert_bars`` replaced was measured here as a
third mode until it left the pipeline; it survives only as a test reference,
``tests/pipeline/sinks/ohlcv_reference.py``.) For every rollups run the time each batch spent on
rollups is recorded too (``rollup_ms_per_batch``: median and p90 over all
batches of that mode) in its three parts: ``aggregate`` (1m bars from the
ticks, in Python, before the transaction), ``upsert`` (inside it) and
``bar_cache`` (the Redis bar cache's flush, after the commit).

The same synthetic ticks (one seed) are published to a fresh topic per run,
under a source name of its own and ten minutes of tick time apart, so the
uniqueness rule never fires and each run's bars are its own. Each round
consumes one topic per mode, rotating which
goes first; the best rate of each mode is kept (the approach of
``exactly_once_cost.py``), and the medians are reported too (on a shared
machine a single best run can flatter either side). A rollups run only counts if its 1m bars add up to
exactly the ticks it wrote. Prints JSON with both rates and the relative loss,
also written to ``benchmarks/results/``.

Everything it writes is removed afterwards: its ticks, then its bars (by
``repair`` of the days it touched, which recomputes them from the ticks left),
its offsets, quotes and topics. Needs the local stack and ``nexanest migrate``
on the Apache edition.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
import redis.asyncio as redis
import uvloop
from aiokafka.admin import AIOKafkaAdminClient
from report import print_and_save  # benchmarks/report.py (scripts run from this folder)

from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.ops.bars_repair import repair
from nexanest.pipeline.db import ns_to_datetime
from nexanest.pipeline.edition import detect_edition
from nexanest.pipeline.log import configure_logging
from nexanest.pipeline.settings import LogSettings, Settings, load_settings, namespaced
from nexanest.pipeline.sinks import timescale as timescale_sink
from nexanest.pipeline.sinks.bar_cache import BarCacheSink
from nexanest.pipeline.sinks.ohlcv import Bars, StoredBar, upsert_bars
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.producers.publisher import publish_feed
from nexanest.schemas.ticks import Tick

RUN_SPACING_NS = 600 * 10**9

Upsert = Callable[[asyncpg.Connection, Bars], Awaitable[list[StoredBar]]]
#: The rollup modes: which upsert the consumer's TimescaleSink calls.
FORMS: dict[str, Upsert] = {"rollups_on": upsert_bars}


class RollupTimers:
    """Per batch, the three costs of rollups on, while installed: the 1m
    aggregation in Python (before the transaction; the sink may aggregate a batch
    in several calls, summed), the upsert (inside it) and the Redis bar cache's
    flush (after the commit). Patches the names the sinks call (``upsert`` stands
    in for ``upsert_bars``), and puts them back on exit."""

    def __init__(self, upsert: Upsert) -> None:
        self._upsert = upsert
        self._aggregating = 0.0
        self.aggregate: list[float] = []
        self.upsert: list[float] = []
        self.bar_cache: list[float] = []

    async def timed_upsert(self, conn: asyncpg.Connection, minute: Bars) -> list[StoredBar]:
        # The aggregation calls since the last upsert were this batch's.
        self.aggregate.append(self._aggregating)
        self._aggregating = 0.0
        started = time.perf_counter()
        try:
            return await self._upsert(conn, minute)
        finally:
            self.upsert.append(time.perf_counter() - started)

    def __enter__(self) -> RollupTimers:
        aggregate, flush = timescale_sink.minute_bars_of_ticks, BarCacheSink.flush
        self._restore = (aggregate, flush)

        def timed_aggregate(entries: list[tuple[Tick, int, int]]) -> Bars:
            started = time.perf_counter()
            try:
                return aggregate(entries)
            finally:
                self._aggregating += time.perf_counter() - started

        async def timed_flush(sink: BarCacheSink) -> int:
            started = time.perf_counter()
            try:
                return await flush(sink)
            finally:
                self.bar_cache.append(time.perf_counter() - started)

        timescale_sink.upsert_bars = self.timed_upsert  # type: ignore[assignment]
        timescale_sink.minute_bars_of_ticks = timed_aggregate  # type: ignore[assignment]
        BarCacheSink.flush = timed_flush  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        timescale_sink.upsert_bars = upsert_bars
        timescale_sink.minute_bars_of_ticks, BarCacheSink.flush = self._restore  # type: ignore[method-assign]


def ms_summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "batches": len(ordered),
        "median": round(1000 * statistics.median(ordered), 1),
        "p90": round(1000 * ordered[int(0.9 * (len(ordered) - 1))], 1),
    }


def run_settings(base: Settings, name: str, *, rollups: bool) -> Settings:
    return namespaced(base, f"bench.{name}", rollups="pipeline" if rollups else "off", quote_rebuild_window_s=0)


async def publish(settings: Settings, config: SyntheticConfig) -> None:
    await publish_feed(settings.kafka, SyntheticFeed(config), config.source)


async def ingest_rate(settings: Settings, expected: int) -> float:
    stats = await run_consumer(settings, asyncio.Event(), until_idle_s=2.0)
    if stats.written != expected or stats.first_batch_at is None or stats.last_batch_at is None:
        raise RuntimeError(f"consumer wrote {stats.written} of {expected} rows")
    return stats.written / (stats.last_batch_at - stats.first_batch_at)


async def check_bars(admin: asyncpg.Connection, source: str, expected: int) -> None:
    """The run's 1m bars hold exactly its ticks (no other run shares its minutes)."""
    lo, hi, symbols = await admin.fetchrow(
        "SELECT min(time), max(time), array_agg(DISTINCT symbol) FROM stock_prices WHERE source = $1", source
    )
    counted = await admin.fetchval(
        "SELECT sum(trade_count) FROM ohlcv_1m_rollup"
        " WHERE symbol = ANY($1::text[]) AND bucket >= time_bucket('1 minute', $2::timestamptz) AND bucket <= $3",
        symbols,
        lo,
        hi,
    )
    if counted != expected:
        raise RuntimeError(f"{source}: 1m bars count {counted} ticks, the run wrote {expected}")


async def clean_up(base: Settings, names: list[str], start_ns: int, end_ns: int) -> None:
    admin = await asyncpg.connect(base.timescale.admin_dsn.get_secret_value())
    try:
        await admin.execute("DELETE FROM stock_prices WHERE source = ANY($1::text[])", names)
        await admin.execute(
            "DELETE FROM ingest_offsets WHERE consumer_group = ANY($1::text[])", [f"bench-{n}" for n in names]
        )
        # Recompute the touched days from the ticks that remain: the runs' bars go.
        await repair(admin, ns_to_datetime(start_ns), ns_to_datetime(end_ns))
    finally:
        await admin.close()
    quotes = redis.Redis.from_url(base.redis.url.get_secret_value(), db=base.redis.db_quotes)
    try:
        for name in names:
            keys = [k async for k in quotes.scan_iter(match=f"bench.{name}:*")]
            if keys:
                await quotes.delete(*keys)
    finally:
        await quotes.aclose()
    kafka = AIOKafkaAdminClient(bootstrap_servers=base.kafka.bootstrap_servers)
    await kafka.start()
    try:
        await kafka.delete_topics([f"bench.{n}.{t}" for n in names for t in ("ticks", "ticks.dlq", "events")])
    finally:
        await kafka.close()


async def main(args: argparse.Namespace) -> dict[str, object]:
    base = load_settings()
    conn = await asyncpg.connect(base.timescale.dsn.get_secret_value())
    try:
        edition = await detect_edition(conn)
    finally:
        await conn.close()
    if edition != "apache":
        raise SystemExit(f"the pipeline's rollups run on the Apache edition; this server is {edition}")
    run_id = uuid.uuid4().hex[:8]
    # Inside the validator's 7-day window, far from what `make run` writes now.
    start_ns = time.time_ns() - 5 * 24 * 3600 * 10**9
    modes = ("rollups_on", "rollups_off")
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    rollup_seconds: dict[str, dict[str, list[float]]] = {
        mode: {"aggregate": [], "upsert": [], "bar_cache": []} for mode in modes if mode in FORMS
    }
    names: list[str] = []
    try:
        for round_no in range(args.rounds):
            # Rotate which mode goes first: on a shared machine the first run of a round may differ.
            order = modes[round_no % len(modes) :] + modes[: round_no % len(modes)]
            for mode in order:
                name = f"ro-{run_id}-{round_no}-{mode.replace('_', '-')}"
                settings = run_settings(base, name, rollups=mode in FORMS)
                config = SyntheticConfig(
                    symbols=args.symbols,
                    rate=100_000,
                    count=args.ticks,
                    seed=7,
                    start_ns=start_ns + len(names) * RUN_SPACING_NS,
                    source=name,
                    paced=False,
                )
                names.append(name)
                await publish(settings, config)
                with RollupTimers(FORMS.get(mode, upsert_bars)) as timers:
                    rates[mode].append(await ingest_rate(settings, args.ticks))
                if mode in FORMS:
                    spent = rollup_seconds[mode]
                    spent["aggregate"] += timers.aggregate
                    spent["upsert"] += timers.upsert
                    spent["bar_cache"] += timers.bar_cache
                    admin = await asyncpg.connect(base.timescale.admin_dsn.get_secret_value())
                    try:
                        await check_bars(admin, name, args.ticks)
                    finally:
                        await admin.close()
    finally:
        if names:
            end_ns = start_ns + len(names) * RUN_SPACING_NS + int(timedelta(hours=1).total_seconds()) * 10**9
            await clean_up(base, names, start_ns, end_ns)
    best_on, best_off = max(rates["rollups_on"]), max(rates["rollups_off"])
    result: dict[str, object] = {
        "benchmark": "rollup_cost",
        "machine": {"cores": os.cpu_count()},
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
    }
    result["rollup_ms_per_batch"] = {
        mode: {part: ms_summary(s) for part, s in parts.items() if s} for mode, parts in rollup_seconds.items()
    }
    result["all_runs"] = {k: [round(v) for v in vs] for k, vs in rates.items()}
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=200_000, help="ticks per run (default 200000)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each mode (default 2)")
    parser.add_argument("--symbols", type=int, default=200, help="symbols in the feed (default 200)")
    args = parser.parse_args()
    configure_logging(LogSettings(level="warning"))
    result = uvloop.run(main(args))
    print_and_save("rollup_cost", result, None)
