"""The benchmark suite of issue 5: every figure next to its reference, in one run.

    python -m benchmarks.scenarios.suite [--quick] [--ticks N] [--rates 5000,20000,50000] [--skip ...]

The same ticks go to three topics under three sources (``stock_prices`` refuses
a ``(source, seq, time)`` it holds). Each consumer reads with its own group: the
**limits** (``limits``); **the pipeline** (``run_consumer``, exactly-once on and
off); a **naive** consumer (one INSERT per message, for a time budget) and
**Quix Streams** (``quix_app``); **freshness** (a paced producer in its own
process beside the consumer: tick time to quote in Redis, each value the
pipeline's histogram observes); **memory** of ``nexanest consume``. Rates run
from the first batch to the end of the last write, once the rows were counted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import msgspec
import uvloop
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import OffsetAndMetadata

from benchmarks.harness import report
from benchmarks.harness.report import cells, n, ratio, table
from benchmarks.harness.run import CountMismatch, Run, busy_s, feed_config, main, publish
from benchmarks.harness.sampling import ROOT, consume_argv, observed, percentile, run_sampled
from benchmarks.scenarios.limits import client_ceiling, db_ceiling, kafka_perf_tool
from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.pipeline import metrics
from nexanest.pipeline.kafka import connection_options, make_producer
from nexanest.pipeline.settings import load_settings
from nexanest.pipeline.sinks.timescale import COLUMNS, stock_price_row
from nexanest.producers.feeds.synthetic import SyntheticFeed
from nexanest.producers.publisher import TickPublisher
from nexanest.schemas.ticks import decode_tick

MODULE = "benchmarks.scenarios.suite"
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
IDLE_S, WARMUP_S = 3.0, 1.0  # a consumer stops after this long idle; latencies ignored at the start of a rate
#: Quix Streams' checkpoint: ``commit_every=20000`` was the fastest of 0, 5,000 and 20,000 (RESULTS.md, 2026-11-25).
QUIX = {"commit_interval": 5.0, "commit_every": 20_000}
#: The issue's targets: figure -> (comparison, bound).
TARGETS = {
    "pipeline_vs_ceiling": (">=", 0.5),
    "pipeline_vs_quix": (">=", 3.0),
    "pipeline_vs_naive": (">=", 20.0),
    "p99_ms_at_20000": ("<=", 50.0),
    "consumer_peak_rss_mb": ("<=", 250.0),
}
#: Ratio name -> the figure the pipeline's rate is divided by (a path in the results).
RATIOS = {
    "pipeline_vs_db_ceiling": ("db_ceiling", "copy_records"),
    "pipeline_vs_db_preencoded": ("db_ceiling", "copy_preencoded"),
    "pipeline_vs_client_ceiling": ("client_ceiling",),
    "exactly_once_vs_at_least_once": ("pipeline_at_least_once",),
    "pipeline_vs_broker_ceiling": ("kafka_perf_tool",),
    "pipeline_vs_quix": ("quix",),
    "pipeline_vs_naive": ("naive_insert",),
}


def tps(results: dict[str, Any], *path: str) -> float | None:
    """``ticks_per_s`` under ``path``, None where a scenario failed or was skipped."""
    node: Any = results
    for key in (*path, "ticks_per_s"):
        node = node.get(key) if isinstance(node, dict) else None
    return None if node is None else float(node)


async def pipeline(
    run: Run, args: argparse.Namespace, name: str, feed: str, source: str, *, exactly_once: bool
) -> dict[str, Any]:
    """``run_consumer`` in this process over a pre-filled topic, exactly-once on or off."""
    settings = run.settings(name, run.topic(feed), exactly_once=exactly_once)
    skipped = "nexanest_sink_duplicates_skipped_total"
    duplicates = metrics.REGISTRY.get_sample_value(skipped) or 0
    stats = await run_consumer(settings, asyncio.Event(), until_idle_s=IDLE_S)
    run.check(name, "rows the consumer reports written", args.ticks, stats.written)
    run.check(name, "rows dead-lettered (none expected)", 0, stats.rejected)
    duplicates = (metrics.REGISTRY.get_sample_value(skipped) or 0) - duplicates
    run.check(name, "duplicates skipped (none expected)", 0, duplicates)
    await run.stored_once(name, source, args.ticks, strict=True)
    rows, batches = stats.written, stats.batches
    return {"ticks_per_s": rows / busy_s(stats), "rows": rows, "batches": batches, "mean_batch_rows": rows / batches}


async def memory(run: Run, args: argparse.Namespace, source: str) -> dict[str, Any]:
    """``nexanest consume --until-idle`` as a subprocess over a pre-filled topic of its own."""
    proc = await run_sampled(consume_argv(IDLE_S), run.env(run.settings("memory", run.topic("c"))))
    proc.check_exit()
    run.check("memory", "rows the consumer reports written", args.ticks, proc.consumed()["written"])
    await run.stored_once("memory", source, args.ticks, strict=True)
    wall = (proc.exited_at or 0) - proc.started_at
    busy = [kb for t, kb, _ in proc.rss if t <= wall - IDLE_S]
    steady = busy[len(busy) // 2 :] or [kb for _, kb, _ in proc.rss]
    mb = {"peak_rss_mb": proc.peak_rss_kb / 1024, "steady_rss_mb": statistics.median(steady) / 1024}
    return {**mb, "samples": len(proc.rss), "wall_s": wall}


async def naive_insert(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """One INSERT per message (autocommit), offsets committed after each batch:
    the consumer most people write first. Stops at its time budget."""
    conn = await asyncpg.connect(run.admin_dsn)
    table_ = await run.scratch_table(conn, "naive")
    sql = f"INSERT INTO {table_} ({', '.join(COLUMNS)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(COLUMNS)))})"
    kafka = {**connection_options(run.base.kafka, "bench-naive"), "auto_offset_reset": "earliest"}
    consumer = AIOKafkaConsumer(run.topic("a"), group_id=run.group("naive"), enable_auto_commit=False, **kafka)
    await consumer.start()
    inserted, first_at, last_at, started = 0, 0.0, 0.0, time.monotonic()
    try:
        while not first_at or last_at - first_at < args.naive_budget:
            records = await consumer.getmany(timeout_ms=1000)
            if not records:
                if time.monotonic() - (first_at or started) > (args.naive_budget if first_at else 60):
                    break
                continue
            first_at = first_at or time.monotonic()
            done = {}
            for m in itertools.chain.from_iterable(records.values()):
                await conn.execute(sql, *stock_price_row(decode_tick(m.value), m.partition, m.offset))
                inserted, last_at = inserted + 1, time.monotonic()
                done[m.partition] = OffsetAndMetadata(m.offset + 1, "")
                if last_at - first_at >= args.naive_budget:
                    break
            await consumer.commit({tp: done[tp.partition] for tp in records if tp.partition in done})
        run.check("naive_insert", "rows in its table", inserted, await conn.fetchval(f"SELECT count(*) FROM {table_}"))
    finally:
        await consumer.stop()
        await conn.close()
    if not inserted:
        raise RuntimeError("naive consumer: no records within 60 s")
    seconds = last_at - first_at
    budget = {"budget_s": args.naive_budget, "of_feed": inserted / args.ticks}
    return {"ticks_per_s": inserted / seconds, "seconds": seconds, "rows": inserted, **budget}


async def quix(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """Quix Streams + PostgreSQLSink as a subprocess in .venv-bench (see quix_app.py)."""
    conn = await asyncpg.connect(run.admin_dsn)
    table_ = await run.scratch_table(conn, "quix")
    u = urlsplit(run.admin_dsn)
    pg = {"host": u.hostname, "port": u.port or 5432, "dbname": unquote(u.path[1:]), "user": unquote(u.username or "")}
    pg |= {"password": unquote(u.password or "")}
    config: dict[str, Any] = {"bootstrap": run.base.kafka.bootstrap_servers, "topic": run.topic("a")}
    config |= {"group": run.group("quix")}
    config |= {"table": table_, "pg": pg, "idle_s": IDLE_S} | QUIX
    try:
        with tempfile.TemporaryDirectory(prefix="bench-quix-") as state_dir:
            config["state_dir"] = state_dir
            argv = [str(BENCH_PYTHON), "-m", "benchmarks.scenarios.quix_app"]
            proc = await run_sampled(argv, {**os.environ, "BENCH_QUIX_CONFIG": json.dumps(config)})
        proc.check_exit()
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        run.check("quix", "messages processed", args.ticks, out["messages"])
        run.check("quix", "rows the sink reports written", args.ticks, out["rows_written"])
        run.check("quix", "rows in scratch table", args.ticks, await conn.fetchval(f"SELECT count(*) FROM {table_}"))
    finally:
        await conn.close()
    # Busy time: first message to last, plus any write that started after the
    # last message (the final checkpoint runs only once the idle timeout ends).
    writes, last = out["writes"], out["last_message_at"]
    seconds = last - out["first_message_at"] + sum(end - start for start, end, _ in writes if start >= last)
    figures = {"ticks_per_s": out["rows_written"] / seconds, "rows": out["rows_written"], "sink_writes": len(writes)}
    return figures | QUIX | {"peak_rss_mb": proc.peak_rss_kb / 1024, "quixstreams": out["quixstreams"]}


def _buckets() -> dict[float, float]:
    samples = (s for m in metrics.TICK_TO_QUOTE_SECONDS.collect() for s in m.samples)
    return {float(s.labels["le"]): s.value for s in samples if s.name.endswith("_bucket")}


async def freshness(run: Run, args: argparse.Namespace, offered: int) -> dict[str, Any]:
    """The consumer in this process, a paced producer in another, at ``offered`` ticks/s."""
    name = f"fresh{offered}"
    settings = run.settings(name, f"{run.prefix}.{name}.ticks")
    source, topic, k = run.source(name), settings.kafka.ticks_topic, settings.kafka
    await publish(k, [], source)  # creates the topics

    def lag() -> tuple[float, int]:
        labels = ({"topic": topic, "partition": str(p)} for p in range(k.partitions))
        lags = (metrics.REGISTRY.get_sample_value("nexanest_consumer_lag_messages", la) or 0 for la in labels)
        return time.monotonic(), int(sum(lags))

    stop, lags = asyncio.Event(), []
    consumer = asyncio.create_task(run_consumer(settings, stop))
    with observed(metrics.TICK_TO_QUOTE_SECONDS) as ((observed_at, latencies),):
        try:
            await asyncio.sleep(2.0)  # the group join and the start-up quote rebuild come first
            before = _buckets()
            sizes = map(str, (offered, args.fresh_seconds, args.symbols, args.seed))
            argv = [sys.executable, "-m", MODULE, "paced-producer", topic, source, *sizes]
            producer = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
            produced = asyncio.ensure_future(producer.communicate())
            while not produced.done():
                lags.append(lag())
                await asyncio.wait({produced}, timeout=0.25)
            if producer.returncode != 0:
                raise RuntimeError(f"paced producer exited {producer.returncode}")
            prod = json.loads(produced.result()[0].decode().strip().splitlines()[-1])
            deadline = time.monotonic() + 60
            consumed = "nexanest_consumer_messages_total"
            while (metrics.REGISTRY.get_sample_value(consumed, {"topic": topic}) or 0) < prod["published"]:
                if time.monotonic() > deadline or consumer.done():
                    break
                lags.append(lag())
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            stats = await consumer

    run.check(name, "rows the consumer reports written", prod["published"], stats.written)
    await run.stored_once(name, source, prod["published"], strict=True)
    since = prod["started_at"] + WARMUP_S
    window = [v * 1000 for t, v in zip(observed_at, latencies, strict=True) if t >= since]
    lag_window = [v for t, v in lags if t >= since] or [0]
    if not window:
        raise RuntimeError(f"{name}: no quote latency observed after the warm-up")
    delta = sorted((le, c - before.get(le, 0.0)) for le, c in _buckets().items())
    out = {"offered_ticks_per_s": offered, "achieved_ticks_per_s": prod["published"] / prod["seconds"]}
    out |= {"producer_behind_schedule_max_s": prod["behind"], "published": prod["published"]}
    out |= {"warmup_s": WARMUP_S, "p50_ms": percentile(window, 50), "p99_ms": percentile(window, 99)}
    out |= {"max_ms": max(window), "observations": len(window)}
    out |= {"histogram_p99_le_ms": 1000 * next(le for le, c in delta if c >= 0.99 * delta[-1][1])}
    out |= {"lag_p50_messages": percentile(lag_window, 50), "lag_max_messages": max(lag_window)}
    return out | {"mean_batch_rows": stats.written / max(stats.batches, 1)}


async def paced_producer(topic: str, source: str, rate: float, seconds: float, symbols: int, seed: int) -> None:
    """Subcommand: the synthetic feed at ``rate`` ticks/s through ``TickPublisher``.

    Every 10 ms step takes the next ticks and stamps them with the wall time they
    are handed to Kafka, so the latency measured downstream starts when a tick is
    published: if this process cannot keep up (it shares two cores with the
    consumer and the services), its delay is not charged to the pipeline but
    reported as ``behind_schedule``. Up to 8 steps are in flight at once."""
    producer = make_producer(load_settings().kafka)
    await producer.start()
    total, per_step = int(rate * seconds), max(1, round(rate * 0.01))
    ticks = SyntheticFeed(feed_config(total, symbols, seed, source, time.time_ns(), rate)).generate()
    publisher = TickPublisher(producer, topic, source)
    in_flight: set[asyncio.Task[None]] = set()
    behind, sent = [0.0], 0
    try:
        started = time.monotonic()
        while sent < total:
            now_ns = time.time_ns()
            taken = itertools.islice(ticks, min(per_step, total - sent))
            step = [msgspec.structs.replace(t, ts_ns=now_ns) for t in taken]
            task = asyncio.create_task(publisher.publish(step))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            sent += len(step)
            if len(in_flight) >= 8:
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            delay = started + sent / rate - time.monotonic()
            behind.append(max(0.0, -delay))
            await asyncio.sleep(max(0.0, delay))
        await asyncio.gather(*in_flight)
        await producer.flush()
        elapsed = time.monotonic() - started
    finally:
        await producer.stop()
    out = {"published": publisher.published, "seconds": elapsed, "started_at": started, "behind": max(behind)}
    print(json.dumps(out))


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    q = args.quick  # the defaults of --quick, where no option says otherwise
    args.ticks, args.rates = args.ticks or (200_000 if q else 1_000_000), args.rates or [5000, 20000, 50000][: 3 - q]
    args.fresh_seconds, args.naive_budget = args.fresh_seconds or 20 - 10 * q, args.naive_budget or 30 - 15 * q
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    log = report.log("bench")

    async def scenario(name: str, fn: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any] | None:
        """One scenario; a failure is recorded (rate null) and the suite goes on."""
        log(f"{name} ...")
        try:
            results[name] = await fn()
        except (CountMismatch, RuntimeError, TimeoutError, OSError, asyncpg.PostgresError) as exc:
            errors[name], results[name] = f"{type(exc).__name__}: {exc}", None
            log(f"{name} FAILED: {errors[name]}")
        else:
            log(f"{name} done" + (f": {tps(results, name):,.0f} ticks/s" if tps(results, name) else ""))
        gc.collect()
        done: dict[str, Any] | None = results[name]
        return done

    # The same ticks under three sources: a (every reader), b (exactly-once off), c (memory);
    # tick times an hour back, inside the validator's window for the whole run.
    start_ns = time.time_ns() - 3600 * 10**9
    feeds = "abc" if "memory" not in args.skip else "ab"
    configs = {f: feed_config(args.ticks, args.symbols, args.seed, run.source(f), start_ns) for f in feeds}
    for f, config in configs.items():
        kafka = run.base.kafka.model_copy(update={"ticks_topic": run.topic(f)})
        published, _ = await publish(kafka, config, config.source)
        run.check("producer", f"ticks of feed {f} acknowledged by Kafka", args.ticks, published)
    await scenario("db_ceiling", lambda: db_ceiling(run, configs["a"]))
    await scenario("kafka_perf_tool", lambda: kafka_perf_tool(run, run.topic("a"), args.ticks))
    await scenario("client_ceiling", lambda: client_ceiling(run, run.topic("a"), args.ticks, IDLE_S))
    await scenario("pipeline", partial(pipeline, run, args, "pipeline", "a", configs["a"].source, exactly_once=True))
    alo = partial(pipeline, run, args, "pipeline_alo", "b", configs["b"].source, exactly_once=False)
    await scenario("pipeline_at_least_once", alo)
    for name, fn in (("naive_insert", partial(naive_insert, run, args)), ("quix", partial(quix, run, args))):
        if name.split("_")[0] not in args.skip:
            await scenario(name, fn)
    if "memory" not in args.skip:
        await scenario("memory", partial(memory, run, args, configs["c"].source))
    fresh = [] if "freshness" in args.skip else args.rates
    results["freshness"] = [await scenario(f"freshness_{r}", partial(freshness, run, args, r)) for r in fresh]

    pipe = tps(results, "pipeline")
    ratios = {name: ratio(pipe, tps(results, *path)) for name, path in RATIOS.items()}
    db, client = tps(results, "db_ceiling", "copy_records"), tps(results, "client_ceiling")
    ratios["pipeline_vs_ceiling"] = ratio(pipe, min(db, client)) if db and client else None
    at_20k = next((f for f in results["freshness"] if f and f["offered_ticks_per_s"] == 20000), None)
    figures = {
        **ratios,
        # Judged only where the harness really offered 20k ticks/s (within 5%).
        "p99_ms_at_20000": at_20k["p99_ms"] if at_20k and at_20k["achieved_ticks_per_s"] >= 0.95 * 20000 else None,
        "consumer_peak_rss_mb": (results.get("memory") or {}).get("peak_rss_mb"),
    }
    targets = {}
    for name, (op, bound) in TARGETS.items():
        value = figures[name]
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        targets[name] = {"value": value, "target": f"{op} {bound:g}", "met": met}
    parameters = {k: getattr(args, k) for k in ("ticks", "symbols", "seed", "rates")} | {"idle_seconds": IDLE_S}
    parameters |= {"partitions": run.base.kafka.partitions}
    parameters |= {"batch_max_rows": run.base.batch.max_rows}
    return {"parameters": parameters, "results": results, "ratios": ratios, "targets": targets, "errors": errors}


#: The throughput table's rows, top to bottom: label and the path of the figure in the results.
#: The throughput table, top to bottom: the path of the figure in the results, and its label.
ROWS = {
    "db_ceiling copy_records": "limit: database, binary COPY of the rows (asyncpg)",
    "db_ceiling copy_preencoded": "limit: database, binary COPY of pre-encoded buffers",
    "kafka_perf_tool": "limit: broker, Kafka ConsumerPerformance",
    "client_ceiling": "limit: client, aiokafka getmany + msgspec decode",
    "pipeline": "**our pipeline** (COPY + offsets + Redis quotes)",
    "pipeline_at_least_once": "our pipeline, exactly-once off (at-least-once)",
    "quix": "Quix Streams + PostgreSQLSink",
    "naive_insert": "naive consumer, one INSERT per message",
}
#: Its notes, formatted with the figure's record.
NOTES = {
    "db_ceiling copy_records": "empty copy of stock_prices, one transaction per batch",
    "db_ceiling copy_preencoded": "server share only (no client encoding)",
    "kafka_perf_tool": "fetch rate, group join excluded ({rebalance_ms:,.0f} ms)",
    "client_ceiling": "no writes",
    "pipeline": "{batches} batches, mean {mean_batch_rows:,.0f} rows",
    "pipeline_at_least_once": "offsets not stored in the database; same ticks, own topic",
    "quix": "quixstreams {quixstreams}, commit_interval={commit_interval:g}s, commit_every={commit_every}, "
    "{sink_writes} sink writes; peak RSS {peak_rss_mb:,.0f} MB",
    "naive_insert": "stopped at its {budget_s:g} s budget ({of_feed:.0%} of the feed)",
}
FRESHNESS = (
    "offered ticks/s|achieved|producer behind schedule, max s|p50 ms|p99 ms|max ms|histogram p99 ≤ ms|lag p50|lag max|"
    "mean batch"
)
FRESH_CELLS = (
    "offered_ticks_per_s:0 achieved_ticks_per_s:0 producer_behind_schedule_max_s:2 p50_ms:1 p99_ms:1 max_ms:1 "
    "histogram_p99_le_ms:1 lag_p50_messages:0 lag_max_messages:0 mean_batch_rows:0"
)


def markdown(result: dict[str, Any]) -> str:
    r, p, pipe = result["results"], result["parameters"], tps(result["results"], "pipeline")
    met = {True: "yes", False: "**no**", None: "n/a"}
    targets = [(k, n(t["value"], 2), t["target"], met[t["met"]]) for k, t in result["targets"].items()]
    others = [(k, n(result["ratios"][k], 2), "", "") for k in list(RATIOS)[:5]]

    def row(path: str) -> tuple[str, ...]:
        node: Any = r
        for key in path.split():
            node = (node or {}).get(key)
        figure = tps(r, *path.split())
        rows = n((node or {}).get("rows"))
        return ROWS[path], n(figure), n(ratio(pipe, figure), 2), rows, NOTES[path].format(**node) if node else ""

    lines = [
        *report.heading(result, result["mode"]),
        f"Feed: {p['ticks']:,} ticks, {p['symbols']} symbols, seed {p['seed']}, {p['partitions']} partitions; "
        f"pipeline batches of up to {p['batch_max_rows']:,} rows.",
        "",
        *table("scenario|ticks/s|pipeline ÷ this|rows checked|notes", map(row, ROWS), "lrrrl"),
        "",
        *table("ratio|value|target|met", [*targets, *others], "lrrl"),
    ]
    if fresh := [f for f in r.get("freshness") or [] if f]:
        lines += [
            "",
            f"Freshness (tick time, stamped when the producer hands the tick to Kafka, to quote visible in Redis; "
            f"{fresh[0]['warmup_s']:g} s warm-up excluded; the producer runs in its own process beside the consumer):",
            "",
            *table(FRESHNESS, (cells(f, FRESH_CELLS) for f in fresh), "r" * 10),
        ]
    if short := [
        n(f["offered_ticks_per_s"]) for f in fresh if f["achieved_ticks_per_s"] < 0.95 * f["offered_ticks_per_s"]
    ]:
        lines.append(
            f"\nThe producer could not offer {', '.join(short)} ticks/s on this machine beside the consumer: those "
            "rows are at the achieved rate, and a target at such a rate is not judged (n/a)."
        )
    if mem := r.get("memory"):
        lines.append(
            f"\nMemory of `nexanest consume` at saturation: peak RSS {n(mem['peak_rss_mb'])} MB, steady "
            f"{n(mem['steady_rss_mb'])} MB ({mem['samples']} samples over {mem['wall_s']:.0f} s)."
        )
    lines += report.closing(result)
    lines += ["", f"Count checks passed: {sum(c['ok'] for c in result['checks'])} of {len(result['checks'])}.", ""]
    return "\n".join(lines) + "\n"


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ticks", type=int, default=0, help="ticks in the feed (1M; quick 200k)")
    rates = "offered ticks/s of the freshness runs (5000,20000,50000; quick 5000,20000)"
    parser.add_argument("--rates", type=lambda s: [int(r) for r in s.split(",") if r], help=rates)
    parser.add_argument("--fresh-seconds", type=float, default=0, help="producer run per rate (20; quick 10)")
    parser.add_argument("--naive-budget", type=float, default=0, help="seconds for the naive consumer (30; quick 15)")
    parser.add_argument("--skip", default="", help="comma-separated: naive,quix,memory,freshness")


QUICK = "200k ticks, 10 s freshness runs, 15 s naive budget"

if __name__ == "__main__":
    if sys.argv[1:2] == ["paced-producer"]:
        topic, source, rate, seconds, symbols, seed = sys.argv[2:8]
        uvloop.run(paced_producer(topic, source, float(rate), float(seconds), int(symbols), int(seed)))
        sys.exit(0)
    sys.exit(main(__name__))
