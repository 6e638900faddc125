"""The benchmark suite of issue 5: every figure next to its reference, in one run.

    python -m benchmarks.scenarios.suite [--quick] [--ticks N] [--rates 5000,20000,50000] [--skip ...]
    make bench          # the default sizes (1M ticks; several minutes on 2 cores)
    make bench-quick    # --quick: 200k ticks, shorter freshness runs (under 5 minutes)

One synthetic feed (``producers.feeds.synthetic``, fixed seed) is published
once to a fresh topic; every consumer below reads that same topic with its own
consumer group, and every figure comes from this one run:

a. **Limits.** Binary COPY of the same rows into an empty copy of
   ``stock_prices`` (asyncpg ``copy_records_to_table`` in batches of
   ``batch.max_rows``, one transaction each: the database ceiling), and the same
   COPY from pre-encoded binary buffers (the server's share of it); Kafka's own
   ``ConsumerPerformance`` tool (the broker ceiling); aiokafka ``getmany`` plus
   msgspec decode with no writes (the client ceiling).
b. **The pipeline**: ``consumers.ticks_to_timescale.run_consumer`` (decode,
   validate, COPY + offsets, Redis quotes, Kafka commit) over the pre-filled topic.
c. **Alternatives**, each into an empty copy of ``stock_prices``: a naive
   consumer (aiokafka + asyncpg, one INSERT per message, offsets committed per
   batch), capped at a time budget; Quix Streams with ``PostgreSQLSink``
   (``benchmarks/scenarios/quix_app.py``, run with ``.venv-bench/bin/python``).
d. **Freshness**: a paced producer (a separate process) at each offered rate
   while the consumer runs; tick time to quote visible in Redis, exactly as the
   pipeline's ``nexanest_quote_latency_seconds`` histogram observes it (the
   observed values are recorded as well, for exact percentiles), and the lag.
e. **Memory**: peak (VmHWM) and steady (median VmRSS) of
   ``nexanest consume --until-idle`` as a subprocess at saturation.

Rates are ticks per second from the first batch that returned records to the
end of the last write (idle time waiting for more is excluded). A rate is only
reported once the consumer's rows were counted in the database; a count that
does not match marks the scenario failed (its rate is null) and the run exits 1.

Output: JSON and the Markdown section in ``benchmarks/results/`` (git-ignored);
``--update-results`` also adds the section to ``benchmarks/RESULTS.md``. The run
writes into a scratch database (``nexanest_bench_<run>``, the project's
migrations applied), and everything else it creates carries its run id; all of
it is removed afterwards (``harness.cleanup``). Needs the local stack (``make
stack-up``) and ``make bench-venv`` for Quix Streams.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import msgspec
import uvloop
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from benchmarks.harness import report
from benchmarks.harness.cleanup import clean_up, patiently, prepare_database
from benchmarks.harness.host import machine, restarted, service_identities
from benchmarks.harness.report import n as _n
from benchmarks.harness.run import CountMismatch, Run, feed_config
from benchmarks.harness.sampling import ROOT, percentile, rate, run_sampled
from benchmarks.scenarios.limits import client_ceiling, db_ceiling, kafka_perf_tool, produce_feeds
from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.pipeline import metrics
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.log import configure_logging
from nexanest.pipeline.settings import LogSettings, load_settings
from nexanest.pipeline.sinks.timescale import COLUMNS, stock_price_row
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.producers.publisher import TickPublisher
from nexanest.schemas.ticks import decode_tick

MODULE = "benchmarks.scenarios.suite"
HERE = Path(__file__).resolve().parent
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
NEXANEST = Path(sys.executable).parent / "nexanest"

#: The issue's targets, as (ratio or figure, comparison, bound).
TARGETS: dict[str, tuple[str, float]] = {
    "pipeline_vs_ceiling": (">=", 0.5),
    "pipeline_vs_quix": (">=", 3.0),
    "pipeline_vs_naive": (">=", 20.0),
    "p99_ms_at_20000": ("<=", 50.0),
    "consumer_peak_rss_mb": ("<=", 250.0),
}


#: Offered rates of the freshness runs, by ``--quick``.
DEFAULT_RATES = {False: "5000,20000,50000", True: "5000,20000"}


@dataclass(frozen=True)
class Plan:
    """What a suite run does."""

    mode: str
    ticks: int
    symbols: int
    seed: int
    rates: tuple[int, ...] = ()
    fresh_s: float = 0.0
    warmup_s: float = 0.0
    naive_budget_s: float = 0.0
    idle_s: float = 3.0
    quix_commit_interval_s: float = 0.0
    quix_commit_every: int = 0
    skip: frozenset[str] = frozenset()

    @staticmethod
    def from_args(args: argparse.Namespace) -> Plan:
        quick = args.quick
        return Plan(
            mode="quick" if quick else "full",
            ticks=args.ticks or (200_000 if quick else 1_000_000),
            symbols=args.symbols,
            seed=args.seed,
            rates=tuple(int(r) for r in (args.rates or DEFAULT_RATES[quick]).split(",") if r),
            fresh_s=args.fresh_seconds or (10.0 if quick else 20.0),
            warmup_s=args.warmup_seconds,
            naive_budget_s=args.naive_budget or (15.0 if quick else 30.0),
            idle_s=args.idle_seconds,
            quix_commit_interval_s=args.quix_commit_interval,
            quix_commit_every=args.quix_commit_every,
            skip=frozenset(s for s in args.skip.split(",") if s),
        )


@dataclass(kw_only=True)
class Bench(Run):
    """The suite's run: its names and checks, and its plan."""

    plan: Plan


# -- b. the pipeline -------------------------------------------------------------------


def _duplicates_skipped() -> int:
    return int(metrics.REGISTRY.get_sample_value("nexanest_sink_duplicates_skipped_total") or 0)


async def pipeline(bench: Bench, name: str, feed: str, source: str, *, exactly_once: bool) -> dict[str, Any]:
    """``run_consumer`` in this process over a pre-filled topic, exactly-once on or off."""
    settings = bench.settings(name, bench.topic(feed), exactly_once=exactly_once)
    duplicates_before = _duplicates_skipped()
    stats = await run_consumer(settings, asyncio.Event(), until_idle_s=bench.plan.idle_s)
    n = bench.plan.ticks
    bench.check(name, "rows the consumer reports written", n, stats.written)
    bench.check(name, "rows dead-lettered (none expected)", 0, stats.rejected)
    bench.check(name, "duplicates skipped (none expected)", 0, _duplicates_skipped() - duplicates_before)
    bench.check(name, "rows in stock_prices", n, await bench.count_rows("stock_prices", source))
    assert stats.first_batch_at is not None
    assert stats.last_batch_at is not None
    seconds = stats.last_batch_at - stats.first_batch_at
    return {
        "ticks_per_s": rate(stats.written, seconds),
        "seconds": seconds,
        "rows": stats.written,
        "batches": stats.batches,
        "mean_batch_rows": stats.written / max(stats.batches, 1),
        "batch_max_rows": settings.batch.max_rows,
        "exactly_once": exactly_once,
        "topic": settings.kafka.ticks_topic,
    }


# -- c. alternatives -----------------------------------------------------------------

_NAIVE_INSERT = "INSERT INTO {table} ({columns}) VALUES ({params})"


async def naive_insert(bench: Bench) -> dict[str, Any]:
    """One INSERT per message (autocommit), offsets committed after each batch:
    the consumer most people write first. Stops at the time budget."""
    conn = await asyncpg.connect(bench.admin_dsn)
    table = await bench.scratch_table(conn, "naive")
    sql = _NAIVE_INSERT.format(
        table=table, columns=", ".join(COLUMNS), params=", ".join(f"${i}" for i in range(1, len(COLUMNS) + 1))
    )
    consumer = AIOKafkaConsumer(
        bench.feed_topic,
        bootstrap_servers=bench.base.kafka.bootstrap_servers,
        group_id=bench.group("naive"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    inserted = 0
    first_at = last_at = None
    budget_s = bench.plan.naive_budget_s
    started = time.monotonic()
    try:
        over = False
        while not over:
            records = await consumer.getmany(timeout_ms=1000)
            if not records:
                if first_at is not None and time.monotonic() - first_at > budget_s:
                    break
                if first_at is None and time.monotonic() - started > 60:
                    raise RuntimeError("naive consumer: no records within 60 s")
                continue
            if first_at is None:
                first_at = time.monotonic()
            done: dict[TopicPartition, int] = {}
            for tp, messages in records.items():
                for m in messages:
                    await conn.execute(sql, *stock_price_row(decode_tick(m.value), tp.partition, m.offset))
                    inserted += 1
                    done[tp] = m.offset + 1
                    last_at = time.monotonic()
                    if last_at - first_at >= budget_s:
                        over = True
                        break
                if over:
                    break
            await consumer.commit({tp: OffsetAndMetadata(off, "") for tp, off in done.items()})
        bench.check(
            "naive_insert", "rows in scratch table", inserted, await conn.fetchval(f"SELECT count(*) FROM {table}")
        )
    finally:
        await consumer.stop()
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
    assert first_at is not None
    assert last_at is not None
    return {
        "ticks_per_s": rate(inserted, last_at - first_at),
        "seconds": last_at - first_at,
        "rows": inserted,
        "budget_s": budget_s,
        "of_feed": inserted / bench.plan.ticks,
    }


def _pg_params(dsn: str) -> dict[str, Any]:
    u = urlsplit(dsn)
    return {
        "host": u.hostname or "127.0.0.1",
        "port": u.port or 5432,
        "dbname": unquote(u.path.lstrip("/")),
        "user": unquote(u.username or ""),
        "password": unquote(u.password or ""),
    }


async def quix(bench: Bench, python: Path) -> dict[str, Any]:
    """Quix Streams + PostgreSQLSink as a subprocess in .venv-bench (see quix_app.py)."""
    plan = bench.plan
    conn = await asyncpg.connect(bench.admin_dsn)
    table = await bench.scratch_table(conn, "quix")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-quix-") as state_dir:
            config = {
                "bootstrap": bench.base.kafka.bootstrap_servers,
                "topic": bench.feed_topic,
                "group": bench.group("quix"),
                "table": table,
                "pg": _pg_params(bench.admin_dsn),
                "commit_interval": plan.quix_commit_interval_s,
                "commit_every": plan.quix_commit_every,
                "idle_s": plan.idle_s,
                "state_dir": state_dir,
            }
            env = {**os.environ, "BENCH_QUIX_CONFIG": json.dumps(config)}
            result = await run_sampled([str(python), str(HERE / "quix_app.py")], env, timeout_s=900)
        if result.returncode != 0:
            raise RuntimeError(f"quix_app.py exited {result.returncode}: {result.stderr[-3000:]}")
        out = json.loads(result.stdout.strip().splitlines()[-1])
        bench.check("quix", "messages processed", plan.ticks, out["messages"])
        bench.check("quix", "rows the sink reports written", plan.ticks, out["rows_written"])
        bench.check("quix", "rows in scratch table", plan.ticks, await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
    # Busy time: first message to last message, plus any write that started after
    # the last message (the final checkpoint runs only once the idle timeout ends).
    last = out["last_message_at"]
    tail = sum(end - start for start, end, _ in out["writes"] if start >= last)
    seconds = last - out["first_message_at"] + tail
    writes = out["writes"]
    return {
        "ticks_per_s": rate(out["rows_written"], seconds),
        "seconds": seconds,
        "rows": out["rows_written"],
        "sink_writes": len(writes),
        "mean_rows_per_write": out["rows_written"] / max(len(writes), 1),
        "sink_write_seconds": sum(end - start for start, end, _ in writes),
        "peak_rss_mb": result.peak_rss_kb / 1024,
        "commit_interval_s": plan.quix_commit_interval_s,
        "commit_every": plan.quix_commit_every,
        "versions": {k: out[k] for k in ("quixstreams", "confluent_kafka", "psycopg2")},
    }


# -- d. freshness ------------------------------------------------------------------------


def _lag(topic: str, partitions: int) -> int:
    total = 0
    for p in range(partitions):
        value = metrics.REGISTRY.get_sample_value(
            "nexanest_consumer_lag_messages", {"topic": topic, "partition": str(p)}
        )
        total += int(value or 0)
    return total


def _histogram_buckets() -> dict[float, float]:
    out: dict[float, float] = {}
    for metric in metrics.TICK_TO_QUOTE_SECONDS.collect():
        for s in metric.samples:
            if s.name.endswith("_bucket"):
                out[float(s.labels["le"])] = s.value
    return out


async def freshness(bench: Bench, offered: int) -> dict[str, Any]:
    """The consumer in this process, a paced producer in another, at ``offered`` ticks/s."""
    plan = bench.plan
    scenario = f"fresh{offered}"
    topic = f"{bench.prefix}.{scenario}.ticks"
    settings = bench.settings(scenario, topic)
    source = bench.source(scenario)
    partitions = settings.kafka.partitions
    await ensure_topics(settings.kafka)

    # Record each value the pipeline observes into its latency histogram (one per
    # symbol per batch, tick time to quote visible), for exact percentiles.
    # Kept in arrays of doubles, not a list of tuples: hundreds of thousands of
    # tuples would be walked by every full garbage collection of this process,
    # which runs the consumer, and lengthen its pauses.
    hist = metrics.TICK_TO_QUOTE_SECONDS
    observe = hist.observe
    observed_at, observed = array("d"), array("d")

    def record(amount: float, exemplar: dict[str, str] | None = None) -> None:
        observed_at.append(time.monotonic())
        observed.append(amount)
        observe(amount, exemplar)

    hist.observe = record  # type: ignore[method-assign]  # an instance attribute, deleted below
    stop = asyncio.Event()
    consumer = asyncio.create_task(run_consumer(settings, stop))
    lags: list[tuple[float, int]] = []
    try:
        # Group join and the start-up quote rebuild (which observes old stored
        # ticks) come first; the producer starts only after them.
        await asyncio.sleep(2.0)
        buckets_before = _histogram_buckets()
        argv = [
            sys.executable,
            "-m",
            MODULE,
            "paced-producer",
            "--topic",
            topic,
            "--source",
            source,
            "--rate",
            str(offered),
            "--seconds",
            str(plan.fresh_s),
            "--symbols",
            str(plan.symbols),
            "--seed",
            str(plan.seed),
        ]
        producer = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE, env={**os.environ, "NEXANEST_LOG__LEVEL": "warning"}
        )
        produced = asyncio.ensure_future(producer.communicate())
        while not produced.done():
            lags.append((time.monotonic(), _lag(topic, partitions)))
            await asyncio.wait({produced}, timeout=0.25)  # reading the registry takes ~1.5 ms
        if producer.returncode != 0:
            raise RuntimeError(f"paced producer exited {producer.returncode}")
        prod = json.loads(produced.result()[0].decode().strip().splitlines()[-1])
        deadline = time.monotonic() + 60
        consumed_metric = "nexanest_consumer_messages_total"
        while (metrics.REGISTRY.get_sample_value(consumed_metric, {"topic": topic}) or 0) < prod["published"]:
            if time.monotonic() > deadline or consumer.done():
                break
            lags.append((time.monotonic(), _lag(topic, partitions)))
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        stats = await consumer
        del hist.observe  # back to the class's method
    bench.check(scenario, "rows the consumer reports written", prod["published"], stats.written)
    bench.check(scenario, "rows in stock_prices", prod["published"], await bench.count_rows("stock_prices", source))

    since = prod["started_at"] + plan.warmup_s
    window = [v for t, v in zip(observed_at, observed, strict=True) if t >= since]
    lag_window = [lag for t, lag in lags if t >= since]
    if not window:
        raise RuntimeError(f"{scenario}: no quote latency observed after the warm-up")
    after = _histogram_buckets()
    delta = sorted((le, after[le] - buckets_before.get(le, 0.0)) for le in after)
    total = delta[-1][1]
    hist_p99 = next(le for le, c in delta if c >= 0.99 * total)
    ms = 1000.0
    return {
        "offered_ticks_per_s": offered,
        "achieved_ticks_per_s": prod["published"] / prod["seconds"],
        "producer_behind_schedule_max_s": prod["behind_schedule_max_s"],
        "published": prod["published"],
        "seconds": prod["seconds"],
        "warmup_s": plan.warmup_s,
        "observations": len(window),
        "p50_ms": percentile(window, 50) * ms,
        "p99_ms": percentile(window, 99) * ms,
        "max_ms": max(window) * ms,
        "max_ms_incl_warmup": max(observed) * ms,
        "histogram_p99_le_ms": hist_p99 * ms,
        "lag_p50_messages": percentile(lag_window, 50) if lag_window else None,
        "lag_max_messages": max(lag_window) if lag_window else None,
        "batches": stats.batches,
        "mean_batch_rows": stats.written / max(stats.batches, 1),
    }


async def paced_producer(args: argparse.Namespace) -> None:
    """Subcommand: the synthetic feed at ``args.rate`` ticks/s through ``TickPublisher``.

    Every 10 ms step takes the next ticks of the feed and stamps them with the
    wall time at which they are handed to Kafka, so the latency measured
    downstream starts when a tick is published: if this process cannot keep up
    (it shares two cores with the consumer and the services), its own delay is
    not charged to the pipeline; it is reported instead as ``behind_schedule_s``.
    Up to 8 steps are in flight at once, so waiting for acknowledgements does
    not throttle the pace (``publish`` waits for the acks of its step).
    """
    settings = load_settings()
    producer = make_producer(settings.kafka)
    await producer.start()
    total = int(args.rate * args.seconds)
    config = SyntheticConfig(
        symbols=args.symbols, rate=args.rate, count=total, seed=args.seed, source=args.source, paced=False
    )
    ticks = SyntheticFeed(config).generate()
    publisher = TickPublisher(producer, args.topic, args.source)
    per_step = max(1, round(args.rate * 0.01))
    in_flight: set[asyncio.Task[None]] = set()
    behind: list[float] = []
    sent = 0
    try:
        started = time.monotonic()
        while sent < total:
            now_ns = time.time_ns()
            step = [
                msgspec.structs.replace(t, ts_ns=now_ns) for t in itertools.islice(ticks, min(per_step, total - sent))
            ]
            task = asyncio.create_task(publisher.publish(step))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            sent += len(step)
            if len(in_flight) >= 8:
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            delay = started + sent / args.rate - time.monotonic()
            behind.append(max(0.0, -delay))
            await asyncio.sleep(max(0.0, delay))
        if in_flight:
            await asyncio.gather(*in_flight)
        await producer.flush()
        seconds = time.monotonic() - started
    finally:
        await producer.stop()
    print(
        json.dumps(
            {
                "published": publisher.published,
                "seconds": seconds,
                "started_at": started,
                "behind_schedule_max_s": max(behind, default=0.0),
                "behind_schedule_end_s": behind[-1] if behind else 0.0,
            }
        )
    )


# -- e. memory -------------------------------------------------------------------------------


async def memory(bench: Bench, feed: str, source: str) -> dict[str, Any]:
    """``nexanest consume --until-idle`` as a subprocess over a pre-filled topic of its own."""
    settings = bench.settings("memory", bench.topic(feed))
    argv = [str(NEXANEST), "consume", "--until-idle", str(bench.plan.idle_s)]
    result = await run_sampled(argv, bench.env(settings), timeout_s=900)
    if result.returncode != 0:
        raise RuntimeError(f"nexanest consume exited {result.returncode}: {result.stderr[-2000:]}")
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("consumed "))
    written = int(line.split(" rows written")[0].split()[-1].replace(",", ""))
    n = bench.plan.ticks
    bench.check("memory", "rows the consumer reports written", n, written)
    bench.check("memory", "rows in stock_prices", n, await bench.count_rows("stock_prices", source))
    busy = [kb for t, kb in result.rss_kb if t <= result.wall_s - bench.plan.idle_s]
    steady = busy[len(busy) // 2 :] or [kb for _, kb in result.rss_kb]
    return {
        "peak_rss_mb": result.peak_rss_kb / 1024,
        "steady_rss_mb": statistics.median(steady) / 1024,
        "samples": len(result.rss_kb),
        "wall_s": result.wall_s,
        "rows": written,
    }


# -- the run ------------------------------------------------------------------------------------


async def scenario(
    results: dict[str, Any], errors: dict[str, str], name: str, fn: Callable[[], Awaitable[dict[str, Any]]]
) -> None:
    """Run one scenario; a failure is recorded (rate null) and the suite goes on."""
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        results[name] = await fn()
    except (CountMismatch, RuntimeError, TimeoutError, OSError, asyncpg.PostgresError) as exc:
        errors[name] = f"{type(exc).__name__}: {exc}"
        results[name] = None
        print(f"[bench] {name} FAILED: {errors[name]}", file=sys.stderr, flush=True)
    else:
        figure = results[name].get("ticks_per_s") if isinstance(results[name], dict) else None
        shown = f" {figure:,.0f} ticks/s" if isinstance(figure, float) else ""
        print(f"[bench] {name} done in {time.monotonic() - started:.0f}s{shown}", file=sys.stderr, flush=True)
    gc.collect()


def _tps(results: dict[str, Any], *path: str) -> float | None:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or node.get(key) is None:
            return None
        node = node[key]
    return float(node)


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    pipe = _tps(results, "pipeline", "ticks_per_s")
    db = _tps(results, "db_ceiling", "copy_records", "ticks_per_s")
    client = _tps(results, "client_ceiling", "ticks_per_s")

    def div(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else a / b

    ceiling = min(db, client) if db is not None and client is not None else None
    return {
        "pipeline_vs_ceiling": div(pipe, ceiling),
        "pipeline_vs_db_ceiling": div(pipe, db),
        "pipeline_vs_db_preencoded": div(pipe, _tps(results, "db_ceiling", "copy_preencoded", "ticks_per_s")),
        "pipeline_vs_client_ceiling": div(pipe, client),
        "pipeline_vs_broker_ceiling": div(pipe, _tps(results, "kafka_perf_tool", "ticks_per_s")),
        "pipeline_vs_quix": div(pipe, _tps(results, "quix", "ticks_per_s")),
        "pipeline_vs_naive": div(pipe, _tps(results, "naive_insert", "ticks_per_s")),
        "exactly_once_vs_at_least_once": div(pipe, _tps(results, "pipeline_at_least_once", "ticks_per_s")),
    }


def targets(ratio: dict[str, float | None], results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    figures: dict[str, float | None] = dict(ratio)
    fresh = {f["offered_ticks_per_s"]: f for f in results.get("freshness") or [] if f}
    # Only where the harness really offered 20k ticks/s (within 5%).
    at_20k = fresh.get(20000)
    figures["p99_ms_at_20000"] = at_20k["p99_ms"] if at_20k and at_20k["achieved_ticks_per_s"] >= 0.95 * 20000 else None
    figures["consumer_peak_rss_mb"] = _tps(results, "memory", "peak_rss_mb")
    out = {}
    for name, (op, bound) in TARGETS.items():
        value = figures.get(name)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out[name] = {"value": value, "target": f"{op} {bound:g}", "met": met}
    return out


async def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    plan = Plan.from_args(args)
    bench = Bench(load_settings(), "s", plan=plan)
    started_at = datetime.now(UTC)
    started = time.monotonic()
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    print(f"[bench] run {bench.run_id}: {plan.mode}, {plan.ticks:,} ticks, {plan.symbols} symbols", file=sys.stderr)
    base = bench.base
    machine_info = await machine(base)
    services_before = await service_identities(base)
    # Everything the run writes goes into a scratch database (dropped by the clean-up), not the user's.
    bench.base, migrations = await prepare_database(base, bench.run_id)
    # The same ticks three times (same seed and tick times), told apart by an
    # equally long source tag: stock_prices rejects a (source, seq, time) it
    # holds already, so each pipeline run that writes it needs its own copy.
    # a: every reader (limits, pipeline, alternatives); b: the pipeline with
    # exactly-once off; c: the memory run. Tick times an hour back, inside the
    # validator's window for the whole run.
    start_ns = time.time_ns() - 3600 * 10**9
    feeds = ("a", "b", "c") if "memory" not in plan.skip else ("a", "b")
    configs = {f: feed_config(plan.ticks, plan.symbols, plan.seed, bench.source(f), start_ns) for f in feeds}
    try:
        await scenario(results, errors, "producer", lambda: produce_feeds(bench, configs))
        if results["producer"] is None:
            raise RuntimeError(f"the feed could not be published: {errors['producer']}")
        await scenario(results, errors, "db_ceiling", lambda: db_ceiling(bench, configs["a"]))
        await scenario(results, errors, "kafka_perf_tool", lambda: kafka_perf_tool(bench, plan.ticks))
        await scenario(results, errors, "client_ceiling", lambda: client_ceiling(bench, plan.ticks, plan.idle_s))
        await scenario(
            results,
            errors,
            "pipeline",
            lambda: pipeline(bench, "pipeline", "a", configs["a"].source, exactly_once=True),
        )
        await scenario(
            results,
            errors,
            "pipeline_at_least_once",
            lambda: pipeline(bench, "pipeline_alo", "b", configs["b"].source, exactly_once=False),
        )
        if "naive" not in plan.skip:
            await scenario(results, errors, "naive_insert", lambda: naive_insert(bench))
        if "quix" not in plan.skip:
            await scenario(results, errors, "quix", lambda: quix(bench, Path(args.bench_python)))
        if "memory" not in plan.skip:
            await scenario(results, errors, "memory", lambda: memory(bench, "c", configs["c"].source))
        fresh: list[dict[str, Any] | None] = []
        if "freshness" not in plan.skip:
            for offered in plan.rates:
                holder: dict[str, Any] = {}
                await scenario(holder, errors, f"freshness_{offered}", functools.partial(freshness, bench, offered))
                fresh.append(holder[f"freshness_{offered}"])
        results["freshness"] = fresh
    finally:
        print("[bench] cleaning up", file=sys.stderr, flush=True)
        cleanup = await clean_up(base, bench.run_id)
    after = await patiently(cleanup, "service identities", lambda: service_identities(base)) or {}
    if restarted(services_before, after):
        print(
            f"[bench] WARNING: restarted during the run: {', '.join(restarted(services_before, after))}",
            file=sys.stderr,
        )
    ratio = ratios(results)
    return {
        "benchmark": "suite",
        "run_id": bench.run_id,
        "started_at": started_at.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1),
        "command": args.command_line,
        "mode": plan.mode,
        "parameters": {
            "ticks": plan.ticks,
            "symbols": plan.symbols,
            "seed": plan.seed,
            "rates": list(plan.rates),
            "freshness_seconds": plan.fresh_s,
            "warmup_seconds": plan.warmup_s,
            "naive_budget_seconds": plan.naive_budget_s,
            "idle_seconds": plan.idle_s,
            "batch_max_rows": bench.base.batch.max_rows,
            "batch_max_wait_ms": bench.base.batch.max_wait_ms,
            "partitions": bench.base.kafka.partitions,
        },
        "machine": {**machine_info, "load_avg_at_end": os.getloadavg()},
        "scratch_database_migrations": migrations,
        "services_restarted_during_run": restarted(services_before, after),
        "results": results,
        "ratios": ratio,
        "targets": targets(ratio, results),
        "checks": bench.checks,
        "errors": errors,
        "cleanup": cleanup,
    }


# -- RESULTS.md ------------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    r = result["results"]
    m = result["machine"]
    p = result["parameters"]
    lines = [
        f"## {result['started_at']} · {result['mode']} · run `{result['run_id']}`",
        "",
        f"Command: `{result['command']}` ({result['duration_s']:.0f} s)",
        "",
        report.machine_line(m, shared=False),
        "",
        f"Feed: {p['ticks']:,} ticks, {p['symbols']} symbols, seed {p['seed']}, {p['partitions']} partitions; "
        f"pipeline batches of up to {p['batch_max_rows']:,} rows.",
        "",
        "| scenario | ticks/s | pipeline ÷ this | rows checked | notes |",
        "|---|---:|---:|---:|---|",
    ]
    pipe = _tps(r, "pipeline", "ticks_per_s")

    def row(name: str, tps: float | None, rows: int | None, note: str) -> None:
        ratio = None if pipe is None or not tps else pipe / tps
        lines.append(f"| {name} | {_n(tps)} | {_n(ratio, 2)} | {_n(rows)} | {note} |")

    db = r.get("db_ceiling") or {}
    row(
        "limit: database, binary COPY of the rows (asyncpg)",
        _tps(db, "copy_records", "ticks_per_s"),
        p["ticks"] if db else None,
        "empty copy of stock_prices, one transaction per batch",
    )
    row(
        "limit: database, binary COPY of pre-encoded buffers",
        _tps(db, "copy_preencoded", "ticks_per_s"),
        p["ticks"] if db else None,
        "server share only (no client encoding)",
    )
    kp = r.get("kafka_perf_tool") or {}
    row(
        "limit: broker, Kafka ConsumerPerformance",
        _tps(kp, "ticks_per_s"),
        kp.get("records"),
        f"fetch rate, group join excluded ({_n(kp.get('rebalance_ms'))} ms)" if kp else "",
    )
    cc = r.get("client_ceiling") or {}
    row("limit: client, aiokafka getmany + msgspec decode", _tps(cc, "ticks_per_s"), cc.get("records"), "no writes")
    pl = r.get("pipeline") or {}
    row(
        "**our pipeline** (COPY + offsets + Redis quotes)",
        pipe,
        pl.get("rows"),
        f"{_n(pl.get('batches'))} batches, mean {_n(pl.get('mean_batch_rows'))} rows" if pl else "",
    )
    alo = r.get("pipeline_at_least_once") or {}
    row(
        "our pipeline, exactly-once off (at-least-once)",
        _tps(alo, "ticks_per_s"),
        alo.get("rows"),
        "offsets not stored in the database; same ticks, own topic" if alo else "",
    )
    qx = r.get("quix") or {}
    row(
        "Quix Streams + PostgreSQLSink",
        _tps(qx, "ticks_per_s"),
        qx.get("rows"),
        (
            f"quixstreams {qx['versions']['quixstreams']}, commit_interval={qx['commit_interval_s']:g}s, "
            f"commit_every={qx['commit_every']}, {qx['sink_writes']} sink writes; peak RSS {_n(qx['peak_rss_mb'])} MB"
        )
        if qx
        else "",
    )
    nv = r.get("naive_insert") or {}
    row(
        "naive consumer, one INSERT per message",
        _tps(nv, "ticks_per_s"),
        nv.get("rows"),
        f"stopped at its {nv['budget_s']:g} s budget ({nv['of_feed']:.0%} of the feed)" if nv else "",
    )
    lines += ["", "| ratio | value | target | met |", "|---|---:|---:|---|"]
    for name, t in result["targets"].items():
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        lines.append(f"| {name} | {_n(t['value'], 2)} | {t['target']} | {met} |")
    for name in (
        "pipeline_vs_db_ceiling",
        "pipeline_vs_db_preencoded",
        "pipeline_vs_client_ceiling",
        "exactly_once_vs_at_least_once",
    ):
        lines.append(f"| {name} | {_n(result['ratios'][name], 2)} | | |")
    lines.append(f"| pipeline_vs_broker_ceiling | {_n(result['ratios']['pipeline_vs_broker_ceiling'], 2)} | | |")
    fresh = [f for f in r.get("freshness") or [] if f]
    if fresh:
        lines += [
            "",
            f"Freshness (tick time, stamped when the producer hands the tick to Kafka, to quote visible in Redis; "
            f"{fresh[0]['warmup_s']:g} s warm-up excluded; the producer runs in its own process beside the consumer):",
            "",
            "| offered ticks/s | achieved | producer behind schedule, max s | p50 ms | p99 ms | max ms | "
            "histogram p99 ≤ ms | lag p50 | lag max | mean batch |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {_n(f['offered_ticks_per_s'])} | {_n(f['achieved_ticks_per_s'])} | "
            f"{_n(f['producer_behind_schedule_max_s'], 2)} | {_n(f['p50_ms'], 1)} | "
            f"{_n(f['p99_ms'], 1)} | {_n(f['max_ms'], 1)} | {_n(f['histogram_p99_le_ms'], 1)} | "
            f"{_n(f['lag_p50_messages'])} | {_n(f['lag_max_messages'])} | {_n(f['mean_batch_rows'])} |"
            for f in fresh
        ]
        short = [f for f in fresh if f["achieved_ticks_per_s"] < 0.95 * f["offered_ticks_per_s"]]
        if short:
            lines += [
                "",
                "The producer could not offer "
                + ", ".join(f"{_n(f['offered_ticks_per_s'])}" for f in short)
                + " ticks/s on this machine beside the consumer: those rows are at the achieved rate, "
                "and a target at such a rate is not judged (n/a).",
            ]
    mem = r.get("memory")
    if mem:
        lines += [
            "",
            f"Memory of `nexanest consume` at saturation: peak RSS {_n(mem['peak_rss_mb'])} MB, "
            f"steady {_n(mem['steady_rss_mb'])} MB ({mem['samples']} samples over {mem['wall_s']:.0f} s).",
        ]
    lines += report.restarted_warning(result)
    failed = [c for c in result["checks"] if not c["ok"]]
    if result["errors"] or failed:
        lines += ["", "**Failed scenarios** (no rate reported for them):", ""]
        lines += [f"- {name}: {err}" for name, err in result["errors"].items()]
    lines += ["", f"Count checks passed: {sum(c['ok'] for c in result['checks'])} of {len(result['checks'])}.", ""]
    return "\n".join(lines) + "\n"


# -- entry point -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = report.parser(__doc__, "200k ticks, 10 s freshness runs, 15 s naive budget")
    parser.add_argument("--ticks", type=int, default=0, help="ticks in the feed (default 1,000,000; quick 200,000)")
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--rates",
        default="",
        help=f"offered ticks/s for freshness, comma-separated ({DEFAULT_RATES[False]}; quick {DEFAULT_RATES[True]})",
    )
    parser.add_argument("--fresh-seconds", type=float, default=0, help="producer run per rate (default 20; quick 10)")
    parser.add_argument("--warmup-seconds", type=float, default=1.0, help="latencies ignored at the start of a rate")
    parser.add_argument("--naive-budget", type=float, default=0, help="seconds for the naive consumer (30; quick 15)")
    parser.add_argument("--idle-seconds", type=float, default=3.0, help="a consumer stops after this long idle")
    parser.add_argument("--quix-commit-interval", type=float, default=5.0, help="Quix Application(commit_interval)")
    parser.add_argument("--quix-commit-every", type=int, default=20_000, help="Quix Application(commit_every)")
    parser.add_argument("--skip", default="", help="comma-separated: naive,quix,memory,freshness")
    parser.add_argument("--bench-python", default=str(BENCH_PYTHON), help="Python of .venv-bench (Quix Streams)")
    p = parser.add_subparsers(dest="subcommand").add_parser("paced-producer", help="(internal) freshness's producer")
    for name in ("--topic", "--source"):
        p.add_argument(name, required=True)
    for name in ("--rate", "--seconds"):
        p.add_argument(name, type=float, required=True)
    for name in ("--symbols", "--seed"):
        p.add_argument(name, type=int, required=True)
    return parser


def main() -> int:
    args = build_parser().parse_args()
    configure_logging(LogSettings(level="warning"))
    if args.subcommand == "paced-producer":
        uvloop.run(paced_producer(args))
        return 0
    if "quix" not in args.skip.split(",") and not Path(args.bench_python).exists():
        print(f"{args.bench_python} not found: run `make bench-venv` (or pass --skip quix)", file=sys.stderr)
        return 2
    args.command_line = report.command_line(MODULE)
    result = uvloop.run(run_suite(args))  # the event loop the `nexanest` command uses
    report.save("suite", result, markdown(result), args)
    failed = bool(result["errors"]) or not all(c["ok"] for c in result["checks"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
