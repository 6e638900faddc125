"""Growth (issue 5): does the ingest rate stay flat while ``stock_prices`` grows to 10 million rows?

    python benchmarks/growth.py [--rows 10000000] [--quick] [--symbols 300] [--seed 1]
        [--slice-rows 500000] [--hours 48] [--runs 21] [--output F] [--no-markdown]
    python benchmarks/growth.py cleanup RUN_ID     # what an interrupted run left behind

**What is measured.** A scratch database ``nexanest_growth_<run>`` is created on
the local TimescaleDB cluster (port of ``NEXANEST_TIMESCALE__ADMIN_DSN``, 5433)
for the run: owned by the owner role, ``timescaledb`` created in it by the
superuser (the owner role may not CREATE DATABASE or extensions, so this runs
``psql`` as ``postgres`` over the cluster's unix socket, as
``deploy/local/timescaledb.sh`` does), then the project's own migrations
(``pipeline.migrate.migrate``, as ``nexanest migrate`` runs them). It starts
empty and is dropped at the end, also after an error, Ctrl-C or SIGTERM
(``cleanup RUN_ID`` drops what a killed run left).

Into it, ``TimescaleSink`` is driven exactly as the consumer's writing task
drives it (``pipeline/runner.py``): the partitions are claimed in
``ingest_offsets``, and per batch of ``settings.batch.max_rows`` (20,000 since 212dcd4)
``(tick, partition, offset)`` entries it gets ``write``, ``advance`` and
``flush``: one transaction of binary COPY, the OHLCV rollup upserts (``rollups``
resolved as the consumer does: ``pipeline`` on the Apache edition) and the
fenced offset update. Before each batch is written its quotes are published
through ``RedisQuoteSink`` (under a run-scoped key prefix), as the consumer's
taking side does. A retryable error is retried with backoff, as the consumer
does (counted per slice). Ticks come from ``SyntheticFeed`` (fixed seed, ``--symbols``), in time
order, spread evenly over ``--hours`` (48) of tick time ending about now, so 1-hour
chunks fill and roll one after another and "a day of 1-minute bars" exists.
``--quick`` (1M rows) keeps that tick rate, 58 ticks/s of tick time, and so spans
4.8 hours: the bars a batch upserts grow with the tick time it covers (at 48 hours
1M rows would bring ten times as many per batch, and the run would mostly
measure the rollup upserts: half the rate, measured). Each symbol goes to
the partition Kafka's default partitioner would give its key, with offsets
counting up per partition.

Kafka is deliberately left out: the question is what table size does to the
database write, and a broker, a fetch loop and decoding in the same two cores
would add their own noise and hide it. The end-to-end rates, with Kafka, are
``benchmarks/suite.py``'s. The after-commit Redis bar cache is left out for the
same reason (it does not touch the database).

**Timing.** Ticks of a slice are generated and batched before the slice is
timed (the generator needs ~90 s for 10M ticks), and the quote publish
is timed apart (the consumer overlaps it with the write), so the rate is that
of the database write: ``TimescaleSink.write``/``advance``/``flush``, i.e. COPY
encoding and the batch's bar aggregation in Python (both independent of table
size) plus the transaction. ``ticks_per_s`` of a slice is its rows over the
summed flush times. ``ratio_last_vs_first`` is the median ``ticks_per_s`` of the last 3
slices over the median of the first 3 (fewer if there are fewer than 6 slices);
the target is at least 0.9.

**Queries**, after ``ANALYZE``, at the final size, warm (one untimed run), each
``--runs`` times interleaved, median client wall time through asyncpg without a
statement cache (so every run is planned, as a fresh connection's query is),
with median planning and execution times from ``EXPLAIN (ANALYZE)``:

* ``latest_quote_redis``: ``read_quote`` of one symbol (checked against the
  symbol's last generated tick);
* ``latest_1000_bounded``: the last 1,000 ticks of a symbol with the time bound
  the README advises (``AND time > now() - INTERVAL '1 day'``);
* ``latest_1000_unbounded``: the same without the bound (plans every chunk);
* ``bars_1m_day``: a day (the 24 hours ending at the last tick) of one symbol's
  1-minute bars from ``ohlcv_1m``, through ``pipeline.bars.fetch_bars``.

Output: JSON through ``benchmarks/report.py`` (``benchmarks/results/growth-<time>.json``)
and, unless ``--no-markdown``, a section (newest first) in ``benchmarks/RESULTS.md``.
Needs TimescaleDB and Redis up (``make db-start``) and root (for ``runuser -u
postgres``) or the owner role allowed to CREATE DATABASE. Runs longer than a
few seconds belong under ``flock /tmp/nexanest-bench.lock`` on the shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from types import FrameType
from typing import Any, Final, NoReturn
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis
import uvloop
from aiokafka.partitioner import murmur2
from pydantic import SecretStr
from report import RESULTS_DIR, print_and_save  # benchmarks/report.py (scripts run from this folder)
from suite import _host as suite_host

import nexanest.pipeline as pipeline_package
from nexanest.consumers.ticks_to_timescale import open_quotes_redis, open_timescale_pool
from nexanest.ops.bars import fetch_bars
from nexanest.ops.migrate import migrate
from nexanest.pipeline.errors import RetryableError
from nexanest.pipeline.log import configure_logging
from nexanest.pipeline.settings import LogSettings, Settings, load_settings, namespaced
from nexanest.pipeline.sinks.ohlcv import resolve_rollups
from nexanest.pipeline.sinks.redis_quotes import RedisQuoteSink, read_quote
from nexanest.pipeline.sinks.timescale import TickEntry, TimescaleSink
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.schemas.ticks import Tick

HERE: Final = Path(__file__).resolve().parent
ROOT: Final = HERE.parent
RESULTS_MD: Final = HERE / "RESULTS.md"
MD_MARKER: Final = "<!-- runs: newest first; the suite inserts each new run below this line -->\n"
DATABASE_PREFIX: Final = "nexanest_growth_"
RUN_ID: Final = re.compile(r"g[0-9a-f]{8}")
TARGET_RATIO: Final = 0.9
QUICK_ROWS: Final = 1_000_000
FULL_ROWS: Final = 10_000_000
FULL_HOURS: Final = 48.0
PROGRESS_EVERY_S: Final = 2.0
_IDENTIFIER: Final = re.compile(r"[a-z_][a-z0-9_]*")

LATEST_BOUNDED: Final = (
    "SELECT * FROM stock_prices WHERE symbol = $1 AND time > now() - INTERVAL '1 day' ORDER BY time DESC LIMIT 1000"
)
LATEST_UNBOUNDED: Final = "SELECT * FROM stock_prices WHERE symbol = $1 ORDER BY time DESC LIMIT 1000"


# -- the scratch database ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scratch:
    """Names of everything one run creates; all derive from ``run_id`` so that
    ``cleanup`` finds them again."""

    run_id: str

    @property
    def database(self) -> str:
        return DATABASE_PREFIX + self.run_id

    @property
    def namespace(self) -> str:
        """Redis keys ``bench:<run>:quote:*`` (the suite's clean-up pattern, with its own run ids)."""
        return f"bench:{self.run_id}"


def _with_database(dsn: SecretStr, database: str) -> SecretStr:
    parts = urlsplit(dsn.get_secret_value())
    return SecretStr(urlunsplit(parts._replace(path="/" + database)))


def _role(dsn: SecretStr) -> str:
    """The user name of a DSN, checked to be a plain identifier (it is quoted into SQL)."""
    user = urlsplit(dsn.get_secret_value()).username or ""
    if not _IDENTIFIER.fullmatch(user):
        raise SystemExit(f"unexpected role name in a TimescaleDB DSN: {user!r}")
    return user


def _port(settings: Settings) -> int:
    return urlsplit(settings.timescale.admin_dsn.get_secret_value()).port or 5433


def _socket_dir() -> Path:
    """deploy/local's run directory, where the cluster keeps its unix socket."""
    default = "/var/lib/nexanest" if os.geteuid() == 0 else str(Path.home() / ".local/share/nexanest")
    return Path(os.environ.get("NEXANEST_STATE_DIR", default)) / "run"


def superuser_sql(settings: Settings, database: str, *statements: str) -> str:
    """Run ``statements`` (each its own ``-c``, so outside a transaction block) as
    the cluster superuser over the unix socket (peer authentication, hence
    ``runuser``); returns psql's unaligned output. Raises ``RuntimeError``."""
    psql = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
    argv = [psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(_socket_dir())]
    argv += ["-p", str(_port(settings)), "-U", "postgres", "-d", database]
    for s in statements:
        argv += ["-c", s]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"psql as postgres failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def create_scratch(settings: Settings, scratch: Scratch) -> Settings:
    """Create the empty database with the extension; return settings that point
    the owner and ingest DSNs at it and give the run its own Redis keys."""
    owner, ingest = _role(settings.timescale.admin_dsn), _role(settings.timescale.dsn)
    db = scratch.database
    superuser_sql(settings, "postgres", f'CREATE DATABASE "{db}" OWNER "{owner}"')
    superuser_sql(
        settings,
        db,
        "SET client_min_messages = warning",
        "CREATE EXTENSION IF NOT EXISTS timescaledb",
        f'GRANT CONNECT ON DATABASE "{db}" TO "{ingest}"',
    )
    base = namespaced(settings, scratch.namespace)
    ts = settings.timescale.model_copy(
        update={
            "dsn": _with_database(settings.timescale.dsn, db),
            "admin_dsn": _with_database(settings.timescale.admin_dsn, db),
        }
    )
    return base.model_copy(update={"timescale": ts})


def clean_up(settings: Settings, scratch: Scratch) -> dict[str, Any]:
    """Drop the run's database and delete its Redis keys; synchronous, so it also
    runs after the event loop died. Never raises: failures are reported."""
    report: dict[str, Any] = {"database": scratch.database}
    try:
        superuser_sql(settings, "postgres", f'DROP DATABASE IF EXISTS "{scratch.database}" WITH (FORCE)')
        left = superuser_sql(
            settings, "postgres", f"SELECT count(*) FROM pg_database WHERE datname = '{scratch.database}'"
        )
        report["database_dropped"] = left.strip() == "0"
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        report["database_dropped"] = False
        report["database_error"] = str(exc)
    r = settings.redis
    client = redis.Redis.from_url(r.url.get_secret_value(), db=r.db_quotes, socket_timeout=r.socket_timeout_s)
    try:
        keys = list(client.scan_iter(match=f"{scratch.namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
        report["redis_keys_deleted"] = len(keys)
    except (redis.RedisError, OSError) as exc:
        report["redis_error"] = str(exc)
    finally:
        client.close()
    return report


def leftover_databases(settings: Settings) -> list[str]:
    out = superuser_sql(
        settings, "postgres", rf"SELECT datname FROM pg_database WHERE datname LIKE '{DATABASE_PREFIX}%' ORDER BY 1"
    )
    return [line for line in out.splitlines() if line]


# -- the load ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Batch:
    entries: list[TickEntry]
    ticks: list[Tick]
    next_offsets: dict[tuple[str, int], int]


@dataclass(slots=True)
class Feed:
    """The synthetic ticks cut into consumer-sized batches, with the partition
    and offset each would have had in Kafka; also remembers each symbol's last
    tick, to check the Redis quote against."""

    ticks: Iterator[Tick]
    topic: str
    partitions: int
    batch_rows: int
    offsets: list[int] = field(default_factory=list)
    partition_of: dict[str, int] = field(default_factory=dict)
    last_tick: dict[str, Tick] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.offsets = [0] * self.partitions

    def batches(self, rows: int) -> list[Batch]:
        out: list[Batch] = []
        while rows > 0:
            entries: list[TickEntry] = []
            next_offsets: dict[tuple[str, int], int] = {}
            for tick in islice(self.ticks, min(rows, self.batch_rows)):
                p = self.partition_of.get(tick.symbol)
                if p is None:  # Kafka's default partitioner on the symbol key
                    p = self.partition_of[tick.symbol] = (murmur2(tick.symbol.encode()) & 0x7FFFFFFF) % self.partitions
                offset = self.offsets[p]
                self.offsets[p] = offset + 1
                entries.append((tick, p, offset))
                next_offsets[(self.topic, p)] = offset + 1
                self.last_tick[tick.symbol] = tick
            if not entries:
                break
            out.append(Batch(entries, [e[0] for e in entries], next_offsets))
            rows -= len(entries)
        return out


@dataclass(slots=True)
class Writer:
    """Per batch, what the consumer does: publish the quotes (taking side, timed
    apart in ``quotes_s``), then the database write (writing task, timed)."""

    sink: TimescaleSink
    quotes: RedisQuoteSink
    initial_backoff_s: float
    max_backoff_s: float
    quotes_s: float = 0.0
    retries: int = 0

    async def _retrying(self, flush: Callable[[], Awaitable[object]]) -> None:
        backoff = self.initial_backoff_s
        while True:
            try:
                await flush()
            except RetryableError as exc:
                self.retries += 1
                print(f"[growth] retryable error, again in {backoff:.1f} s: {exc}", file=sys.stderr, flush=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
            else:
                return

    async def write(self, batch: Batch) -> float:
        """Seconds the database write of the batch took (retries included)."""
        began = time.perf_counter()
        self.quotes.write(batch.ticks)
        await self._retrying(self.quotes.flush)
        self.quotes_s += time.perf_counter() - began
        began = time.perf_counter()
        self.sink.write(batch.entries)
        self.sink.advance(batch.next_offsets)
        await self._retrying(self.sink.flush)
        return time.perf_counter() - began


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def load(
    settings: Settings, args: argparse.Namespace, start_ns: int, span_s: float, pool: asyncpg.Pool
) -> tuple[list[dict[str, Any]], Feed, dict[str, Any]]:
    """Grow ``stock_prices`` from empty to ``args.rows``, slice by slice; returns
    the slices, the feed (for its last ticks) and load totals."""
    rollups = await resolve_rollups(pool, settings.consumer.rollups)
    kafka = settings.kafka
    sink = TimescaleSink(
        pool, kafka.consumer_group, exactly_once=settings.consumer.exactly_once, rollups=rollups == "pipeline"
    )
    quotes_redis = open_quotes_redis(settings)
    quotes = RedisQuoteSink(quotes_redis, settings.redis.quote_key_prefix)
    writer = Writer(sink, quotes, settings.retry.initial_backoff_s, settings.retry.max_backoff_s)
    config = SyntheticConfig(
        symbols=args.symbols,
        rate=args.rows / span_s,
        count=args.rows,
        seed=args.seed,
        start_ns=start_ns,
        source=settings.kafka.consumer_group.replace(":", "-"),
        paced=False,
    )
    feed = Feed(SyntheticFeed(config).generate(), kafka.ticks_topic, kafka.partitions, settings.batch.max_rows)
    await sink.claim(kafka.ticks_topic, list(range(kafka.partitions)))
    slices: list[dict[str, Any]] = []
    written = 0
    generate_s = write_s = 0.0
    load_started = last_progress = time.monotonic()
    try:
        async with pool.acquire() as conn:
            checkpoints_before = await conn.fetchval("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
        while written < args.rows:
            began = time.perf_counter()
            batches = feed.batches(min(args.slice_rows, args.rows - written))  # untimed
            generate_s += time.perf_counter() - began
            slice_rows = 0
            slice_s = 0.0
            quotes_before, retries_before = writer.quotes_s, writer.retries
            batch_s: list[float] = []
            for batch in batches:
                took = await writer.write(batch)
                batch_s.append(took)
                slice_s += took
                slice_rows += len(batch.entries)
                written += len(batch.entries)
                now = time.monotonic()
                if now - last_progress >= PROGRESS_EVERY_S:
                    last_progress = now
                    overall = written / (now - load_started)
                    print(
                        f"[growth] {written:>12,} / {args.rows:,} rows  {slice_rows / slice_s:>8,.0f} ticks/s"
                        f" (this slice)  ETA {(args.rows - written) / overall:4.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
            write_s += slice_s
            async with pool.acquire() as conn:
                chunks = await conn.fetchval(
                    "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'stock_prices'"
                )
                size = await conn.fetchval("SELECT hypertable_size('stock_prices')")
            quotes_s = writer.quotes_s - quotes_before
            entry = {
                "rows_in_table": written,
                "rows": slice_rows,
                "batches": len(batches),
                "ticks_per_s": round(slice_rows / slice_s, 1),
                "chunks": chunks,
                "table_mb": round(size / 2**20, 1),
                "write_s": round(slice_s, 3),
                "redis_quotes_s": round(quotes_s, 3),
                "batch_ms_p50": _ms(statistics.median(batch_s)),
                "batch_ms_p99": _ms(_percentile(batch_s, 0.99)),
                "batch_ms_max": _ms(max(batch_s)),
                "retries": writer.retries - retries_before,
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
            slices.append(entry)
            print(
                f"[growth] slice {len(slices):>3}: {written:>12,} rows  {entry['ticks_per_s']:>9,.0f} ticks/s"
                f"  {chunks} chunks  {entry['table_mb']:,.0f} MB"
                f"  load {entry['load_avg_1m']}",
                file=sys.stderr,
                flush=True,
            )
        async with pool.acquire() as conn:
            checkpoints_after = await conn.fetchval("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
    finally:
        await sink.close()
        await quotes.close()
        await quotes_redis.aclose()
    totals = {
        "rollups": rollups,
        "exactly_once": settings.consumer.exactly_once,
        "rows": written,
        "write_s": round(write_s, 1),
        "generate_s": round(generate_s, 1),
        "wall_s": round(time.monotonic() - load_started, 1),
        "ticks_per_s_overall": round(written / write_s, 1),
        "retries": writer.retries,
        "checkpoints": checkpoints_after - checkpoints_before,
    }
    return slices, feed, totals


# -- queries -----------------------------------------------------------------------------------


class _CaptureQuery:
    """Stands in for a connection to learn the exact SQL and parameters
    ``fetch_bars`` sends, so ``EXPLAIN`` runs the project's query, not a copy."""

    def __init__(self) -> None:
        self.sql = ""
        self.params: tuple[Any, ...] = ()

    async def fetch(self, sql: str, *params: Any) -> list[Any]:
        self.sql, self.params = sql, params
        return []


def _plan_chunks(plan: dict[str, Any]) -> tuple[int, int]:
    """Chunks (``_hyper_*`` relations, of whichever hypertable the query reads) in a plan, and how
    many of them were executed at all (ChunkAppend skips the rest at run time)."""
    planned: set[str] = set()
    executed: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        name = node.get("Relation Name", "")
        if name.startswith("_hyper_"):
            planned.add(name)
            if node.get("Actual Loops", 0) > 0:
                executed.add(name)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return len(planned), len(executed)


async def measure_queries(
    settings: Settings, symbol: str, day: tuple[datetime, datetime], runs: int, expected: Tick
) -> dict[str, dict[str, Any]]:
    """Median wall time (and planning/execution from EXPLAIN ANALYZE) of the common reads."""
    capture = _CaptureQuery()
    await fetch_bars(capture, symbol, "1m", *day)
    sql: dict[str, tuple[str, tuple[Any, ...]]] = {
        "latest_1000_bounded": (LATEST_BOUNDED, (symbol,)),
        "latest_1000_unbounded": (LATEST_UNBOUNDED, (symbol,)),
        "bars_1m_day": (capture.sql, capture.params),
    }
    # The ingest role reads, as an application would; no statement cache, so each run is planned.
    conn = await asyncpg.connect(settings.timescale.dsn.get_secret_value(), statement_cache_size=0)
    quotes_redis = open_quotes_redis(settings)
    prefix = settings.redis.quote_key_prefix
    out: dict[str, dict[str, Any]] = {}
    try:
        quote = await read_quote(quotes_redis, symbol, prefix)  # warm, and checked
        if quote.get("ts_ns") != str(expected.ts_ns) or quote.get("seq") != str(expected.seq):
            raise RuntimeError(f"Redis quote of {symbol} is {quote}, expected the tick {expected}")
        rows_returned = {name: len(await conn.fetch(q, *p)) for name, (q, p) in sql.items()}
        bars = await fetch_bars(conn, symbol, "1m", *day)
        rows_returned["bars_1m_day"] = len(bars)
        wall: dict[str, list[float]] = {name: [] for name in ("latest_quote_redis", *sql)}
        planning: dict[str, list[float]] = {name: [] for name in sql}
        execution: dict[str, list[float]] = {name: [] for name in sql}
        chunks: dict[str, tuple[int, int]] = {}
        for _ in range(runs):
            began = time.perf_counter()
            await read_quote(quotes_redis, symbol, prefix)
            wall["latest_quote_redis"].append(time.perf_counter() - began)
            for name, (q, p) in sql.items():
                began = time.perf_counter()
                if name == "bars_1m_day":
                    await fetch_bars(conn, symbol, "1m", *day)  # the project's read, Decimal decoding and all
                else:
                    await conn.fetch(q, *p)
                wall[name].append(time.perf_counter() - began)
                doc = json.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {q}", *p))[0]
                planning[name].append(doc["Planning Time"])
                execution[name].append(doc["Execution Time"])
                chunks[name] = _plan_chunks(doc)
        out["latest_quote_redis"] = {"wall_ms": _ms(statistics.median(wall["latest_quote_redis"])), "rows": 1}
        for name in sql:
            out[name] = {
                "wall_ms": _ms(statistics.median(wall[name])),
                "planning_ms": round(statistics.median(planning[name]), 2),
                "execution_ms": round(statistics.median(execution[name]), 2),
                "rows": rows_returned[name],
                "chunks_planned": chunks[name][0],
                "chunks_executed": chunks[name][1],
                "sql": " ".join(sql[name][0].split()),
            }
    finally:
        await conn.close()
        await quotes_redis.aclose()
    return out


# -- machine and checks ----------------------------------------------------------------------------


def _host() -> dict[str, Any]:
    mem_kb, cpu = suite_host()  # the suite's /proc reading
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


async def machine(settings: Settings) -> dict[str, Any]:
    conn = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value())
    try:
        db = {
            "postgresql": await conn.fetchval("SHOW server_version"),
            "timescaledb": await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"),
            "timescaledb_license": await conn.fetchval("SHOW timescaledb.license"),
            **{s: await conn.fetchval(f"SHOW {s}") for s in _PG_SETTINGS},
        }
    finally:
        await conn.close()
    r = open_quotes_redis(settings)
    try:
        redis_version = (await r.info("server"))["redis_version"]
    finally:
        await r.aclose()
    return {**_host(), "load_avg_at_start": os.getloadavg(), **db, "redis": redis_version}


_PG_SETTINGS: Final = ("shared_buffers", "synchronous_commit", "max_wal_size", "checkpoint_timeout", "work_mem")


async def service_identities(settings: Settings) -> dict[str, str]:
    """Changes when a service restarts (other sessions run fault tests that do)."""
    conn = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value())
    try:
        timescale = str(await conn.fetchval("SELECT pg_postmaster_start_time()"))
    finally:
        await conn.close()
    r = open_quotes_redis(settings)
    try:
        run_id = str((await r.info("server"))["run_id"])
    finally:
        await r.aclose()
    return {"timescaledb": timescale, "redis": run_id}


async def final_state(settings: Settings, rows: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """ANALYZE, sizes, and count checks of what the load left in the scratch database."""
    conn = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value())
    try:
        await conn.execute("ANALYZE")
        size = await conn.fetchrow("SELECT * FROM hypertable_detailed_size('stock_prices')")
        rollup = await conn.fetchval("SELECT hypertable_size('ohlcv_1m_rollup')")
        chunks = await conn.fetch(
            "SELECT range_start, range_end FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'stock_prices' ORDER BY range_start"
        )
        count = await conn.fetchval("SELECT count(*) FROM stock_prices")
        offsets = await conn.fetchval("SELECT coalesce(sum(next_offset), 0)::bigint FROM ingest_offsets")
        trades = await conn.fetchval("SELECT coalesce(sum(trade_count), 0)::bigint FROM ohlcv_1m_rollup")
        database_bytes = await conn.fetchval("SELECT pg_database_size(current_database())")
    finally:
        await conn.close()
    state = {
        "stock_prices_rows": count,
        "chunks": len(chunks),
        "rows_per_chunk": round(count / max(1, len(chunks))),
        "table_bytes": size["table_bytes"],
        "index_bytes": size["index_bytes"],
        "toast_bytes": size["toast_bytes"],
        "total_bytes": size["total_bytes"],
        "total_mb": round(size["total_bytes"] / 2**20, 1),
        "bytes_per_row": round(size["total_bytes"] / max(1, count), 1),
        "ohlcv_1m_rollup_mb": round(rollup / 2**20, 1),
        "database_mb": round(database_bytes / 2**20, 1),
        "first_chunk_start": chunks[0]["range_start"].isoformat() if chunks else None,
        "last_chunk_end": chunks[-1]["range_end"].isoformat() if chunks else None,
    }
    checks = [
        {"what": "rows in stock_prices", "expected": rows, "actual": count},
        {"what": "sum of ingest_offsets.next_offset", "expected": rows, "actual": offsets},
        {"what": "sum of ohlcv_1m trade_count", "expected": rows, "actual": trades},
    ]
    for c in checks:
        c["ok"] = c["expected"] == c["actual"]
    return state, checks


def ratio_of(slices: Sequence[dict[str, Any]], key: str = "ticks_per_s") -> tuple[float, int]:
    """Median of the last k slices over the median of the first k, k = min(3, half the slices)."""
    k = max(1, min(3, len(slices) // 2))
    first = statistics.median(s[key] for s in slices[:k])
    last = statistics.median(s[key] for s in slices[-k:])
    return round(last / first, 3), k


# -- the run -----------------------------------------------------------------------------------------


def code_version() -> dict[str, Any]:
    """Which code this run measured: other engineers edit the shared checkout while
    benchmarks run, and the pipeline is imported from wherever ``nexanest`` resolves
    (the checkout, or a ``git archive`` snapshot put first on PYTHONPATH)."""
    package = Path(pipeline_package.__file__).resolve().parent.parent
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    out: dict[str, Any] = {"checkout_head": commit, "imported_from": str(package)}
    if package == ROOT:
        status = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "-uno", "--", *_SOURCE_DIRS],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        out["uncommitted_changes"] = sorted(line[3:] for line in status.splitlines() if line)
    else:
        stamp = package / "COMMIT"
        out["snapshot_of"] = stamp.read_text().strip() if stamp.exists() else "unknown"
    return out


_SOURCE_DIRS: Final = ("pipeline", "schemas", "consumers", "producers")


async def run(args: argparse.Namespace, base: Settings, scratch: Scratch) -> dict[str, Any]:
    started = time.monotonic()
    started_at = datetime.now(UTC)
    code = code_version()
    identities_before = await service_identities(base)
    host = await machine(base)
    settings = create_scratch(base, scratch)
    applied = await migrate(settings, ["timescale"])
    print(
        f"[growth] scratch database {scratch.database}: {len(applied)} migrations applied "
        f"({', '.join(s.migration.filename for s in applied)})",
        file=sys.stderr,
        flush=True,
    )
    span_s = args.hours * 3600
    # Whole hours, ending at the current hour: chunk boundaries fall between slices
    # of tick time, and "the last day" is inside the data.
    start = started_at.replace(minute=0, second=0, microsecond=0) - timedelta(seconds=span_s)
    start_ns = int(start.timestamp()) * 10**9
    pool = await open_timescale_pool(settings)
    try:
        slices, feed, totals = await load(settings, args, start_ns, span_s, pool)
    finally:
        await pool.close()
    state, checks = await final_state(settings, totals["rows"])
    symbol = "SYN0007" if args.symbols > 7 else "SYN0000"
    last = feed.last_tick[symbol]
    day_end = datetime.fromtimestamp(last.ts_ns // 10**9 // 60 * 60 + 60, UTC)  # the end of its minute
    day = (day_end - timedelta(days=1), day_end)
    queries = await measure_queries(settings, symbol, day, args.runs, last)
    identities_after = await service_identities(base)
    restarted = [s for s in identities_before if identities_before[s] != identities_after[s]]
    ratio, k = ratio_of(slices)
    rates = [s["ticks_per_s"] for s in slices]
    return {
        "benchmark": "growth",
        "command": args.command_line,
        "started_at": started_at.isoformat(timespec="seconds"),
        "run_id": scratch.run_id,
        "machine": {**host, "load_avg_at_end": os.getloadavg()},
        "parameters": {
            "rows": args.rows,
            "symbols": args.symbols,
            "seed": args.seed,
            "slice_rows": args.slice_rows,
            "batch_rows": settings.batch.max_rows,
            "partitions": settings.kafka.partitions,
            "tick_span_hours": args.hours,
            "tick_time_from": start.isoformat(),
            "ticks_per_s_of_tick_time": round(args.rows / span_s, 2),
            "query_runs": args.runs,
            "query_symbol": symbol,
            "query_day": [day[0].isoformat(), day[1].isoformat()],
        },
        "scratch": {
            "database": scratch.database,
            "migrations": [s.migration.filename for s in applied],
            "redis_quote_prefix": settings.redis.quote_key_prefix,
        },
        "load": totals,
        "slices": slices,
        "ratio_last_vs_first": ratio,
        "ratio_definition": f"median ticks_per_s of the last {k} slices / median of the first {k}",
        "slowest_slice_vs_first": round(min(rates) / statistics.median(rates[:k]), 3),
        "target": {"bound": TARGET_RATIO, "met": ratio >= TARGET_RATIO},
        "queries_ms": {name: q["wall_ms"] for name, q in queries.items()},
        "queries": queries,
        "size": state,
        "checks": checks,
        "services_restarted_during_run": restarted,
        "code": code,
        "duration_s": round(time.monotonic() - started, 1),
    }


# -- RESULTS.md ------------------------------------------------------------------------------------


def _n(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def markdown(result: dict[str, Any], json_path: Path | None) -> str:
    m, p, load_, size = result["machine"], result["parameters"], result["load"], result["size"]
    slices = result["slices"]
    k = max(1, min(3, len(slices) // 2))
    first = statistics.median(s["ticks_per_s"] for s in slices[:k])
    met = "met" if result["target"]["met"] else "**not met**"
    lines = [
        f"## {result['started_at'][:16]} · growth of stock_prices to {p['rows']:,} rows · run `{result['run_id']}`",
        "",
        f"Command: `{result['command']}` ({result['duration_s']:.0f} s; the load {load_['wall_s']:.0f} s, "
        f"of which tick generation {load_['generate_s']:.0f} s untimed)."
        + (
            f" JSON: `{json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path}`."
            if json_path
            else ""
        ),
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, shared; Python {m['python']}; "
        f"PostgreSQL {m['postgresql']} + TimescaleDB {m['timescaledb']} ({m['timescaledb_license']}), "
        f"shared_buffers {m['shared_buffers']}, synchronous_commit={m['synchronous_commit']}, "
        f"max_wal_size {m['max_wal_size']} ({load_['checkpoints']} checkpoints during the load); Redis {m['redis']}. "
        f"Load average {m['load_avg_at_start'][0]:.2f} at start, {m['load_avg_at_end'][0]:.2f} at end.",
        "",
        f"Setup: scratch database `{result['scratch']['database']}` (dropped afterwards) with the project's "
        f"migrations ({', '.join(result['scratch']['migrations'])}); `TimescaleSink` driven as the consumer drives "
        f"it (claim; per batch write, advance, flush: COPY, rollups "
        f"`{load_['rollups']}`, exactly-once offsets) in batches of {p['batch_rows']:,}; {p['rows']:,} synthetic "
        f"ticks, {p['symbols']} symbols, seed {p['seed']}, {p['tick_span_hours']:g} h of tick time "
        f"({p['ticks_per_s_of_tick_time']:,} ticks/s of tick time) in time order. No Kafka (it isolates the "
        "database write; end to end is the suite's). Each batch's quotes go to Redis through `RedisQuoteSink` "
        "first, timed apart (Redis ms). Timed: each batch's database write (COPY encoding and bar aggregation "
        "in Python, the transaction); tick generation is not.",
        "",
        f"| slice | rows in table | ticks/s | vs first {k} | chunks | table MB | batch p50 ms | p99 ms "
        "| Redis ms/batch | retries | load |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, s in enumerate(slices, 1):
        lines.append(
            f"| {i} | {s['rows_in_table']:,} | {_n(s['ticks_per_s'])} | {s['ticks_per_s'] / first:.2f} "
            f"| {s['chunks']} | {_n(s['table_mb'])} | {s['batch_ms_p50']:.1f} | {s['batch_ms_p99']:.1f} "
            f"| {s['redis_quotes_s'] * 1000 / s['batches']:.1f} | {s['retries']} | {s['load_avg_1m']:.2f} |"
        )
    lines += [
        "",
        f"**Ratio** ({result['ratio_definition']}): **{result['ratio_last_vs_first']:.2f}** "
        f"(slowest slice {result['slowest_slice_vs_first']:.2f} of the first {k}). Target ≥ {TARGET_RATIO}: {met}. "
        f"Overall {_n(load_['ticks_per_s_overall'])} ticks/s.",
        "",
        f"Queries at {size['stock_prices_rows']:,} rows, {size['chunks']} chunks, after ANALYZE (median of "
        f"{p['query_runs']} warm runs, asyncpg without statement cache; symbol {p['query_symbol']}):",
        "",
        "| query | wall ms | planning ms | execution ms | rows | chunks planned / executed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, q in result["queries"].items():
        if "planning_ms" in q:
            lines.append(
                f"| {name} | {q['wall_ms']:.2f} | {q['planning_ms']:.2f} | {q['execution_ms']:.2f} | {q['rows']:,} "
                f"| {q['chunks_planned']} / {q['chunks_executed']} |"
            )
        else:
            lines.append(f"| {name} (`read_quote`) | {q['wall_ms']:.2f} | | | 1 | |")
    lines += [
        "",
        f"Size: stock_prices {size['total_mb']:,} MB ({size['table_bytes'] / 2**20:,.0f} MB heap, "
        f"{size['index_bytes'] / 2**20:,.0f} MB indexes), {size['bytes_per_row']:.0f} bytes a row, "
        f"{size['rows_per_chunk']:,} rows a chunk; ohlcv_1m_rollup {size['ohlcv_1m_rollup_mb']:,} MB; "
        f"the whole database {size['database_mb']:,} MB.",
        "",
        f"Checks: {sum(c['ok'] for c in result['checks'])} of {len(result['checks'])} passed "
        "(" + "; ".join(f"{c['what']} {c['actual']:,}" for c in result["checks"]) + ").",
        "",
        "Reading (generated from the figures above): " + reading(result),
    ]
    code = result.get("code", {})
    if code.get("uncommitted_changes"):
        lines += [
            "",
            f"**Code:** the checkout at {code['checkout_head']} with uncommitted changes in "
            f"{', '.join(code['uncommitted_changes'])} (work in progress in the shared checkout) was imported.",
        ]
    elif code:
        lines[2] += (
            f" Code: {code['checkout_head']}, clean."
            if "snapshot_of" not in code
            else f" Code: a `git archive` snapshot of {code['snapshot_of']}."
        )
    if result["services_restarted_during_run"]:
        lines += [
            "",
            f"**Warning:** restarted during the run: {', '.join(result['services_restarted_during_run'])}; "
            "treat these figures as void.",
        ]
    return "\n".join(lines) + "\n"


def reading(result: dict[str, Any]) -> str:
    """A few sentences that state what the figures say, computed from them (no judgement is hard-coded)."""
    slices, q, size = result["slices"], result["queries"], result["size"]
    k = max(1, min(3, len(slices) // 2))
    first = statistics.median(s["ticks_per_s"] for s in slices[:k])
    slowest = min(range(len(slices)), key=lambda i: slices[i]["ticks_per_s"])
    half = len(slices) // 2
    early = statistics.median(s["ticks_per_s"] for s in slices[:half] or slices)
    late = statistics.median(s["ticks_per_s"] for s in slices[half:])
    verdict = "meets" if result["target"]["met"] else "misses"
    bounded, unbounded, bars = q["latest_1000_bounded"], q["latest_1000_unbounded"], q["bars_1m_day"]
    text = [
        f"at {size['stock_prices_rows']:,} rows the ingest rate is {result['ratio_last_vs_first']:.2f} of the rate on "
        f"the empty table, so it {verdict} the target of at least 0.9; the median of the second half of the slices is "
        f"{late / early:.2f} of the first half's. The slowest slice (no. {slowest + 1}, at "
        f"{slices[slowest]['rows_in_table']:,} rows, load average {slices[slowest]['load_avg_1m']:.2f}) ran at "
        f"{slices[slowest]['ticks_per_s'] / first:.2f} of the first {k}.",
        f"The last 1,000 ticks of a symbol take {bounded['wall_ms']:.1f} ms with the time bound "
        f"({bounded['chunks_planned']} chunks planned, planning {bounded['planning_ms']:.1f} ms) and "
        f"{unbounded['wall_ms']:.1f} ms without ({unbounded['chunks_planned']} chunks planned, planning "
        f"{unbounded['planning_ms']:.1f} ms, {unbounded['chunks_executed']} executed).",
        f"A day of 1-minute bars ({bars['rows']:,} bars) takes {bars['wall_ms']:.1f} ms from the rollup table; "
        f"the latest quote from Redis {q['latest_quote_redis']['wall_ms']:.2f} ms.",
    ]
    return " ".join(text)


def write_results_md(section: str, path: Path = RESULTS_MD) -> None:
    """Insert ``section`` right below the marker line, re-reading the file first
    (other scripts add their runs to it too)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n\n" + MD_MARKER
    if MD_MARKER not in text:
        text = text.rstrip("\n") + "\n\n" + MD_MARKER
    head, tail = text.split(MD_MARKER, 1)
    path.write_text(head + MD_MARKER + "\n" + section + ("" if tail.startswith("\n") else "\n") + tail)


# -- entry point -------------------------------------------------------------------------------------


def _terminate(signum: int, frame: FrameType | None) -> NoReturn:
    """Ctrl-C and SIGTERM raise at once, wherever the loop is: asyncio's own
    SIGINT handling only cancels the main task, and a driver may absorb that
    cancellation (observed once here), which would let the run go on. ``main``
    drops the scratch database either way."""
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="subcommand")
    parser.add_argument("--rows", type=int, default=FULL_ROWS, help=f"rows stock_prices grows to (default {FULL_ROWS})")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_ROWS:,} rows over 4.8 h of tick time (about a minute)"
    )
    parser.add_argument("--symbols", type=int, default=300, help="symbols in the feed (default 300)")
    parser.add_argument("--seed", type=int, default=1, help="feed seed (default 1)")
    parser.add_argument(
        "--slice-rows",
        type=int,
        default=0,
        help="rows per reported slice, in whole batches (default rows/20, at least 5 batches: 500000 at 10M)",
    )
    parser.add_argument(
        "--hours",
        type=float,
        default=0,
        help="tick time the rows span, ending now (default 48; --quick 4.8, the full run's ticks per hour)",
    )
    parser.add_argument("--runs", type=int, default=21, help="timed runs per query (default 21)")
    parser.add_argument(
        "--output", type=Path, default=None, help="JSON file (default benchmarks/results/growth-<time>.json)"
    )
    parser.add_argument("--no-markdown", action="store_true", help="do not add the run to benchmarks/RESULTS.md")
    c = sub.add_parser("cleanup", help="drop the scratch database and Redis keys an interrupted run left behind")
    c.add_argument("run_id", help="the run id printed at its start, e.g. g1a2b3c4d")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    configure_logging(LogSettings(level="warning"))
    settings = load_settings()
    if args.subcommand == "cleanup":
        if not RUN_ID.fullmatch(args.run_id):
            left = leftover_databases(settings)
            print(f"{args.run_id!r} is not a growth run id (g and 8 hex digits); left over: {left}", file=sys.stderr)
            return 2
        report = clean_up(settings, Scratch(args.run_id))
        print(json.dumps(report, indent=2))
        return 0 if report.get("database_dropped") and "redis_error" not in report else 1
    if args.quick:
        args.rows = QUICK_ROWS
    # The bars a batch touches depend on how much tick time it spans, so --quick keeps
    # the full run's tick rate (10M rows in 48 h) rather than its span.
    args.hours = args.hours or (FULL_HOURS * QUICK_ROWS / FULL_ROWS if args.quick else FULL_HOURS)
    if args.rows < 1 or args.symbols < 1 or args.hours <= 0 or args.runs < 1:
        parser.error("--rows, --symbols, --hours and --runs must be positive")
    batch = settings.batch.max_rows
    wanted = args.slice_rows or max(5 * batch, args.rows // 20)  # a slice of 1-2 batches is mostly noise
    args.slice_rows = max(batch, wanted // batch * batch)  # whole consumer batches
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    args.command_line = shlex.join([python, "benchmarks/growth.py", *sys.argv[1:]])
    scratch = Scratch("g" + uuid.uuid4().hex[:8])
    print(
        f"[growth] run {scratch.run_id}: {args.rows:,} rows in slices of {args.slice_rows:,}; if interrupted hard, "
        f"`python benchmarks/growth.py cleanup {scratch.run_id}`",
        file=sys.stderr,
        flush=True,
    )
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    try:
        result = uvloop.run(run(args, settings, scratch))
    except KeyboardInterrupt:
        print("[growth] interrupted; nothing reported", file=sys.stderr, flush=True)
        return 130
    finally:
        cleanup = clean_up(settings, scratch)
        print(f"[growth] cleanup: {json.dumps(cleanup)}", file=sys.stderr, flush=True)
    result["cleanup"] = cleanup
    out = args.output or RESULTS_DIR / f"growth-{time.strftime('%Y%m%dT%H%M%S')}.json"
    print_and_save("growth", result, out)
    if not args.no_markdown:
        write_results_md(markdown(result, out))
        print(f"[growth] section added to {RESULTS_MD}", file=sys.stderr)
    ok = all(c["ok"] for c in result["checks"]) and cleanup.get("database_dropped", False)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
