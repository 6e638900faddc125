"""The benchmark suite of issues 5 and 15: every figure beside its reference, every target met or missed.

    python -m benchmarks.scenarios.suite [--quick] [--ticks N] [--rates 5000,20000,50000] [--skip ...]

The same ticks go to four topics under four sources (``stock_prices`` refuses
a ``(source, seq, time)`` it holds). Each consumer reads with its own group: the
**limits** (``limits``, with the one-index COPY reference); **the pipeline** in
this process (``run_consumer``, exactly-once on and off; rates from the first
batch to the end of the last write); a **naive** consumer (one INSERT per
message, for a time budget) and **Quix Streams** (``quix_app``); **`nexanest
consume`** as a subprocess on a backlog, as it runs by default and with one
process (first stored row, rate on the database's clock, memory);
**freshness** (``nexanest produce synthetic`` and the consumer, each a process:
the tick's own timestamp to its quote update on the quote channel). Then the
**targets** table: each target with its figure and met or missed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import re
import statistics
import sys
import tempfile
import time
from array import array
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import redis.asyncio as redis
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import OffsetAndMetadata

from benchmarks.harness import report
from benchmarks.harness.report import cells, n, ratio, table
from benchmarks.harness.run import CountMismatch, Run, busy_s, db_clock, main, publish
from benchmarks.harness.sampling import NEXANEST, ROOT, Proc, Processes, consume_argv, percentile, run_sampled
from benchmarks.scenarios.limits import client_ceiling, db_ceiling, kafka_perf_tool
from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.pipeline import metrics
from nexanest.pipeline.kafka import connection_options
from nexanest.pipeline.sinks.redis_quotes import parse_quote_update, quote_channel
from nexanest.pipeline.sinks.timescale import COLUMNS, stock_price_row
from nexanest.producers.feeds.synthetic import symbol_names
from nexanest.schemas.ticks import decode_tick

BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
IDLE_S, WARMUP_S = 3.0, 1.0  # a consumer stops after this long idle; latencies ignored at the start of a rate
#: Quix Streams' checkpoint: ``commit_every=20000`` was the fastest of 0, 5,000 and 20,000 (RESULTS.md, 2026-11-25).
QUIX = {"commit_interval": 5.0, "commit_every": 20_000}
#: The environment of the one-process run of ``nexanest consume`` (a setting it does not know is ignored:
#: while it always runs one process, both runs are the same command).
#: What the freshness runs start, each a process: the first is ``nexanest consume`` (its summary line counts
#: the rows); a quote fast path of its own would be one more entry.
FRESHNESS_CONSUMERS = [[str(NEXANEST), "consume"]]
#: The freshness follower listens to every SAMPLED-th symbol's quote channel: a tenth of the quotes is
#: plenty for a p99, and this process (on the same two cores) stays light.
SAMPLED = 10
#: The consumer's offsets, written in the transaction of each batch: stored yet, and how many rows.
FIRST_ROW = "SELECT EXISTS (SELECT 1 FROM ingest_offsets WHERE consumer_group = $1 AND next_offset > 0)"
STORED = "SELECT sum(next_offset)::bigint FROM ingest_offsets WHERE consumer_group = $1"
_PUBLISHED = re.compile(r"published ([\d,]+) ticks in ([\d.]+)s")
#: Ratio name -> the figure the in-process pipeline's rate is divided by (a path in the results).
RATIOS = {
    "pipeline_vs_db_ceiling": ("db_ceiling", "copy_records"),
    "pipeline_vs_db_preencoded": ("db_ceiling", "copy_preencoded"),
    "pipeline_vs_db_one_index": ("db_ceiling", "copy_one_index"),
    "pipeline_vs_client_ceiling": ("client_ceiling",),
    "exactly_once_vs_at_least_once": ("pipeline_at_least_once",),
    "pipeline_vs_broker_ceiling": ("kafka_perf_tool",),
    "pipeline_vs_quix": ("quix",),
    "pipeline_vs_naive": ("naive_insert",),
    "pipeline_vs_consume_default": ("consume_default",),
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


async def consume(run: Run, args: argparse.Namespace, name: str, feed: str, source: str, **env: str) -> dict[str, Any]:
    """``nexanest consume`` as a subprocess (``env`` on top of the run's) over a pre-filled topic of its own:
    seconds from its start to the first stored row (its offsets in ``ingest_offsets``, written in the
    transaction of its first batch, polled every 10 ms), ticks/s on the database's clock (``db_clock``),
    peak RSS of the process started."""
    settings = run.settings(name, run.topic(feed))
    conn = await asyncpg.connect(run.admin_dsn)
    try:
        started, first_row_s = time.monotonic(), None
        waiting = asyncio.ensure_future(Processes([consume_argv(IDLE_S)], run.env(settings, **env)).wait(900))
        while first_row_s is None and not waiting.done():
            if await conn.fetchval(FIRST_ROW, settings.kafka.consumer_group):
                first_row_s = time.monotonic() - started
            else:
                await asyncio.wait({waiting}, timeout=0.01)
        (proc,) = await waiting
        proc.check_exit()
        clock = await db_clock(conn, source)
    finally:
        await conn.close()
    out = proc.consumed()
    run.check(name, "rows the consumer reports written", args.ticks, out["written"])
    run.check(name, "rows dead-lettered (none expected)", 0, out["dead_lettered"])
    await run.stored_once(name, source, args.ticks, strict=True)
    busy = [kb for t, kb, _ in proc.rss if t <= (proc.exited_at or 0) - proc.started_at - IDLE_S]
    figures = {"first_row_s": first_row_s, "peak_rss_mb": proc.peak_rss_kb / 1024, "rows": out["written"]}
    figures |= {"steady_rss_mb": statistics.median(busy[len(busy) // 2 :] or [kb for _, kb, _ in proc.rss]) / 1024}
    return clock | figures | {"batches": out["batches"], "env": " ".join(f"{k}={v}" for k, v in env.items())}


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


async def _assigned(proc: Proc, running: asyncio.Future[Any]) -> None:
    """Until the consumer logged its partitions assigned (it has joined the group and
    resumed from the database): the feed then starts on a consumer ready for it."""
    deadline = time.monotonic() + 60
    while b"partitions_assigned" not in (logged := os.pread(proc.files[1].fileno(), 1 << 20, 0)):
        if running.done() or time.monotonic() > deadline:
            raise RuntimeError(f"the consumer did not join its group within 60 s: {logged[-2000:]!r}")
        await asyncio.wait({running}, timeout=0.05)


async def freshness(run: Run, args: argparse.Namespace, offered: int) -> dict[str, Any]:
    """The product end to end at ``offered`` ticks/s: ``nexanest produce synthetic`` (the feed stamps each
    tick with its own clock when it creates it; the publisher batches) and ``FRESHNESS_CONSUMERS``, each a
    process. This process follows the quote channels of every ``SAMPLED``-th symbol (what a user's quote
    stream receives): latency = receipt - the tick's own timestamp. The consumer stops (SIGTERM) once
    its stored offsets reach the published ticks."""
    name = f"fresh{offered}"
    settings = run.settings(name, f"{run.prefix}.{name}.ticks")
    source, prefix, count = run.source(name), settings.redis.quote_key_prefix, int(offered * args.fresh_seconds)
    await publish(settings.kafka, [], source)  # creates the topics
    r = settings.redis
    follower = redis.Redis.from_url(r.url.get_secret_value(), db=r.db_quotes)  # no socket timeout: it waits
    pubsub = follower.pubsub()
    await pubsub.subscribe(*(quote_channel(prefix, s) for s in symbol_names(args.symbols)[::SAMPLED]))
    env = run.env(settings, NEXANEST_LOG__LEVEL="info", NEXANEST_LOG__JSON="false")
    consumers = Processes(FRESHNESS_CONSUMERS, env)
    running = asyncio.ensure_future(consumers.wait(120 + 3 * args.fresh_seconds))
    conn = await asyncpg.connect(run.admin_dsn)
    received, ts, producer = array("q"), array("q"), None
    try:
        await _assigned(consumers.procs[0], running)
        feed = ["--rate", str(offered), "--count", str(count), "--symbols", str(args.symbols), "--seed", str(args.seed)]
        producer = Processes([[str(NEXANEST), "produce", "synthetic", *feed, "--source", source]], run.env(settings))
        produced = asyncio.ensure_future(producer.wait(120 + 3 * args.fresh_seconds))
        stored, deadline = 0, time.monotonic() + 120 + 3 * args.fresh_seconds
        while stored < count and not running.done() and time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
            if message is not None:
                received.append(time.time_ns())
                ts.append(parse_quote_update(message["data"]).ts_ns)
            elif produced.done():  # quiet: has the consumer stored everything?
                stored = await conn.fetchval(STORED, settings.kafka.consumer_group) or 0
        (prod,) = await produced
        prod.check_exit()
        consumers.terminate()
        for proc in await running:
            proc.check_exit()
    finally:
        for group in (consumers, producer):
            if group is not None:
                group.kill()  # those still running: after an error
        await conn.close()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await follower.aclose()
    if (line := _PUBLISHED.search(prod.stdout)) is None:
        raise RuntimeError(f"{name}: no 'published' line from the producer: {prod.stdout[-500:]}")
    published, seconds, out = int(line[1].replace(",", "")), float(line[2]), consumers.procs[0].consumed()
    run.check(name, "ticks acknowledged by Kafka", count, published)
    run.check(name, "rows the consumer reports written", published, out["written"])
    await run.stored_once(name, source, published, strict=True)
    if len(ts) < 2:
        raise RuntimeError(f"{name}: {len(ts)} quote updates received")
    since = min(ts) + WARMUP_S * 1e9
    window = [(rc - t) / 1e6 for rc, t in zip(received, ts, strict=True) if t >= since]
    if not window:
        raise RuntimeError(f"{name}: no quote update after the warm-up")
    # The producer's own figure: its seconds include its start (topics, producer, an event), a few % low.
    out_ = {"offered_ticks_per_s": offered, "achieved_ticks_per_s": published / seconds, "published": published}
    out_ |= {"warmup_s": WARMUP_S, "p50_ms": percentile(window, 50), "p99_ms": percentile(window, 99)}
    out_ |= {"max_ms": max(window), "observations": len(window), "sampled_symbols": -(-args.symbols // SAMPLED)}
    return out_ | {"mean_batch_rows": out["written"] / max(out["batches"], 1)}


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
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

    # The same ticks under four sources: a (every in-process reader), b (exactly-once off), c (`nexanest
    # consume` as it runs by default), d (one process: today the same configuration as c, since `nexanest
    # consume` runs one process and has no process count; kept apart so a count can be measured against it);
    # tick times an hour back, inside the validator's window.
    start_ns = time.time_ns() - 3600 * 10**9
    processes = "consume" not in args.skip and "memory" not in args.skip
    feeds = "abcd" if processes else "ab"
    configs = {f: run.feed(args.ticks, run.source(f), start_ns) for f in feeds}
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
    if processes:
        await scenario("consume_default", partial(consume, run, args, "default", "c", configs["c"].source))
        await scenario("consume_one", partial(consume, run, args, "one", "d", configs["d"].source))
    fresh = [] if "freshness" in args.skip else args.rates
    results["freshness"] = [await scenario(f"freshness_{r}", partial(freshness, run, args, r)) for r in fresh]

    pipe = tps(results, "pipeline")
    ratios = {name: ratio(pipe, tps(results, *path)) for name, path in RATIOS.items()}
    db, client = tps(results, "db_ceiling", "copy_records"), tps(results, "client_ceiling")
    ratios["pipeline_vs_ceiling"] = ratio(pipe, min(db, client)) if db and client else None
    parameters = {"idle_seconds": IDLE_S, "partitions": run.base.kafka.partitions}
    parameters |= {"batch_max_rows": run.base.batch.max_rows}
    out = {"parameters": parameters, "results": results, "ratios": ratios, "errors": errors}
    return out | {"targets": targets(results, ratios, run.checks, newest("growth"))}


def newest(scenario: str) -> dict[str, Any] | None:
    """The newest saved result of another scenario (``make bench`` runs growth before the suite)."""
    found = sorted(report.RESULTS_DIR.glob(f"{scenario}-*.json"))
    return json.loads(found[-1].read_text()) if found else None


def targets(
    r: dict[str, Any], ratios: dict[str, float | None], checks: list[dict[str, Any]], growth: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Every target of issues 5 and 15 with its figure from this run (reads: from ``growth``) and whether it was met."""
    default, one = r.get("consume_default") or {}, r.get("consume_one") or {}
    one_index = ratio(tps(r, "consume_default"), tps(r, "db_ceiling", "copy_one_index"))
    fresh = {f["offered_ticks_per_s"]: f for f in r.get("freshness") or [] if f}

    def p99(rate: int) -> tuple[float | None, str]:  # judged only where the feed ran at the rate offered (5%)
        if (f := fresh.get(rate)) is None:
            return None, "not measured"
        if f["achieved_ticks_per_s"] < 0.95 * rate:
            return None, f"not judged: the feed ran at {f['achieved_ticks_per_s']:,.0f}/s (p99 {f['p99_ms']:,.1f} ms)"
        return f["p99_ms"], "from the tick's own timestamp"

    p20, p5, reads = p99(20_000), p99(5_000), (growth or {}).get("queries") or {}
    at = f" of {growth.get('started_at', '?')[:16]}" if growth else ""  # the newest: say which, a stale one shows
    rows = f"{growth['parameters']['rows']:,} rows, growth run `{growth['run_id']}`{at}" if growth else "no growth run"
    passed = sum(c["ok"] for c in checks)
    items: list[tuple[str, float | None, str, float, str]] = [
        (
            "end to end, `nexanest consume` as it runs by default, ticks/s",
            tps(r, "consume_default"),
            ">=",
            100_000,
            "backlog, exactly-once, rollups on; database clock",
        ),
        (
            "the same ÷ the one-index COPY limit",
            one_index,
            ">=",
            0.5,
            "limit: pre-encoded COPY into a table with only (symbol, time DESC)",
        ),
        ("one consumer process, ticks/s", tps(r, "consume_one"), ">=", 60_000, one.get("env") or ONE_PROCESS_HOW),
        ("p99 tick-to-quote at 20,000 ticks/s offered, ms", p20[0], "<=", 50, p20[1]),
        ("p99 tick-to-quote at 5,000 ticks/s offered, ms", p5[0], "<=", 20, p5[1]),
        (
            "first stored row after starting `nexanest consume` on a backlog, s",
            default.get("first_row_s"),
            "<=",
            1,
            "subprocess start to its first batch's offsets visible",
        ),
        ("latest 1,000 ticks of a symbol, ms", (reads.get("latest_1000_bounded") or {}).get("wall_ms"), "<=", 20, rows),
        ("a day of 1-minute bars, ms", (reads.get("bars_1m_day") or {}).get("wall_ms"), "<=", 30, rows),
        (
            "exactly-once: count checks passed (every tick stored once, counts as published)",
            passed,
            "=",
            len(checks),
            "every scenario's, this run",
        ),
        ("issue 5: in-process pipeline ÷ min(database, client) limit", ratios["pipeline_vs_ceiling"], ">=", 0.5, ""),
        ("issue 5: pipeline ÷ Quix Streams", ratios["pipeline_vs_quix"], ">=", 3, ""),
        ("issue 5: pipeline ÷ naive consumer", ratios["pipeline_vs_naive"], ">=", 20, ""),
        ("issue 5: peak RSS of `nexanest consume`, MB", default.get("peak_rss_mb"), "<=", 250, "the process started"),
    ]
    out = []
    for what, value, op, bound, note in items:
        met = None if value is None else {">=": value >= bound, "<=": value <= bound, "=": value == bound}[op]
        out.append({"target": what, "value": value, "bound": f"{op} {bound:,g}", "met": met, "note": note})
    return out


#: The throughput table, top to bottom: the path of the figure in the results, and its label.
ROWS = {
    "db_ceiling copy_one_index": "limit: database, binary COPY, only the (symbol, time DESC) index",
    "db_ceiling copy_records": "limit: database, binary COPY of the rows (asyncpg)",
    "db_ceiling copy_preencoded": "limit: database, binary COPY of pre-encoded buffers",
    "kafka_perf_tool": "limit: broker, Kafka ConsumerPerformance",
    "client_ceiling": "limit: client, aiokafka getmany + msgspec decode",
    "consume_default": "**`nexanest consume`**, as it runs by default",
    "consume_one": "`nexanest consume`, one process",
    "pipeline": "our pipeline in this process (COPY + offsets + Redis quotes)",
    "pipeline_at_least_once": "our pipeline, exactly-once off (at-least-once)",
    "quix": "Quix Streams + PostgreSQLSink",
    "naive_insert": "naive consumer, one INSERT per message",
}
#: How the one-process row is run: `nexanest consume` has no process count (one process a command).
ONE_PROCESS_HOW = "`nexanest consume` runs one process: a second run of the default"
#: Its notes, formatted with the figure's record.
NOTES = {
    "db_ceiling copy_one_index": "pre-encoded buffers into an empty copy of stock_prices keeping one index",
    "db_ceiling copy_records": "empty copy of stock_prices with all its indexes, one transaction per batch",
    "db_ceiling copy_preencoded": "server share only (no client encoding)",
    "kafka_perf_tool": "fetch rate, group join excluded ({rebalance_ms:,.0f} ms)",
    "client_ceiling": "no writes",
    "consume_default": "subprocess, database clock; first row after {first_row_s:.2f} s; {batches} batches",
    "consume_one": "a second run of the default (one process); first row after {first_row_s:.2f} s; {batches} batches",
    "pipeline": "`run_consumer`, busy time; {batches} batches, mean {mean_batch_rows:,.0f} rows",
    "pipeline_at_least_once": "offsets not stored in the database; same ticks, own topic",
    "quix": "quixstreams {quixstreams}, commit_interval={commit_interval:g}s, commit_every={commit_every}, "
    "{sink_writes} sink writes; peak RSS {peak_rss_mb:,.0f} MB",
    "naive_insert": "stopped at its {budget_s:g} s budget ({of_feed:.0%} of the feed)",
}
FRESHNESS = "offered ticks/s|achieved|p50 ms|p99 ms|max ms|quote updates observed|mean batch"
FRESH_CELLS = "offered_ticks_per_s:0 achieved_ticks_per_s:0 p50_ms:1 p99_ms:1 max_ms:1 observations:0 mean_batch_rows:0"
MET = {True: "**met**", False: "**missed**", None: "n/a"}


def markdown(result: dict[str, Any]) -> str:
    r, p, pipe = result["results"], result["parameters"], tps(result["results"], "pipeline")

    def row(path: str) -> tuple[str, ...]:
        node: Any = r
        for key in path.split():
            node = (node or {}).get(key)
        figure = tps(r, *path.split())
        rows = n((node or {}).get("rows"))
        return ROWS[path], n(figure), n(ratio(pipe, figure), 2), rows, NOTES[path].format(**node) if node else ""

    def figure(value: float | None) -> str:
        return n(value, 0 if isinstance(value, int) or (value is not None and abs(value) >= 1000) else 2)

    goals = [(t["target"], figure(t["value"]), t["bound"], MET[t["met"]], t["note"]) for t in result["targets"]]
    lines = [
        *report.heading(result, result["mode"]),
        f"Feed: {p['ticks']:,} ticks, {p['symbols']} symbols, seed {p['seed']}, {p['partitions']} partitions; "
        f"pipeline batches of up to {p['batch_max_rows']:,} rows.",
        "",
        "**Targets** (issue 15, and issue 5's that still hold):",
        "",
        *table("target|measured|bound|met|how", goals, "lrrll"),
        "",
        *table("scenario|ticks/s|in-process pipeline ÷ this|rows checked|notes", map(row, ROWS), "lrrrl"),
        "",
        *table("ratio|value", ((k, n(v, 2)) for k, v in result["ratios"].items()), "lr"),
    ]
    if fresh := [f for f in r.get("freshness") or [] if f]:
        lines += [
            "",
            "Freshness (`nexanest produce synthetic` and the consumer, each a process: from the tick's own timestamp, "
            "set by the feed when it creates the tick, to its quote update received on the quote channels of "
            f"{fresh[0]['sampled_symbols']} of the {p['symbols']} symbols; the first {fresh[0]['warmup_s']:g} s of "
            "tick time excluded; achieved: as the producer reports it, its start-up included):",
            "",
            *table(FRESHNESS, (cells(f, FRESH_CELLS) for f in fresh), "r" * 7),
        ]
    if short := [
        n(f["offered_ticks_per_s"]) for f in fresh if f["achieved_ticks_per_s"] < 0.95 * f["offered_ticks_per_s"]
    ]:
        lines.append(
            f"\nThe feed did not run at {', '.join(short)} ticks/s on this machine beside the consumer: those rows are "
            "at the achieved rate, and a target at such a rate is not judged (n/a)."
        )
    if mem := r.get("consume_default"):
        lines.append(
            f"\nMemory of `nexanest consume` at saturation: peak RSS {n(mem['peak_rss_mb'])} MB, steady "
            f"{n(mem['steady_rss_mb'])} MB (the process started)."
        )
    lines += report.closing(result)
    lines += ["", f"Count checks passed: {sum(c['ok'] for c in result['checks'])} of {len(result['checks'])}.", ""]
    return "\n".join(lines) + "\n"


OPTIONS = {
    "ticks": (1_000_000, 200_000, "ticks in the feed"),
    "rates": ([5000, 20000, 50000], [5000, 20000], "offered ticks/s of the freshness runs"),
    "fresh_seconds": (20.0, 10.0, "the feed's run per rate, s"),
    "naive_budget": (30.0, 15.0, "seconds for the naive consumer"),
    "skip": ("", None, "comma-separated: naive,quix,consume,freshness"),
}

if __name__ == "__main__":
    sys.exit(main(__name__))
