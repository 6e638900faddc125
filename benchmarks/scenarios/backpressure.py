"""Backpressure: the consumer's memory while the database stalls (issue 5).

    python -m benchmarks.scenarios.backpressure [--quick] [--ticks N] [--stall-seconds 20]

When TimescaleDB stops accepting writes the consumer stops fetching, so its RSS
stays bounded (two batches plus the Kafka client's prefetch) however far the
topic runs ahead, and ingest resumes with nothing lost or doubled. 90% of the
feed is published; ``nexanest consume`` starts (RSS every 50 ms, progress and
lag from the broker every 250 ms); after a warm-up an owner connection holds
``LOCK TABLE stock_prices IN ACCESS EXCLUSIVE MODE`` while the rest is
published, and ``pg_locks`` shows the consumer's session waiting on it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from benchmarks.harness import report
from benchmarks.harness.report import n
from benchmarks.harness.run import BenchError, Run, main, publish
from benchmarks.harness.sampling import Proc, Processes, consume_argv
from nexanest.pipeline.kafka import connection_options, make_admin
from nexanest.pipeline.settings import Settings
from nexanest.producers.feeds.synthetic import SyntheticFeed

MIB = 1024 * 1024
TREND_ALLOWANCE_MB = 4.0  # RSS over the stall's last quarter may exceed its first quarter's by this much
_WAITERS = """
SELECT a.application_name, l.relation::regclass::text AS relation, l.mode
  FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted
 WHERE $1 = ANY(pg_blocking_pids(a.pid))
"""
log = report.log("backpressure")


async def sample_progress(settings: Settings, proc: Proc, progress: list[tuple[float, int, int]]) -> None:
    """(t, rows made durable, lag) from the broker every 250 ms: the consumer commits
    to Kafka after each database commit, and nothing here touches the locked table."""
    k = settings.kafka
    admin = make_admin(k, client_suffix="bench-progress")
    ends = AIOKafkaConsumer(**connection_options(k, "bench-progress"), enable_auto_commit=False)
    await admin.start()
    await ends.start()
    tps = [TopicPartition(k.ticks_topic, p) for p in range(k.partitions)]
    try:
        while proc.exit_code is None:
            try:
                committed = await admin.list_consumer_group_offsets(k.consumer_group)
                total = sum((await ends.end_offsets(tps)).values())
            except KafkaError as exc:  # a rebalance or a slow broker: skip this sample
                log(f"progress sample skipped: {exc!r}")
            else:
                written = sum(max(0, committed[tp].offset) for tp in tps if tp in committed)
                progress.append((time.time() - proc.started_at, written, total - written))
            await asyncio.sleep(0.25)
    finally:
        await ends.stop()
        await admin.close()


async def stall(run: Run, args: argparse.Namespace, settings: Settings, proc: Proc, tail: list[Any]) -> dict[str, Any]:
    """Hold ACCESS EXCLUSIVE on stock_prices while the held-back ticks are published;
    observe the consumer waiting on it early, midway and near the end."""
    conn = await asyncpg.connect(run.admin_dsn)
    out: dict[str, Any] = {"observations": []}

    def now() -> float:  # the trace's clock
        return time.time() - proc.started_at

    try:
        lock_pid = await conn.fetchval("SELECT pg_backend_pid()")
        tx = conn.transaction()  # rolled back below: the stall ends with it
        await tx.start()
        try:
            await conn.execute("SET LOCAL lock_timeout = '60s'")
            out["requested_s"] = now()
            # Granted once the consumer's current batch commits; its next COPY then queues behind us.
            await conn.execute("LOCK TABLE stock_prices IN ACCESS EXCLUSIVE MODE")
            out["from_s"] = now()
            log(f"stall: lock held from t={out['from_s']:.1f}s")
            publisher = asyncio.ensure_future(publish(settings.kafka, tail, run.sources[0]))
            for at in (min(2.0, args.stall_seconds / 4), args.stall_seconds / 2, args.stall_seconds - 1.0):
                await asyncio.sleep(max(0.0, out["from_s"] + at - now()))
                waiting = [dict(r) for r in await conn.fetch(_WAITERS, lock_pid)]
                mine = [w for w in waiting if w["application_name"] == args.app_name]
                seen = {"t_s": round(now(), 2), "consumer_waiting": mine, "others": len(waiting) - len(mine)}
                out["observations"].append(seen)
                log(f"stall: t={now():.1f}s consumer waiting: {mine}, rss {proc.rss[-1][1] / 1024:.1f} MB")
            out["published_during_stall"], _ = await publisher
            await asyncio.sleep(max(0.0, out["from_s"] + args.stall_seconds - now()))
        finally:
            await tx.rollback()
            out["to_s"] = now()
    finally:
        await conn.close()
    log(f"stall: released at t={out['to_s']:.1f}s")
    waits = [[w["relation"] for w in o["consumer_waiting"]] for o in out["observations"]]
    out["consumer_blocked"] = all("stock_prices" in w for w in waits)
    return out


def analyse(
    rss: list[tuple[float, int, int]], progress: list[tuple[float, int, int]], s: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """RSS and ingest before, during and after the stall, and the verdict."""
    total = progress[-1][1]
    first = next(t for t, w, _ in progress if w > 0)
    last = next(t for t, w, _ in progress if w == total)
    at_release = max((w for t, w, _ in progress if t <= s["to_s"]), default=0)
    resumed = next((t for t, w, _ in progress if t > s["to_s"] and w > at_release), None)
    before = [kb for t, kb, _ in rss if first <= t < s["from_s"]]
    during = [(t, kb) for t, kb, _ in rss if s["from_s"] <= t <= s["to_s"]]
    after = [kb for t, kb, _ in rss if resumed is not None and resumed <= t <= last]
    quarter = (s["to_s"] - s["from_s"]) / 4
    early = max(kb for t, kb in during if t <= s["from_s"] + quarter) / 1024
    late = max(kb for t, kb in during if t >= s["to_s"] - quarter) / 1024
    k = settings.kafka
    prefetch = min(k.fetch_max_bytes, k.max_partition_fetch_bytes * k.partitions)
    steady = statistics.median(before[len(before) // 2 :]) / 1024
    most = max(kb for _, kb in during) / 1024
    in_stall = [p for p in progress if s["from_s"] <= p[0] <= s["to_s"]]

    def rate(t0: float, t1: float) -> float | None:
        points = [p for p in progress if t0 <= p[0] <= t1]
        return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0]) if len(points) > 1 else None

    rss_mb: dict[str, float | None] = {"steady_before": steady, "max_during_stall": most, "trend": late - early}
    rss_mb |= {"peak": max(max(kb, h) for _, kb, h in rss) / 1024, "growth": most - steady}
    rss_mb |= {"after": statistics.median(after) / 1024 if after else None}
    rss_mb |= {"peak_at_s": max(rss, key=lambda x: x[1])[0]}  # VmHWM says how high, not when
    return {
        "rss_mb": rss_mb,
        "bounded": most - steady <= prefetch / MIB and late - early <= TREND_ALLOWANCE_MB,
        "bounded_rule": (
            "bounded = max VmRSS during the stall <= median VmRSS of the second half of the saturated ingest "
            f"before it + the Kafka prefetch bound ({prefetch / MIB:g} MiB: at most one more full fetch than at "
            f"saturation), and max VmRSS over the last quarter of the stall <= max over its first quarter + "
            f"{TREND_ALLOWANCE_MB:g} MiB (no growth while the database is stalled)"
        ),
        "bound": {"records": 2 * settings.batch.max_rows, "prefetch_bytes": prefetch, "partitions": k.partitions},
        "ingest": {
            "before": rate(first, s["from_s"]),
            "during": in_stall[-1][1] - in_stall[0][1] if in_stall else None,
            "after": rate(resumed, last) if resumed else None,
            "resumed_s": None if resumed is None else resumed - s["to_s"],
        },
        "lag": [in_stall[0][2], in_stall[-1][2]] if in_stall else [None, None],  # at the stall's start and end
    }


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    source, tail_n = run.source(), args.ticks // 10
    args.app_name = f"bench-{run.run_id}-consumer"
    settings = run.settings("consumer", f"{run.prefix}.ticks")
    ticks = SyntheticFeed(run.feed(args.ticks, source, time.time_ns() - 2 * 86400 * 10**9)).generate()
    prefilled, seconds = await publish(settings.kafka, itertools.islice(ticks, args.ticks - tail_n), source)
    tail = list(ticks)
    run.check("backpressure", "ticks acknowledged by Kafka before the consumer", args.ticks - tail_n, prefilled)
    log(f"published {prefilled:,} ticks in {seconds:.1f}s; {len(tail):,} held back")
    # application_name tells the consumer's sessions apart in pg_stat_activity.
    dsn = urlsplit(settings.timescale.dsn.get_secret_value())
    query = urlencode([*parse_qsl(dsn.query), ("application_name", args.app_name)])
    env = run.env(settings, NEXANEST_TIMESCALE__DSN=urlunsplit(dsn._replace(query=query)))
    group = Processes([consume_argv(args.idle_seconds)], env)
    proc, progress = group.procs[0], list[tuple[float, int, int]]()
    waiting = asyncio.ensure_future(group.wait(900))
    sampling = asyncio.ensure_future(sample_progress(settings, proc, progress))
    try:
        while not progress or progress[-1][1] == 0:
            if waiting.done() or time.time() - proc.started_at > 120:
                raise BenchError(f"no batch committed within 120 s of the consumer's start: {proc.stderr[-2000:]}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(args.warmup_seconds)
        # More left than the consumer may hold, or a stall proves nothing.
        if (backlog := progress[-1][2]) < 3 * settings.batch.max_rows:
            raise BenchError(f"only {backlog:,} ticks left before the stall: not saturated; use more --ticks")
        stalled = await stall(run, args, settings, proc, tail)
        (proc,) = await waiting
        await sampling
    finally:
        group.kill()
    proc.check_exit()
    ok = await run.stored_once("backpressure", source, args.ticks)
    ok = run.check("backpressure", "rows reported written", args.ticks, proc.consumed()["written"], strict=False) and ok
    figures = analyse(proc.rss, progress, stalled, settings)
    run.check("backpressure", "RSS bounded during the stall", True, figures["bounded"], strict=False)
    parameters: dict[str, Any] = {"consumer": f"nexanest consume --until-idle {args.idle_seconds:g}"}
    parameters |= {"published_before_consumer": prefilled, "published_during_stall": len(tail)}
    samples = {"samples": [(round(t, 2), round(kb / 1024, 1)) for t, kb, _ in proc.rss]}
    samples |= {"lag_samples": [(round(t, 2), lag) for t, _, lag in progress]}
    return {"parameters": parameters, "stall": stalled, **figures, "rows_ok": ok, **samples}


def markdown(result: dict[str, Any]) -> str:
    p, m, s, b, g, lag = (result[k] for k in ("parameters", "rss_mb", "stall", "bound", "ingest", "lag"))
    waits = [w for o in s["observations"] for w in o["consumer_waiting"]]
    rows, seqs, *_ = next(c["actual"] for c in result["checks"] if c["what"].startswith("rows, distinct seq"))
    end = f"{n(lag[1])} at its end"
    seen = f"waiting for {waits[0]['mode']} on {waits[0]['relation']} (pg_locks)" if s["consumer_blocked"] else ""
    lines = [
        *report.heading(result, f"backpressure · {result['mode']}"),
        f"`{p['consumer']}` (subprocess, RSS from /proc every 50 ms) over {p['ticks']:,} ticks ({p['symbols']} "
        f"symbols, seed {p['seed']}): {p['published_before_consumer']:,} published before it started, "
        f"{p['published_during_stall']:,} while the database was stalled. Stall: `LOCK TABLE stock_prices IN ACCESS "
        f"EXCLUSIVE MODE` held by an owner connection from t={s['from_s']:.1f} s to t={s['to_s']:.1f} s "
        f"({s['to_s'] - s['from_s']:.1f} s); the consumer's session was seen {seen or '**not** waiting on it'}.",
        "",
        *report.table(
            "|RSS MB|ingest ticks/s|lag (messages)",
            [
                ("before the stall (steady)", n(m["steady_before"], 1), n(g["before"]), f"{n(lag[0])} at its start"),
                ("during the stall (max)", n(m["max_during_stall"], 1), f"{n(g['during'])} rows committed", end),
                (
                    "after the stall (steady)",
                    n(m["after"], 1),
                    n(g["after"]),
                    f"resumed {n(g['resumed_s'], 2)} s after",
                ),
                (f"peak (VmHWM; highest sample at t={m['peak_at_s']:.1f} s)", n(m["peak"], 1), "", ""),
            ],
            "lrrr",
        ),
        "",
        f"Bound from the settings: at most {b['records']:,} records in hand (two batches of batch.max_rows) plus the "
        f"Kafka client's prefetch, at most {b['prefetch_bytes'] / MIB:g} MiB (fetch_max_bytes, max_partition_fetch_"
        f"bytes x {b['partitions']} partitions). RSS growth during the stall {n(m['growth'], 1)} MB, trend over it "
        f"{n(m['trend'], 1)} MB: **bounded: {'yes' if result['bounded'] else 'NO'}** ({result['bounded_rule']}).",
        "",
        f"Rows: {rows:,} of {p['ticks']:,} in stock_prices, {seqs:,} distinct seq: **rows_ok: "
        f"{'yes' if result['rows_ok'] else 'NO'}**. RSS and lag over time: "
        "[plots/backpressure_rss.png](plots/backpressure_rss.png) (`make bench-plots`).",
        *report.closing(result),
    ]
    return "\n".join(lines) + "\n"


OPTIONS = {
    "ticks": (1_000_000, 500_000, "ticks in the feed"),
    "stall_seconds": (20.0, None, "the stall (under the 60 s command timeout)"),
    "warmup_seconds": (8.0, 3.0, "ingest at saturation before the stall"),
    "idle_seconds": (3.0, None, "the consumer's --until-idle"),
}

if __name__ == "__main__":
    raise SystemExit(main(__name__))
