"""Backpressure: the consumer's memory while the database stalls (issue 5).

    python -m benchmarks.scenarios.backpressure [--ticks N] [--quick] [--stall-seconds 20] [--update-results]

The claim under test: when TimescaleDB stops accepting writes, the consumer
stops fetching from Kafka, so its memory stays bounded by what it has fetched
but not written (``pipeline/runner.py``: at most two batches of
``batch.max_rows`` records, the one being written and the one taken behind it,
plus whatever the Kafka client prefetched, itself capped by
``kafka.fetch_max_bytes``), however
far the topic runs ahead; and once the database is back, ingest resumes by
itself with nothing lost or doubled.

How:

1. A synthetic feed (fixed seed, 300 symbols, ``--ticks`` ticks, tick times
   two days back so its OHLCV bars share no minute with live data) is
   published to a fresh topic, all but its last 10%, which are held back.
2. ``nexanest consume --until-idle S`` runs as a subprocess with the run's own
   topic, consumer group and Redis prefixes; its VmRSS and VmHWM are read from
   ``/proc`` every 50 ms, and its progress (offsets committed to Kafka after
   each batch) and lag every 250 ms from the broker.
3. After ``--warmup-seconds`` of ingest at saturation, a separate owner
   connection takes ``LOCK TABLE stock_prices IN ACCESS EXCLUSIVE MODE`` in an
   open transaction and holds it ``--stall-seconds``: the database is up, but
   the consumer's next ``COPY`` waits. ``pg_stat_activity`` / ``pg_locks`` are
   read during the stall to record that it is the consumer's ``COPY`` that
   waits on that lock (its connections carry an ``application_name`` of the run).
   Meanwhile the held-back ticks are published, so the lag grows while the
   consumer is stalled and there is always more to fetch.
4. The lock is released (the transaction rolls back); the consumer drains
   the topic and exits after ``--idle-seconds`` idle.
5. The rows of the run's ``source`` in ``stock_prices`` must be exactly the
   feed's ticks (count, distinct ``source_seq``, first and last ``seq``).

Reported: RSS steady before the stall (median over the second half of the
saturated ingest before it), max during the stall, peak (VmHWM), after
(median while ingest runs at saturation again), the bound from the settings,
and ``bounded`` by the rule stated in the output (``bounded_rule``).

The consumer writes into a scratch database (``nexanest_bench_<run>``, the
project's migrations applied; dropped at the end by ``harness.cleanup``), so
the stall locks no table of the user's; topics, the consumer group and Redis
keys carry the run id and are removed too.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import uvloop
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from benchmarks.harness import report
from benchmarks.harness.cleanup import clean_up, patiently, prepare_database, superuser_sql
from benchmarks.harness.host import machine, restarted, service_identities
from benchmarks.harness.report import n
from benchmarks.harness.run import BenchError, Run, feed_config
from benchmarks.harness.sampling import ROOT, downsample, proc_status
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.log import configure_logging
from nexanest.pipeline.settings import LogSettings, Settings, load_settings
from nexanest.producers.feeds.synthetic import SyntheticFeed
from nexanest.producers.publisher import TickPublisher
from nexanest.schemas.ticks import Tick

MODULE = "benchmarks.scenarios.backpressure"
NEXANEST = Path(sys.executable).parent / "nexanest"
RSS_INTERVAL_S = 0.05
PROGRESS_INTERVAL_S = 0.25
#: Ticks published while the database is stalled, as a share of ``--ticks``.
TAIL_SHARE = 0.10
#: Tick times this far back: inside the validator's 7-day window, and on a day
#: no live feed writes, so the run's 1m bars hold only its own ticks.
TICK_AGE_NS = 2 * 24 * 3600 * 10**9
#: The "no upward trend while stalled" part of the rule: RSS over the last
#: quarter of the stall may exceed that over the first quarter by at most this.
TREND_ALLOWANCE_MB = 4.0
MIB = 1024 * 1024


@dataclass(frozen=True)
class Options:
    mode: str
    ticks: int
    symbols: int
    seed: int
    warmup_s: float
    stall_s: float
    idle_s: float

    @property
    def tail(self) -> int:
        return int(self.ticks * TAIL_SHARE)

    @staticmethod
    def from_args(args: argparse.Namespace) -> Options:
        quick = bool(args.quick)
        return Options(
            mode="quick" if quick else "full",
            ticks=args.ticks or (500_000 if quick else 1_000_000),
            symbols=args.symbols,
            seed=args.seed,
            warmup_s=args.warmup_seconds or (3.0 if quick else 8.0),
            stall_s=args.stall_seconds,
            idle_s=args.idle_seconds,
        )


@dataclass
class Trace:
    """What the samplers saw, in seconds since the consumer was spawned."""

    t0: float = field(default_factory=time.monotonic)
    #: (t, VmRSS kB, VmHWM kB)
    rss: list[tuple[float, int, int]] = field(default_factory=list)
    #: (t, rows committed to Kafka by the consumer, end offsets, lag)
    progress: list[tuple[float, int, int, int]] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.t0

    @property
    def written(self) -> int:
        return self.progress[-1][1] if self.progress else 0


log = report.log("backpressure")


def _n(value: float | None, digits: int = 1) -> str:
    return n(value, digits)


# -- names and settings -------------------------------------------------------------------


def with_application_name(dsn: str, name: str) -> str:
    """``dsn`` with ``application_name`` set (asyncpg passes it to the server),
    so the consumer's sessions can be told apart in ``pg_stat_activity``."""
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "application_name"]
    query.append(("application_name", name))
    return urlunsplit(parts._replace(query=urlencode(query)))


def consumer_env(settings: Settings, app_name: str) -> dict[str, str]:
    return Run.env(
        settings, NEXANEST_TIMESCALE__DSN=with_application_name(settings.timescale.dsn.get_secret_value(), app_name)
    )


# -- the feed ------------------------------------------------------------------------------


async def _chunks(ticks: Iterator[Tick], size: int = 1_000) -> AsyncIterator[list[Tick]]:
    while chunk := list(itertools.islice(ticks, size)):
        yield chunk
        await asyncio.sleep(0)


async def publish(settings: Settings, ticks: Iterator[Tick], source: str) -> tuple[int, float]:
    """Publish ``ticks`` to the run's topic; return (acknowledged, seconds)."""
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        started = time.perf_counter()
        published = await TickPublisher(producer, settings.kafka.ticks_topic, source).publish_all(_chunks(ticks))
        return published, time.perf_counter() - started
    finally:
        await producer.stop()


# -- samplers --------------------------------------------------------------------------------


async def sample_rss(pid: int, trace: Trace, done: asyncio.Future[Any]) -> None:
    while not done.done():
        status = proc_status(pid)
        if "VmRSS" in status:
            trace.rss.append((trace.now(), status["VmRSS"], status.get("VmHWM", 0)))
        await asyncio.wait({done}, timeout=RSS_INTERVAL_S)


async def sample_progress(settings: Settings, trace: Trace, done: asyncio.Future[Any]) -> None:
    """Rows the consumer has made durable (its Kafka commits follow each database
    commit; the topic starts at offset 0) and the lag, from the broker: nothing
    here touches ``stock_prices``, which is locked during the stall."""
    k = settings.kafka
    admin = AIOKafkaAdminClient(bootstrap_servers=k.bootstrap_servers)
    ends = AIOKafkaConsumer(bootstrap_servers=k.bootstrap_servers, enable_auto_commit=False)
    await admin.start()
    await ends.start()
    tps = [TopicPartition(k.ticks_topic, p) for p in range(k.partitions)]
    try:
        while not done.done():
            try:
                committed = await admin.list_consumer_group_offsets(k.consumer_group)
                end = await ends.end_offsets(tps)
            except KafkaError as exc:  # a rebalance or a slow broker: skip this sample
                log(f"progress sample skipped: {exc!r}")
            else:
                written = sum(max(0, committed[tp].offset) for tp in tps if tp in committed)
                total = sum(end.values())
                trace.progress.append((trace.now(), written, total, total - written))
            await asyncio.wait({done}, timeout=PROGRESS_INTERVAL_S)
    finally:
        await ends.stop()
        await admin.close()


# -- the stall -------------------------------------------------------------------------------

_WAITERS = """
SELECT a.pid, a.application_name, a.usename, l.locktype, l.relation::regclass::text AS relation, l.mode, l.granted
  FROM pg_stat_activity a
  JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted
 WHERE $1 = ANY(pg_blocking_pids(a.pid))
"""
#: What the sessions are doing; the owner role sees only its own sessions' wait
#: events and queries, so this is read as the cluster superuser when possible.
_ACTIVITY = (
    "SELECT pid, coalesce(wait_event_type, ''), coalesce(wait_event, ''), coalesce(state, ''),"
    " left(regexp_replace(query, '\\s+', ' ', 'g'), 80) FROM pg_stat_activity WHERE application_name = '{app}'"
)


async def superuser_activity(settings: Settings, app_name: str) -> dict[int, dict[str, str]] | str:
    """pg_stat_activity of the consumer's sessions, read as the cluster superuser
    (the owner role sees only its own sessions' wait events); a string saying why
    when that is not possible."""
    if not re.fullmatch(r"[a-z0-9-]+", app_name):
        return f"unexpected application_name {app_name!r}"
    database = urlsplit(settings.timescale.admin_dsn.get_secret_value()).path.lstrip("/")
    try:
        out = await asyncio.to_thread(superuser_sql, settings, database, _ACTIVITY.format(app=app_name))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return f"psql as postgres: {exc!r}"[:300]
    activity = {}
    for line in out.splitlines():
        pid, wait_type, wait, state, query = (line.split("\t") + [""] * 5)[:5]
        activity[int(pid)] = {"wait_event_type": wait_type, "wait_event": wait, "state": state, "query": query}
    return activity


async def observe_waiters(settings: Settings, lock_pid: int, app_name: str, trace: Trace) -> dict[str, Any]:
    """Who waits on the stall's lock right now (pg_locks, as the owner role);
    ``consumer_blocked`` when one of them is the consumer (its application_name)
    waiting for a lock on stock_prices. Adds each such session's wait event and
    query when the superuser view is available."""
    t_s = round(trace.now(), 2)
    conn = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value())
    try:
        rows = [dict(r) for r in await conn.fetch(_WAITERS, lock_pid)]
    finally:
        await conn.close()
    activity = await superuser_activity(settings, app_name)
    mine = [r for r in rows if r["application_name"] == app_name]
    for r in mine:
        r.update(activity.get(r["pid"], {}) if isinstance(activity, dict) else {"activity": activity})
    return {
        "t_s": t_s,
        "consumer_blocked": any(r["relation"] == "stock_prices" for r in mine),
        "consumer_sessions_waiting": mine,
        "other_sessions_waiting": len({r["pid"] for r in rows}) - len({r["pid"] for r in mine}),
    }


@dataclass
class Stall:
    requested_s: float = 0.0
    from_s: float = 0.0
    to_s: float = 0.0
    lock_wait_s: float = 0.0
    observations: list[dict[str, Any]] = field(default_factory=list)
    tail_published: int = 0
    tail_publish_s: float = 0.0


async def stall_database(
    settings: Settings, opts: Options, trace: Trace, app_name: str, tail: list[Tick], source: str
) -> Stall:
    """Hold ACCESS EXCLUSIVE on stock_prices for ``opts.stall_s`` while the
    held-back ticks are published; observe the consumer waiting on it."""
    stall = Stall()
    admin_dsn = settings.timescale.admin_dsn.get_secret_value()
    conn = await asyncpg.connect(admin_dsn)
    try:
        lock_pid = int(await conn.fetchval("SELECT pg_backend_pid()"))
        tx = conn.transaction()
        await tx.start()
        try:
            # Granted once the consumer's current batch transaction (which holds
            # ROW EXCLUSIVE) commits; its next COPY then queues behind us.
            await conn.execute("SET LOCAL lock_timeout = '60s'")
            stall.requested_s = trace.now()
            await conn.execute("LOCK TABLE stock_prices IN ACCESS EXCLUSIVE MODE")
            stall.from_s = trace.now()
            stall.lock_wait_s = stall.from_s - stall.requested_s
            log(
                f"stall: lock held from t={stall.from_s:.1f}s"
                f" (waited {stall.lock_wait_s:.2f}s for a batch being written)"
            )
            publisher = asyncio.ensure_future(publish(settings, iter(tail), source))
            end_at = stall.from_s + opts.stall_s
            # Observe early (the consumer must be waiting within a batch time),
            # in the middle and near the end of the stall.
            for at in (min(2.0, opts.stall_s / 4), opts.stall_s / 2, opts.stall_s - 1.0):
                await asyncio.sleep(max(0.0, stall.from_s + at - trace.now()))
                stall.observations.append(await observe_waiters(settings, lock_pid, app_name, trace))
                seen = stall.observations[-1]
                log(
                    f"stall: t={seen['t_s']:.1f}s consumer blocked on the lock: {seen['consumer_blocked']}"
                    f" ({seen['other_sessions_waiting']} other sessions waiting), rss {_last_rss_mb(trace):.1f} MB,"
                    f" lag {trace.progress[-1][3] if trace.progress else 0:,}"
                )
            stall.tail_published, stall.tail_publish_s = await publisher
            await asyncio.sleep(max(0.0, end_at - trace.now()))
        finally:
            await tx.rollback()
            stall.to_s = trace.now()
            log(f"stall: released at t={stall.to_s:.1f}s")
    finally:
        await conn.close()
    return stall


def _last_rss_mb(trace: Trace) -> float:
    return trace.rss[-1][1] / 1024 if trace.rss else 0.0


# -- analysis ---------------------------------------------------------------------------------


def _median_mb(samples: Sequence[tuple[float, int, int]]) -> float | None:
    return statistics.median(kb for _, kb, _ in samples) / 1024 if samples else None


def _rate(progress: Sequence[tuple[float, int, int, int]]) -> float | None:
    if len(progress) < 2 or progress[-1][0] <= progress[0][0]:
        return None
    return (progress[-1][1] - progress[0][1]) / (progress[-1][0] - progress[0][0])


def analyse(trace: Trace, stall: Stall, settings: Settings) -> dict[str, Any]:
    """RSS and ingest before, during and after the stall, and the verdict."""
    first = next((t for t, w, _, _ in trace.progress if w > 0), None)
    last_write = next((t for t, w, _, _ in trace.progress if w == trace.written), None)
    if first is None or last_write is None:
        raise BenchError("the consumer never committed a batch")
    before = [s for s in trace.rss if first <= s[0] < stall.from_s]
    steady = before[len(before) // 2 :]
    during = [s for s in trace.rss if stall.from_s <= s[0] <= stall.to_s]
    resumed = next((t for t, w, _, _ in trace.progress if t > stall.to_s and w > _written_at(trace, stall.to_s)), None)
    after = [s for s in trace.rss if resumed is not None and resumed <= s[0] <= last_write]
    quarter = (stall.to_s - stall.from_s) / 4
    early = [kb for t, kb, _ in during if t <= stall.from_s + quarter]
    late = [kb for t, kb, _ in during if t >= stall.to_s - quarter]

    k, b = settings.kafka, settings.batch
    prefetch_bytes = min(k.fetch_max_bytes, k.max_partition_fetch_bytes * k.partitions)
    allowance_mb = prefetch_bytes / MIB
    steady_mb = _median_mb(steady)
    max_stall_mb = max(kb for _, kb, _ in during) / 1024 if during else None
    trend_mb = (max(late) - max(early)) / 1024 if early and late else None
    bounded = (
        steady_mb is not None
        and max_stall_mb is not None
        and trend_mb is not None
        and max_stall_mb - steady_mb <= allowance_mb
        and trend_mb <= TREND_ALLOWANCE_MB
    )
    prog_during = [p for p in trace.progress if stall.from_s <= p[0] <= stall.to_s]
    return {
        "rss_mb": {
            "steady_before": _round(steady_mb),
            "max_during_stall": _round(max_stall_mb),
            "peak": round(max(max(hwm, kb) for _, kb, hwm in trace.rss) / 1024, 2),
            # When the highest VmRSS sample was taken: VmHWM says how high, not when.
            "peak_sample_at_s": round(max(trace.rss, key=lambda s: s[1])[0], 2),
            "after": _round(_median_mb(after)),
            "at_stall_start": round(early[0] / 1024, 2) if early else None,
            "at_stall_end": round(late[-1] / 1024, 2) if late else None,
            "growth_during_stall": _round(
                None if max_stall_mb is None or steady_mb is None else max_stall_mb - steady_mb
            ),
            "trend_during_stall": _round(trend_mb),
        },
        "bounded": bounded,
        "bounded_rule": (
            "bounded = max VmRSS during the stall <= median VmRSS of the second half of the saturated ingest "
            f"before it + the Kafka prefetch bound ({allowance_mb:g} MiB: at most one more full fetch than at "
            f"saturation), and max VmRSS over the last quarter of the stall <= max over its first quarter + "
            f"{TREND_ALLOWANCE_MB:g} MiB (no growth while the database is stalled)"
        ),
        "bound_from_settings": {
            "batch_max_rows": b.max_rows,
            "batch_max_wait_ms": b.max_wait_ms,
            "fetch_max_bytes": k.fetch_max_bytes,
            "max_partition_fetch_bytes": k.max_partition_fetch_bytes,
            "partitions": k.partitions,
            "records_in_hand_bound": 2 * b.max_rows,
            "prefetch_bytes_bound": prefetch_bytes,
            "note": (
                "fetched but unwritten: at most two batches of batch.max_rows records (pipeline/runner.py: the "
                "one being written and the one taken behind it; taking stops when that one is full) plus the "
                "Kafka client's prefetch buffer (one fetch response, <= min(fetch_max_bytes, "
                "max_partition_fetch_bytes x partitions) of compressed record batches)"
            ),
        },
        "ingest": {
            "first_commit_s": round(first, 2),
            "last_commit_s": round(last_write, 2),
            "ticks_per_s_before_stall": _round(_rate([p for p in trace.progress if first <= p[0] <= stall.from_s]), 0),
            "ticks_per_s_after_stall": _round(
                _rate([p for p in trace.progress if resumed is not None and resumed <= p[0] <= last_write]), 0
            ),
            "rows_committed_during_stall": (prog_during[-1][1] - prog_during[0][1]) if prog_during else None,
            "resumed_after_release_s": _round(None if resumed is None else resumed - stall.to_s),
        },
        "lag": {
            "at_stall_start": prog_during[0][3] if prog_during else None,
            "at_stall_end": prog_during[-1][3] if prog_during else None,
            "max": max(p[3] for p in trace.progress),
        },
    }


def _written_at(trace: Trace, t: float) -> int:
    return max((w for tt, w, _, _ in trace.progress if tt <= t), default=0)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


# -- checks and clean-up -------------------------------------------------------------------------


async def check_rows(admin_dsn: str, source: str, ticks: int, start_ns: int) -> dict[str, Any]:
    """Exactly the feed's ticks: ``ticks`` rows, every seq once, 0 .. ticks-1;
    and (for information) the run's 1m bars count the same ticks."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT source_seq) AS seqs, min(source_seq) AS lo, max(source_seq) AS hi,"
            " min(time) AS t_lo, max(time) AS t_hi, array_agg(DISTINCT symbol) AS symbols"
            " FROM stock_prices WHERE source = $1",
            source,
        )
        bars = None
        if row["n"]:
            bars = await conn.fetchval(
                "SELECT sum(trade_count) FROM ohlcv_1m_rollup WHERE symbol = ANY($1::text[])"
                " AND bucket >= time_bucket('1 minute', $2::timestamptz) AND bucket <= $3",
                row["symbols"],
                row["t_lo"],
                row["t_hi"],
            )
    finally:
        await conn.close()
    ok = row["n"] == ticks and row["seqs"] == ticks and row["lo"] == 0 and row["hi"] == ticks - 1
    return {
        "rows": row["n"],
        "distinct_seq": row["seqs"],
        "min_seq": row["lo"],
        "max_seq": row["hi"],
        "expected": ticks,
        "ok": bool(ok),
        "bars_1m_trade_count": None if bars is None else int(bars),
    }


# -- the run --------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    opts = Options.from_args(args)
    bench = Run(load_settings(), "b")
    base, run_id = bench.base, bench.run_id
    source = bench.source()
    app_name = f"bench-{run_id}-consumer"
    started_at = datetime.now(UTC)
    started = time.monotonic()
    log(
        f"run {run_id}: {opts.mode}, {opts.ticks:,} ticks ({opts.tail:,} held back for the stall), "
        f"stall {opts.stall_s:g}s; if interrupted: python -m benchmarks.harness.cleanup {run_id}"
    )
    machine_info = await machine(base)
    services_before = await service_identities(base)
    start_ns = time.time_ns() - TICK_AGE_NS
    config = feed_config(opts.ticks, opts.symbols, opts.seed, source, start_ns)
    proc: asyncio.subprocess.Process | None = None
    try:
        settings, migrations = await prepare_database(bench.settings("consumer", f"{bench.prefix}.ticks"), run_id)
        await ensure_topics(settings.kafka)
        ticks = SyntheticFeed(config).generate()
        prefilled, publish_s = await publish(settings, itertools.islice(ticks, opts.ticks - opts.tail), source)
        tail = list(ticks)
        log(f"published {prefilled:,} ticks in {publish_s:.1f}s; {len(tail):,} held back")
        if prefilled != opts.ticks - opts.tail or len(tail) != opts.tail:
            raise BenchError(f"Kafka acknowledged {prefilled:,} of {opts.ticks - opts.tail:,} ticks")

        argv = [str(NEXANEST), "consume", "--until-idle", str(opts.idle_s)]
        trace = Trace()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=consumer_env(settings, app_name),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        done = asyncio.ensure_future(proc.communicate())
        samplers = [
            asyncio.ensure_future(sample_rss(proc.pid, trace, done)),
            asyncio.ensure_future(sample_progress(settings, trace, done)),
        ]
        log(f"consumer pid {proc.pid} started")
        while trace.written == 0:
            if done.done():
                raise BenchError(f"the consumer exited before its first batch: {done.result()[1].decode()[-2000:]}")
            if trace.now() > 120:
                raise BenchError("no batch committed within 120 s of the consumer's start")
            await asyncio.sleep(0.05)
        log(f"first batch at t={trace.now():.1f}s; {opts.warmup_s:g}s of ingest at saturation before the stall")
        await asyncio.sleep(opts.warmup_s)
        backlog = trace.progress[-1][3]
        # More left than the consumer may hold (two batches), or a stall proves nothing.
        if backlog < 3 * base.batch.max_rows:
            raise BenchError(f"only {backlog:,} ticks left before the stall: not saturated; use more --ticks")
        log(f"written {trace.written:,}, lag {backlog:,}, rss {_last_rss_mb(trace):.1f} MB; stalling the database")
        stall = await stall_database(settings, opts, trace, app_name, tail, source)
        if stall.tail_published != len(tail):
            raise BenchError(f"Kafka acknowledged {stall.tail_published:,} of {len(tail):,} held-back ticks")

        last_report = 0.0
        while not done.done():
            if trace.now() - last_report >= 5:
                last_report = trace.now()
                lag = trace.progress[-1][3] if trace.progress else 0
                log(f"t={trace.now():.0f}s written {trace.written:,} lag {lag:,} rss {_last_rss_mb(trace):.1f} MB")
            if trace.now() > 900:
                raise BenchError("the consumer ran over 900 s")
            await asyncio.wait({done}, timeout=0.5)
        stdout_b, stderr_b = done.result()
        await asyncio.gather(*samplers)
        wall_s = trace.now()
        stdout, stderr = stdout_b.decode(errors="replace"), stderr_b.decode(errors="replace")
        if proc.returncode != 0:
            raise BenchError(f"nexanest consume exited {proc.returncode}: {stderr[-2000:]}")
        summary = next((ln for ln in stdout.splitlines() if ln.startswith("consumed ")), "")
        match = re.search(r"([\d,]+) rows written", summary)
        reported = int(match.group(1).replace(",", "")) if match else None
        rows = await check_rows(settings.timescale.admin_dsn.get_secret_value(), source, opts.ticks, start_ns)
        rows["consumer_reported_written"] = reported
        rows["ok"] = rows["ok"] and reported == opts.ticks
        figures = analyse(trace, stall, settings)
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()  # our own child, by its pid
            await proc.wait()
        log("cleaning up")
        cleanup = await clean_up(base, run_id)
    services_after = await patiently(cleanup, "service identities", lambda: service_identities(base)) or {}
    return {
        "benchmark": "backpressure",
        "run_id": run_id,
        "command": args.command_line,
        "started_at": started_at.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1),
        "mode": opts.mode,
        "parameters": {
            "ticks": opts.ticks,
            "published_before_consumer": prefilled,
            "published_during_stall": len(tail),
            "symbols": opts.symbols,
            "seed": opts.seed,
            "warmup_seconds": opts.warmup_s,
            "stall_seconds": opts.stall_s,
            "idle_seconds": opts.idle_s,
            "consumer": shlex.join(["nexanest", *argv[1:]]),
            "rss_interval_s": RSS_INTERVAL_S,
            "progress_interval_s": PROGRESS_INTERVAL_S,
        },
        "machine": {**machine_info, "load_avg_at_end": os.getloadavg()},
        "services_restarted_during_run": restarted(services_before, services_after),
        "scratch": {"database": settings.timescale.dsn.get_secret_value().rsplit("/", 1)[-1], "migrations": migrations},
        "samples": downsample([(t, kb / 1024) for t, kb, _ in trace.rss]),
        "lag_samples": downsample([(t, lag) for t, _, _, lag in trace.progress]),
        "written_samples": downsample([(t, w) for t, w, _, _ in trace.progress]),
        "stall": {
            "from_s": round(stall.from_s, 2),
            "to_s": round(stall.to_s, 2),
            "held_s": round(stall.to_s - stall.from_s, 2),
            "lock_requested_s": round(stall.requested_s, 2),
            "lock_wait_s": round(stall.lock_wait_s, 3),
            "how": "owner connection: BEGIN; LOCK TABLE stock_prices IN ACCESS EXCLUSIVE MODE; ... ROLLBACK",
            "consumer_blocked": all(o["consumer_blocked"] for o in stall.observations),
            "observations": stall.observations,
            "published_during_stall": stall.tail_published,
            "publish_seconds": round(stall.tail_publish_s, 2),
        },
        **figures,
        "rows": rows,
        "rows_ok": rows["ok"],
        "consumer": {"wall_s": round(wall_s, 1), "summary": summary, "stderr_tail": stderr[-1000:]},
        "cleanup": cleanup,
    }


# -- RESULTS.md -------------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    m, p, r, s = result["machine"], result["parameters"], result["rss_mb"], result["stall"]
    b, ing, lag = result["bound_from_settings"], result["ingest"], result["lag"]
    waits = [w for o in s["observations"] for w in o["consumer_sessions_waiting"]]
    wait = waits[0] if waits else None
    lines = [
        f"## {result['started_at']} · backpressure · {result['mode']} · run `{result['run_id']}`",
        "",
        f"Command: `{result['command']}` ({result['duration_s']:.0f} s)",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}); PostgreSQL {m['postgresql']} + TimescaleDB {m['timescaledb']} "
        f"({m['timescaledb_license']}); Kafka {m['kafka']}; load average {m['load_avg_at_start'][0]:.2f} at start, "
        f"{m['load_avg_at_end'][0]:.2f} at end.",
        "",
        f"`{p['consumer']}` (subprocess, RSS from /proc every {p['rss_interval_s'] * 1000:g} ms) over "
        f"{p['ticks']:,} ticks ({p['symbols']} symbols, seed {p['seed']}): {p['published_before_consumer']:,} "
        f"published before it started, {p['published_during_stall']:,} while the database was stalled. "
        f"Stall: `LOCK TABLE stock_prices IN ACCESS EXCLUSIVE MODE` (scratch database "
        f"`{result['scratch']['database']}`) held by an owner connection from "
        f"t={s['from_s']:.1f} s to t={s['to_s']:.1f} s ({s['held_s']:.1f} s); the consumer's session was seen "
        + (
            f"waiting for {wait['mode']} on {wait['relation']} (pg_locks; pg_stat_activity: wait event "
            f"{wait.get('wait_event_type', '?')}/{wait.get('wait_event', '?')}, `{wait.get('query', '?')}…`)"
            if wait and s["consumer_blocked"]
            else "**not** waiting on it at every observation"
        )
        + ".",
        "",
        "| | RSS MB | ingest ticks/s | lag (messages) |",
        "|---|---:|---:|---:|",
        f"| before the stall (steady) | {_n(r['steady_before'])} | {_n(ing['ticks_per_s_before_stall'], 0)} | "
        f"{_n(lag['at_stall_start'], 0)} at its start |",
        f"| during the stall (max) | {_n(r['max_during_stall'])} | "
        f"{_n(ing['rows_committed_during_stall'], 0)} rows committed | {_n(lag['at_stall_end'], 0)} at its end |",
        f"| after the stall (steady) | {_n(r['after'])} | {_n(ing['ticks_per_s_after_stall'], 0)} | "
        f"resumed {_n(ing['resumed_after_release_s'], 2)} s after release |",
        f"| peak (VmHWM; highest sample at t={_n(r['peak_sample_at_s'])} s) | {_n(r['peak'])} | | |",
        "",
        f"Bound from the settings: at most {b['records_in_hand_bound']:,} records in hand (two batches of "
        f"batch.max_rows {b['batch_max_rows']:,}: the one being written and the one taken behind it) plus the "
        f"Kafka client's prefetch, at most {b['prefetch_bytes_bound'] / MIB:g} MiB (fetch_max_bytes "
        f"{b['fetch_max_bytes'] / MIB:g} MiB, max_partition_fetch_bytes {b['max_partition_fetch_bytes'] / MIB:g} MiB "
        f"x {b['partitions']} partitions). RSS growth during the stall {_n(r['growth_during_stall'])} MB, trend over "
        f"it {_n(r['trend_during_stall'])} MB: **bounded: {'yes' if result['bounded'] else 'NO'}** "
        f"({result['bounded_rule']}).",
        "",
        f"Rows: {result['rows']['rows']:,} of {result['rows']['expected']:,} in stock_prices, "
        f"{result['rows']['distinct_seq']:,} distinct seq: **rows_ok: {'yes' if result['rows_ok'] else 'NO'}**. "
        "RSS and lag over time (of the newest run): [plots/backpressure_rss.png](plots/backpressure_rss.png) "
        "(`make bench-plots`).",
        "",
    ]
    if result["services_restarted_during_run"]:
        lines[-1:-1] = [
            "",
            f"**Warning:** restarted during the run: {', '.join(result['services_restarted_during_run'])}.",
        ]
    return "\n".join(lines) + "\n"


# -- entry point ------------------------------------------------------------------------------------


def main() -> int:
    parser = report.parser(__doc__, "500,000 ticks, 3 s of saturation before the stall")
    parser.add_argument("--ticks", type=int, default=0, help="ticks in the feed (default 1,000,000; quick 500,000)")
    parser.add_argument("--symbols", type=int, default=300, help="symbols in the feed (default 300)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic feed (default 1)")
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=20.0,
        help="how long the database is stalled (default 20; keep it under timescale.command_timeout_s, 60 s, "
        "or the waiting COPY times out and is retried)",
    )
    parser.add_argument(
        "--warmup-seconds", type=float, default=0, help="ingest at saturation before the stall (default 8; quick 3)"
    )
    parser.add_argument("--idle-seconds", type=float, default=3.0, help="the consumer's --until-idle (default 3)")
    args = parser.parse_args()
    configure_logging(LogSettings(level="warning"))
    if args.stall_seconds < 4:
        parser.error("--stall-seconds must be at least 4 (three observations of the waiting consumer)")
    args.command_line = report.command_line(MODULE)
    try:
        result = uvloop.run(run(args))
    except BenchError as exc:
        log(f"FAILED: {exc}")
        return 1
    report.save("backpressure", result, markdown(result), args)
    return 0 if result["bounded"] and result["rows_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
