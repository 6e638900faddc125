"""One benchmark run: its names, settings and count checks, and ``main``, the frame every benchmark runs in.

Everything a run creates carries its run id (a letter and 8 hex digits), so
``harness.cleanup`` finds it and touches nothing else: the scratch database
``nexanest_bench_<run>``, topics ``bench.<run>.*``, consumer groups and sources
``bench-<run>-*``, Redis keys ``bench:<run>:*``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shlex
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, ClassVar

import asyncpg
import uvloop

from benchmarks.harness import report
from benchmarks.harness.cleanup import clean_up, patiently, prepare_database
from benchmarks.harness.sampling import host, machine, restarted, service_identities
from nexanest.pipeline.log import configure_logging
from nexanest.pipeline.runner import IngestStats
from nexanest.pipeline.settings import KafkaSettings, LogSettings, Settings, load_settings, namespace_environment
from nexanest.pipeline.sinks.copy_binary import COPY_COLUMNS, StockPriceCopyEncoder
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.producers.publisher import publish_feed
from nexanest.schemas.ticks import Tick


class CountMismatch(Exception):
    """A consumer did not write (or read) every row it should have: no rate is reported for it."""


class BenchError(Exception):
    """The run could not measure what it set out to (the message says why)."""


def feed_config(
    ticks: int, symbols: int, seed: int, source: str, start_ns: int, rate: float = 100_000
) -> SyntheticConfig:
    """The benchmarks' ticks: fixed seed, ``rate`` ticks per second of tick time, published flat out."""
    config: dict[str, Any] = {"symbols": symbols, "rate": rate, "count": ticks, "seed": seed, "start_ns": start_ns}
    return SyntheticConfig(**config, source=source, paced=False)


class Batches:
    """Any ticks as a feed adapter, so the product's ``publish_feed`` publishes them."""

    venue: ClassVar[str] = "benchmark"

    def __init__(self, ticks: Iterable[Tick], size: int = 1_000) -> None:
        self._ticks, self._size = iter(ticks), size

    async def ticks(self) -> AsyncIterator[Sequence[Tick]]:
        while batch := list(itertools.islice(self._ticks, self._size)):
            yield batch
            await asyncio.sleep(0)


async def publish(kafka: KafkaSettings, ticks: SyntheticConfig | Iterable[Tick], source: str) -> tuple[int, float]:
    """Publish to ``kafka.ticks_topic`` (created with its DLQ and events topics, so consumers
    starting at once do not race to): (ticks acknowledged, seconds)."""
    started = time.perf_counter()
    feed = SyntheticFeed(ticks) if isinstance(ticks, SyntheticConfig) else Batches(ticks)
    published = await publish_feed(kafka, feed, source)
    return published, time.perf_counter() - started


@dataclass
class Run:
    """Names and checks of one run (``letter`` names the script)."""

    base: Settings
    letter: str = "s"
    run_id: str = ""
    symbols: int = 300
    seed: int = 1
    sources: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.run_id = self.run_id or self.letter + uuid.uuid4().hex[:8]

    @property
    def prefix(self) -> str:
        return f"bench.{self.run_id}"

    def topic(self, feed: str) -> str:
        return f"{self.prefix}.ticks-{feed}"

    @property
    def admin_dsn(self) -> str:
        return self.base.timescale.admin_dsn.get_secret_value()

    def source(self, name: str = "") -> str:
        source = f"bench-{self.run_id}" + (f"-{name}" if name else "")
        self.sources.append(source)
        return source

    def group(self, scenario: str) -> str:
        """A consumer group never used before (a scenario run twice gets a new one)."""
        self.groups.append(f"bench-{self.run_id}-{scenario}-{len(self.groups)}")
        return self.groups[-1]

    def settings(self, scenario: str, topic: str, partitions: int | None = None, **consumer: object) -> Settings:
        """The pipeline's settings with this scenario's topics, group, Redis keys and no metrics server."""
        b, keys, prefix = self.base, f"bench:{self.run_id}:{scenario}", f"{self.prefix}.{scenario}"
        kafka: dict[str, object] = {"ticks_topic": topic, "dead_letter_topic": f"{prefix}.dlq"}
        kafka |= {"events_topic": f"{prefix}.events"}
        kafka |= {"consumer_group": self.group(scenario), "partitions": partitions or b.kafka.partitions}
        redis = {"quote_key_prefix": f"{keys}:quote:", "bar_key_prefix": f"{keys}:bar:"}
        update = {"kafka": b.kafka.model_copy(update=kafka), "redis": b.redis.model_copy(update=redis)}
        update |= {"metrics": b.metrics.model_copy(update={"port": 0})}
        update |= {"consumer": b.consumer.model_copy(update=consumer)}
        return b.model_copy(update=update)

    def feed(self, ticks: int, source: str, start_ns: int, rate: float = 100_000) -> SyntheticConfig:
        """``feed_config`` with this run's ``--symbols`` and ``--seed``."""
        return feed_config(ticks, self.symbols, self.seed, source, start_ns, rate)

    async def backlog(
        self, name: str, ticks: int, start_ns: int, partitions: int | None = None, **consumer: object
    ) -> tuple[Settings, str]:
        """A topic, source and settings of ``name``'s own, with its feed published before any
        consumer starts, every tick acknowledged (checked)."""
        settings, source = self.settings(name, self.topic(name), partitions, **consumer), self.source(name)
        published, _ = await publish(settings.kafka, self.feed(ticks, source, start_ns), source)
        self.check(name, "ticks acknowledged by Kafka", ticks, published)
        return settings, source

    @staticmethod
    def env(settings: Settings, **extra: str) -> dict[str, str]:
        """Environment of a ``nexanest`` subprocess running with ``settings`` (DSNs stay off its command line)."""
        quiet = {"NEXANEST_METRICS__PORT": "0", "NEXANEST_LOG__LEVEL": "warning"}
        return {**os.environ, **namespace_environment(settings), **quiet, **extra}

    def check(self, scenario: str, what: str, expected: object, actual: object, *, strict: bool = True) -> bool:
        """Record a count check; unless ``strict`` is off, raise ``CountMismatch`` if it fails."""
        ok = expected == actual
        self.checks.append({"scenario": scenario, "what": what, "expected": expected, "actual": actual, "ok": ok})
        if not ok and strict:
            raise CountMismatch(f"{scenario}: {what}: expected {expected}, got {actual}")
        return ok

    async def sql(self, query: str, *args: object, method: str = "fetchval") -> Any:
        """One value (or what ``method`` returns) from the scratch database, on a connection of its own."""
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            return await getattr(conn, method)(query, *args)
        finally:
            await conn.close()

    async def stored_once(self, scenario: str, source: str, ticks: int, *, strict: bool = False) -> bool:
        """Whether every tick of ``source`` is stored once: rows = distinct seq = ticks, seqs
        consecutive from the first (0 in process; a `produce synthetic --source` run counts
        from the clock's ns, so that a reused tag never repeats a seq)."""
        query = "SELECT count(*), count(DISTINCT source_seq), min(source_seq), max(source_seq) FROM stock_prices"
        found = tuple(await self.sql(f"{query} WHERE source = $1", source, method="fetchrow"))
        first = found[2] if isinstance(found[2], int) else 0
        expected = (ticks, ticks, first, first + ticks - 1)
        return self.check(scenario, "rows, distinct seq, first and last seq", expected, found, strict=strict)

    async def scratch_table(self, conn: asyncpg.Connection, name: str, *, only_index: str = "") -> str:
        """An empty hypertable shaped like ``stock_prices`` (columns, defaults, constraints,
        indexes, chunk interval), in the scratch database; with ``only_index`` (columns,
        such as ``symbol, time DESC``) that one index instead of the table's: what the
        database takes with the least a read needs."""
        table, indexes = f"bench_{self.run_id}_{name}", "EXCLUDING INDEXES" if only_index else ""
        await conn.execute(f"CREATE TABLE {table} (LIKE stock_prices INCLUDING ALL {indexes})")
        interval = "SELECT time_interval FROM timescaledb_information.dimensions WHERE hypertable_name = 'stock_prices'"
        # Never the hypertable's default time index: the copied table has exactly
        # stock_prices' indexes (migration 0008 dropped that default), or ``only_index``.
        hypertable = (
            f"SELECT create_hypertable($1::regclass, 'time', chunk_time_interval => ({interval}),"
            " create_default_indexes => false)"
        )
        await conn.execute(hypertable, table)
        if only_index:
            await conn.execute(f"CREATE INDEX ON {table} ({only_index})")
        return table


async def db_clock(conn: asyncpg.Connection, source: str) -> dict[str, Any]:
    """Rows of ``source`` whose transaction started before the last one ÷ (start of the last - start of
    the first), on the database's clock (``ingested_at`` is a row's transaction start): a subprocess's
    rate without its start-up and idle exit."""
    clock = "SELECT min(ingested_at), max(ingested_at), count(DISTINCT ingested_at) FROM stock_prices WHERE source = $1"
    first, last, transactions = await conn.fetchrow(clock, source)
    if transactions < 2:
        raise RuntimeError(f"{source}: {transactions} transaction(s) give no window: use more --ticks")
    window = (last - first).total_seconds()
    before = "SELECT count(*) FROM stock_prices WHERE source = $1 AND ingested_at < $2"
    return {"ticks_per_s": await conn.fetchval(before, source, last) / window, "window_s": window}


async def copy_in_turns(
    conn: asyncpg.Connection, tables: Mapping[str, str], ticks: Sequence[Tick], batch_rows: int, partitions: int
) -> dict[str, list[float]]:
    """The ticks by binary COPY (the sink's encoder, one transaction a batch) into every table, each batch
    into all of them in rotating order: the seconds of each COPY, per table."""
    seconds: dict[str, list[float]] = {name: [] for name in tables}
    for n, first in enumerate(range(0, len(ticks), batch_rows)):
        batch = enumerate(ticks[first : first + batch_rows], first)
        data = StockPriceCopyEncoder().encode([(t, i % partitions, i) for i, t in batch])
        for name in rotated(list(tables), n):
            began = time.perf_counter()
            async with conn.transaction():
                await conn.copy_to_table(tables[name], source=data, columns=list(COPY_COLUMNS), format="binary")
            seconds[name].append(time.perf_counter() - began)
    return seconds


async def explain(conn: asyncpg.Connection, sql: str, *params: object) -> dict[str, float]:
    """Planning and execution ms of one run of ``sql`` (EXPLAIN ANALYZE), and the
    chunks (``_hyper_*`` relations) it planned and those it actually executed."""
    doc = json.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *params))[0]
    chunks: dict[str, bool] = {}  # name: executed
    nodes = [doc["Plan"]]
    while nodes:
        node = nodes.pop()
        nodes += node.get("Plans", [])
        if (name := node.get("Relation Name", "")).startswith("_hyper_"):
            chunks[name] = chunks.get(name, False) or node.get("Actual Loops", 0) > 0
    times = {"planning_ms": doc["Planning Time"], "execution_ms": doc["Execution Time"]}
    return times | {"chunks_planned": len(chunks), "chunks_executed": sum(chunks.values())}


async def time_queries(
    conn: asyncpg.Connection, queries: Mapping[str, tuple[str, Sequence[Any]]], runs: int
) -> dict[str, dict[str, float]]:
    """Each query warm (one untimed run: its rows), then ``runs`` times in rotating
    order: the median client wall time (on a connection without a statement cache
    every run is planned, as an application's query with fresh parameters is) and
    the medians of ``explain``."""
    out: dict[str, list[dict[str, float]]] = {}
    for name, (sql, params) in queries.items():
        out[name] = [{"rows": len(await conn.fetch(sql, *params))}]
    for i in range(runs):
        for name in rotated(list(queries), i):
            sql, params = queries[name]
            began = time.perf_counter()
            await conn.fetch(sql, *params)
            out[name].append({"wall_ms": (time.perf_counter() - began) * 1000} | await explain(conn, sql, *params))
    keys = ("wall_ms", "planning_ms", "execution_ms", "chunks_planned", "chunks_executed")
    return {name: t[0] | {k: statistics.median(x[k] for x in t[1:]) for k in keys} for name, t in out.items()}


def busy_s(stats: IngestStats) -> float:
    """The consumer's busy time: from its first batch with records to the end of its last write."""
    assert stats.first_batch_at is not None
    assert stats.last_batch_at is not None
    return stats.last_batch_at - stats.first_batch_at


def rotated(items: Sequence[str], i: int) -> list[str]:
    """``items`` starting at the ``i``-th: variants measured in turns, in an order that
    rotates, so a disturbance of the shared machine falls on all of them alike."""
    return [*items[i % len(items) :], *items[: i % len(items)]]


def as_json(result: dict[str, Any]) -> str:
    """The section of a micro-benchmark: its result, machine facts aside."""
    shown = {k: v for k, v in result.items() if k not in ("machine", "cleanup")}
    return json.dumps(shown, indent=2, default=str) + "\n"


async def _execute(scenario: ModuleType, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Measure in the frame: machine facts, and for a benchmark that uses the services (``SERVICES``,
    the default) a scratch database (on the cluster ``scenario.cluster(base)`` names, if it has one),
    service restarts and the clean-up."""
    run = Run(load_settings(), name[0], symbols=args.symbols, seed=args.seed)
    log, services = report.log(name), getattr(scenario, "SERVICES", True)
    started, started_at, base = time.monotonic(), datetime.now(UTC), run.base
    out = {"benchmark": name, "run_id": run.run_id, "command": args.command_line}
    out |= {"mode": "quick" if args.quick else "full", "started_at": started_at.isoformat(timespec="seconds")}
    if not services:
        facts, measured = host(), await scenario.measure(run, args)
        out |= {"duration_s": round(time.monotonic() - started, 1)}
        out |= {"machine": facts | {"load_avg_at_end": os.getloadavg()}}
        return {**out, **measured, "checks": run.checks, "cleanup": {}}
    log(f"run {run.run_id}; if interrupted: python -m benchmarks.harness.cleanup {run.run_id}")
    host_, before = await machine(base), await service_identities(base)
    cluster, port = await scenario.cluster(base) if hasattr(scenario, "cluster") else (base, None)
    migrations: list[str] = []
    try:
        run.base, migrations = await prepare_database(cluster, run.run_id, port)
        measured = await scenario.measure(run, args)
    finally:
        log("cleaning up")
        cleanup = await clean_up(cluster, run.run_id, port)
    after = await patiently(cleanup, "service identities", lambda: service_identities(base)) or {}
    database = run.base.timescale.dsn.get_secret_value().rsplit("/", 1)[-1].split("?")[0]
    out |= {"duration_s": round(time.monotonic() - started, 1), "restarted": restarted(before, after)}
    out |= {"machine": host_ | {"load_avg_at_end": os.getloadavg()}}
    out |= {"scratch": {"database": database, "migrations": migrations}}
    return {**out, **measured, "checks": run.checks, "cleanup": cleanup}


def _shown(value: object) -> str:
    """An option's value as the command line takes it (thousands separated)."""
    return ",".join(map(str, value)) if isinstance(value, list) else f"{value:,}" if type(value) is int else f"{value}"


def parse_args(scenario: ModuleType, argv: Sequence[str]) -> argparse.Namespace:
    """The frame's options and ``scenario.OPTIONS`` (name: (default, default under ``--quick`` or None,
    help); the type is the default's, a list one of comma-separated ints), each unset one at its default
    (``--quick``'s where it has one); ``parameters``: all of them, as the result records them."""
    parser = argparse.ArgumentParser(description=scenario.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--symbols", type=int, default=getattr(scenario, "SYMBOLS", 300), help="symbols in the feed (%(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=getattr(scenario, "SEED", 1), help="seed of the synthetic feed (%(default)s)"
    )
    parser.add_argument("--update-results", action="store_true", help="also into RESULTS.md (a quiet machine's run)")
    options: dict[str, tuple[Any, Any, str]] = getattr(scenario, "OPTIONS", {})
    for key, (full, quick, what) in options.items():
        flag, kind = "--" + key.replace("_", "-"), type(full)
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=what)
            continue
        shown = _shown(full) + ("" if quick is None else f"; quick {_shown(quick)}")
        parse = (lambda s: [int(x) for x in s.split(",") if x]) if kind is list else kind
        parser.add_argument(flag, type=parse, help=f"{what} ({shown})")
    quick = ", ".join(f"{k} {_shown(q)}" for k, (_, q, _) in options.items() if q is not None)
    parser.add_argument("--quick", action="store_true", help=getattr(scenario, "QUICK", quick or "(no effect)"))
    args = parser.parse_args(argv)
    for key, (full, quick_value, _) in options.items():
        if getattr(args, key) is None:
            setattr(args, key, quick_value if args.quick and quick_value is not None else full)
    args.parameters = {k: getattr(args, k) for k in ("symbols", "seed", *options)}
    return args


def main(module: str) -> int:
    """Run a benchmark module: ``OPTIONS`` are its options (beside ``--quick``, ``--symbols``,
    ``--seed`` and ``--update-results``), ``measure(run, args)`` measures (in the scratch database
    unless ``SERVICES`` is False), ``markdown(result)`` (``as_json`` if it has none) renders its
    section, which ``report.save`` writes with the JSON. Exit 0 when every count check passed and
    nothing failed."""
    scenario = sys.modules[module]
    path = scenario.__spec__.name if scenario.__spec__ else module
    name, args = path.rsplit(".", 1)[-1], parse_args(scenario, sys.argv[1:])
    configure_logging(LogSettings(level="warning"))
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
    args.command_line = shlex.join([python, "-m", path, *sys.argv[1:]])  # how this run was started
    try:
        result = uvloop.run(_execute(scenario, name, args))  # the event loop the `nexanest` command uses
    except BenchError as exc:
        report.log(name)(f"FAILED: {exc}")
        return 1
    result["parameters"] = args.parameters | result.get("parameters", {})
    report.save(name, result, getattr(scenario, "markdown", as_json)(result), args)
    failed = result.get("errors") or result["cleanup"].get("failed") or not all(c["ok"] for c in result["checks"])
    return 1 if failed else 0
