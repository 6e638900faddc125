"""Scale-out (issue 5): 1, 2 and 4 consumer processes in one group on a 12-partition topic.

    python -m benchmarks.scenarios.scale_out [--quick] [--consumers 1,2,4] [--partitions 12]

What one run does
-----------------
1. Publishes the same synthetic feed (``producers.feeds.synthetic``, seed 1, 300
   symbols) once per configuration, each into a fresh 12-partition topic of its
   own. The copies differ only in what keeps them apart in the shared tables:
   the ``source`` tag (``stock_prices`` rejects a ``(source, source_seq, time)``
   it holds already), the tick times (each configuration in an hour of its own,
   so each writes into a fresh chunk and none starts on a bigger index than
   another) and a run-scoped symbol prefix (``BO1A2B3C4D.SYN0042``): the OHLCV
   rollup tables are keyed by ``(symbol, bucket)`` with no source, so bars of
   plain ``SYN0042`` would merge into everyone else's and could never be taken
   out again. Symbol names and partitioning are identical across configurations.
2. For each N (default 1, 2, 4) starts N ``nexanest consume --until-idle S``
   processes at once in one fresh consumer group (topics, group, Redis quote and
   bar keys scoped to the run through ``NEXANEST_*``), and waits for all to exit.
3. Measures, per configuration:

   - **ticks/s**: from the database's own clock. Every row's ``ingested_at`` is
     ``now()`` of the COPY transaction that wrote it, i.e. that transaction's
     start, on one clock for all consumers. With ``t_first``/``t_last`` the
     earliest/latest such start over the configuration's rows,
     ``ticks_per_s = rows(ingested_at < t_last) / (t_last - t_first)``: rows of
     every batch that started before the last one, over the time from the start
     of the first batch to the start of the last (each batch is charged with the
     time until the next one starts; the start-up, the first fetch and the idle
     wait at the end are outside). Group joins and rebalances while the
     consumers start are inside, as is the tail in which only the consumers
     with the largest partitions still write.
   - **steady ticks/s**: the same rate over the part of that window in which
     every consumer holds its final partitions (after its last
     ``partitions_assigned`` log line) and none has written its last batch yet:
     the scaling without the start-up rebalances and the imbalance tail.
   - **CPU**: per consumer process, user+system seconds over its life and its
     peak RSS (``wait4`` rusage, exact); and, sampled from ``/proc`` every
     0.25 s and interpolated at ``t_first``/``t_last``, the CPU seconds inside
     the window of the consumers, the TimescaleDB cluster (postmaster, its live
     children and the children it has reaped), the Kafka JVM, Redis, this
     harness, and the whole machine (``/proc/stat``); ``other`` is the machine's
     busy time that none of these explain (other sessions on the shared box).
   - **exactly once**: count, distinct ``source_seq``, min and max of the rows of
     the configuration's source (the unique rule makes a doubled tick impossible,
     so count == distinct == ticks with seqs 0..ticks-1 means each once), the
     rows each process reports written add up, nothing dead-lettered; and by
     default (not with ``--quick``) ``nexanest verify``'s comparison of the topic
     with the table (counts and price checksums by partition and symbol).

   Ratios 2/1 and 4/1 are of ticks/s. Unless ``--quick`` (or ``--no-db-ceiling``),
   the run also measures the suite's ``db_ceiling`` (one client COPYing the same
   rows into an empty copy of ``stock_prices``) for the model below.

The JSON's ``"model"`` holds the inputs of the model for many machines (per
consumer rate and cores, CPU per tick by component, PostgreSQL ticks/s per
core); the reading of a recorded run, and the model, are in RESULTS.md.

Everything goes into a scratch database (``nexanest_bench_<run>``); topics,
groups, sources, symbols ``B<RUN>.*`` and Redis keys carry the run id; all of it
is removed at the end (``python -m benchmarks.harness.cleanup RUN_ID`` after an
interrupted run). Output: ``harness.report`` (``--update-results`` for RESULTS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg
import msgspec

from benchmarks.harness import report
from benchmarks.harness.cleanup import clean_up, prepare_database, symbol_prefix
from benchmarks.harness.host import machine as host_machine
from benchmarks.harness.host import pid_of, restarted, service_identities, state_dir
from benchmarks.harness.report import n as _n
from benchmarks.harness.report import ratio as _ratio
from benchmarks.harness.run import CountMismatch, Run, feed_config
from benchmarks.harness.sampling import ROOT
from benchmarks.scenarios.limits import db_ceiling as measure_db_ceiling
from nexanest.ops.verify import verify
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.log import configure_logging
from nexanest.pipeline.settings import LogSettings, Settings, load_settings
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.producers.publisher import TickPublisher
from nexanest.schemas.ticks import Tick

NEXANEST = Path(sys.executable).parent / "nexanest"
HOUR_NS: Final = 3600 * 10**9
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
SAMPLE_INTERVAL_S: Final = 0.25


MODULE = "benchmarks.scenarios.scale_out"
log = report.log("scale-out")


# -- plan and names -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    mode: str
    ticks: int
    symbols: int
    seed: int
    consumers: tuple[int, ...]
    partitions: int
    idle_s: float
    verify: bool
    db_ceiling: bool

    @staticmethod
    def from_args(args: argparse.Namespace) -> Plan:
        consumers = tuple(int(n) for n in args.consumers.split(",") if n.strip())
        if not consumers or any(n < 1 for n in consumers):
            raise SystemExit("--consumers: a comma-separated list of counts >= 1, e.g. 1,2,4")
        return Plan(
            mode="quick" if args.quick else "full",
            ticks=args.ticks or (200_000 if args.quick else 1_000_000),
            symbols=args.symbols,
            seed=args.seed,
            consumers=consumers,
            partitions=args.partitions,
            idle_s=args.idle_seconds,
            verify=(not args.quick) if args.verify is None else args.verify,
            db_ceiling=(not args.quick) if args.db_ceiling is None else args.db_ceiling,
        )


@dataclass(kw_only=True)
class Bench(Run):
    """The run's names and checks, and its plan."""

    plan: Plan


@dataclass(frozen=True)
class Configuration:
    """One N: its topic, group, source, tick times and settings."""

    consumers: int
    settings: Settings
    source: str
    feed: SyntheticConfig

    @property
    def topic(self) -> str:
        return self.settings.kafka.ticks_topic

    @property
    def to_ns(self) -> int:
        """End (exclusive) of the feed's tick times."""
        return self.feed_start_ns + self.feed.count * int(1e9 / self.feed.rate) + 1  # type: ignore[operator]

    @property
    def feed_start_ns(self) -> int:
        assert self.feed.start_ns is not None
        return self.feed.start_ns


def configurations(bench: Bench, plan: Plan) -> list[Configuration]:
    """Names and feeds of every N. Tick times: configuration k starts ten minutes
    into the hour k+2 hours before the current one (well inside the validator's
    7-day window), so each writes one fresh chunk of ``stock_prices``."""
    hour = time.time_ns() // HOUR_NS
    out = []
    for k, n in enumerate(plan.consumers):
        name = f"n{n}" if plan.consumers.count(n) == 1 else f"n{n}-{k}"
        topic = bench.topic(name)
        settings = bench.settings(name, topic)
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"partitions": plan.partitions})}
        )
        source = bench.source(name)
        feed = feed_config(plan.ticks, plan.symbols, plan.seed, source, (hour - 2 - k) * HOUR_NS + 600 * 10**9)
        out.append(Configuration(n, settings, source, feed))
    return out


# -- the feed -------------------------------------------------------------------------------------


async def _renamed(batches: AsyncIterator[list[Tick]], prefix: str) -> AsyncIterator[list[Tick]]:
    replace = msgspec.structs.replace
    async for batch in batches:
        yield [replace(t, symbol=prefix + t.symbol) for t in batch]


async def publish(bench: Bench, config: Configuration) -> dict[str, Any]:
    """The configuration's copy of the feed, flat out, into its fresh topic (and its
    DLQ and events topics, so N consumers starting at once do not race to create them)."""
    k = config.settings.kafka
    await ensure_topics(k)  # ticks and DLQ with k.partitions, events with 1
    producer = make_producer(k)
    await producer.start()
    try:
        started = time.perf_counter()
        ticks = _renamed(SyntheticFeed(config.feed).ticks(), symbol_prefix(bench.run_id))
        published = await TickPublisher(producer, config.topic, config.source).publish_all(ticks)
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    bench.check(f"n{config.consumers}", "ticks acknowledged by Kafka", bench.plan.ticks, published)
    return {"topic": config.topic, "source": config.source, "ticks": published, "ticks_per_s": published / elapsed}


# -- CPU from /proc -------------------------------------------------------------------------------


def _stat(pid: int | str) -> list[str] | None:
    """Fields of /proc/<pid>/stat from field 3 (state) on, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rfind(")") + 2 :].split()


def _cpu_s(fields: list[str], *, reaped_children: bool) -> float:
    """utime + stime (+ cutime + cstime: children it has waited for), in seconds."""
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def _machine_cpu_s() -> tuple[float, float]:
    """(busy, iowait) CPU seconds of all cores since boot, from /proc/stat."""
    with Path("/proc/stat").open() as f:
        values = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(values) - values[3] - values[4]) / CLK_TCK, values[4] / CLK_TCK


def _disk_of(path: Path) -> str | None:
    """The /proc/diskstats name of the block device holding ``path``."""
    dev = os.stat(path).st_dev
    wanted = (os.major(dev), os.minor(dev))
    for line in Path("/proc/diskstats").read_text().splitlines():
        parts = line.split()
        if (int(parts[0]), int(parts[1])) == wanted:
            return parts[2]
    return None


def _disk_written_bytes(disk: str) -> float | None:
    for line in Path("/proc/diskstats").read_text().splitlines():
        parts = line.split()
        if parts[2] == disk:
            return int(parts[9]) * 512.0  # sectors written; always 512-byte units here
    return None


class CpuSampler:
    """Cumulative CPU seconds of each component, sampled with wall-clock times.

    A PostgreSQL cluster is a postmaster and the backends it forks; a backend
    that exits is reaped by the postmaster and its time moves to the
    postmaster's cutime/cstime, so the sum stays cumulative across connections
    coming and going."""

    def __init__(self, consumers: dict[str, int], wal: asyncpg.Connection | None = None) -> None:
        self.services = {name: pid_of(name) for name in ("timescaledb", "kafka", "redis")}
        self.wal = wal
        try:
            self.disk = _disk_of(state_dir() / "timescaledb")
        except OSError:
            self.disk = None
        self.consumers = dict(consumers)
        self.series: dict[str, list[tuple[float, float]]] = {}
        self._pg_children: set[int] = set()
        self._not_pg: set[int] = set()

    def _postgres_s(self, postmaster: int) -> float | None:
        root = _stat(postmaster)
        if root is None:
            return None
        total = _cpu_s(root, reaped_children=True)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            if pid in self._not_pg:
                continue
            fields = _stat(pid)
            if fields is None:
                continue
            if int(fields[1]) == postmaster:
                self._pg_children.add(pid)
                total += _cpu_s(fields, reaped_children=False)
            else:
                self._not_pg.add(pid)
        return total

    def sample(self) -> None:
        now = time.time()
        values: dict[str, float | None] = {}
        pg = self.services["timescaledb"]
        values["postgresql"] = self._postgres_s(pg) if pg else None
        for name in ("kafka", "redis"):
            pid = self.services[name]
            fields = _stat(pid) if pid else None
            values[name] = _cpu_s(fields, reaped_children=True) if fields else None
        for name, pid in self.consumers.items():
            fields = _stat(pid)
            if fields is not None and fields[0] != "Z":
                values[name] = _cpu_s(fields, reaped_children=False)
        t = os.times()
        values["harness"] = t.user + t.system
        values["machine_busy"], values["machine_iowait"] = _machine_cpu_s()
        values["disk_written_bytes"] = _disk_written_bytes(self.disk) if self.disk else None
        for name, value in values.items():
            if value is not None:
                self.series.setdefault(name, []).append((now, value))

    def add_final(self, name: str, at: float, cpu_s: float) -> None:
        """A consumer's exact total at its exit (from wait4), after its last sample."""
        self.series.setdefault(name, []).append((at, cpu_s))

    async def sample_wal(self) -> None:
        """The cluster's WAL position in bytes (all its databases: a shared cluster)."""
        if self.wal is None:
            return
        with contextlib.suppress(asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
            at = time.time()
            lsn = await self.wal.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
            self.series.setdefault("wal_bytes", []).append((at, float(lsn)))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            await self.sample_wal()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_INTERVAL_S)
        self.sample()
        await self.sample_wal()

    def between(self, name: str, t0: float, t1: float) -> float | None:
        """CPU seconds of ``name`` in [t0, t1], linear between samples."""
        points = self.series.get(name)
        if not points:
            return None
        return _at(points, t1) - _at(points, t0)


def _at(points: list[tuple[float, float]], t: float) -> float:
    if t <= points[0][0]:
        return points[0][1]
    for (ta, va), (tb, vb) in itertools.pairwise(points):
        if ta <= t <= tb:
            return va if tb == ta else va + (vb - va) * (t - ta) / (tb - ta)
    return points[-1][1]


# -- the consumer processes -----------------------------------------------------------------------


@dataclass
class ConsumerProcess:
    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    started_at: float
    exited_at: float | None = None
    exit_code: int | None = None
    cpu_s: float | None = None
    peak_rss_kb: int | None = None

    def reap(self) -> None:
        """Blocking: wait for the process and keep its rusage (user+system, max RSS)."""
        _, status, usage = os.wait4(self.popen.pid, 0)
        self.exited_at = time.time()
        self.exit_code = os.waitstatus_to_exitcode(status)
        self.popen.returncode = self.exit_code  # reaped here, so Popen must not wait for it again
        self.cpu_s = usage.ru_utime + usage.ru_stime
        self.peak_rss_kb = usage.ru_maxrss


_CONSUMED = re.compile(r"consumed ([\d,]+) messages in ([\d,]+) batches: ([\d,]+) rows written, ([\d,]+) dead-lettered")


def _parse_stdout(text: str) -> dict[str, int] | None:
    m = _CONSUMED.search(text)
    if m is None:
        return None
    consumed, batches, written, rejected = (int(g.replace(",", "")) for g in m.groups())
    return {"consumed": consumed, "batches": batches, "written": written, "dead_lettered": rejected}


_ASSIGNED = re.compile(r"^(\S+) \[info\s*\] partitions_assigned\s.*?partitions=\[([\d, ]*)\]", re.MULTILINE)


def _parse_assignments(text: str) -> list[tuple[float, list[int]]]:
    """(time, partitions) of each ``partitions_assigned`` line of a consumer's log
    (structlog's console format: the JSON renderer cannot be used, see consumer_env)."""
    out = []
    for m in _ASSIGNED.finditer(text):
        at = datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
        out.append((at, [int(p) for p in m.group(2).replace(" ", "").split(",") if p]))
    return out


_NOTABLE = re.compile(r"^\S+ \[(warning|error|critical)\s*\] (\S+)", re.MULTILINE)


def _notable_lines(text: str) -> dict[str, int]:
    """Count of each warning/error event in a consumer's log (fenced, seek_skipped, ...)."""
    out: dict[str, int] = {}
    for m in _NOTABLE.finditer(text):
        key = f"{m.group(1)}:{m.group(2)}"
        out[key] = out.get(key, 0) + 1
    return out


def consumer_env(config: Configuration) -> dict[str, str]:
    # Info is a few lines per process (start, each assignment, stop), with the
    # assignment times steady_rate needs. Console format: NEXANEST_LOG__JSON=true
    # fails at the first log line (structlog hands msgspec.json.encode keyword
    # arguments it does not take).
    return Run.env(
        config.settings,
        NEXANEST_KAFKA__PARTITIONS=str(config.settings.kafka.partitions),
        NEXANEST_LOG__LEVEL="info",
        NEXANEST_LOG__JSON="false",
    )


async def run_consumers(
    bench: Bench, config: Configuration, workdir: Path, timeout_s: float
) -> tuple[list[ConsumerProcess], CpuSampler]:
    """Start N ``nexanest consume --until-idle`` at once; wait for all (killing all on
    timeout, error or cancellation)."""
    env = consumer_env(config)
    argv = [str(NEXANEST), "consume", "--until-idle", f"{bench.plan.idle_s:g}"]
    procs: list[ConsumerProcess] = []
    try:
        for i in range(config.consumers):
            out, err = workdir / f"n{config.consumers}-{i}.out", workdir / f"n{config.consumers}-{i}.err"
            with out.open("wb") as fo, err.open("wb") as fe:
                # Popen returns at once; the waiting happens in threads (reap), where wait4 gives the rusage.
                popen = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=fo, stderr=fe)  # noqa: ASYNC220
            procs.append(ConsumerProcess(f"consumer{i}", popen, out, err, time.time()))
        wal = await asyncpg.connect(bench.admin_dsn)
        sampler = CpuSampler({p.name: p.popen.pid for p in procs}, wal)
        stop = asyncio.Event()
        sampling = asyncio.create_task(sampler.run(stop))
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(asyncio.to_thread(p.reap) for p in procs))
        finally:
            stop.set()
            await sampling
            await wal.close()
    except BaseException:
        for p in procs:
            if p.exit_code is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.popen.pid, 9)  # by its own pid; the reaping thread then returns
        raise
    for p in procs:
        assert p.exited_at is not None
        assert p.cpu_s is not None
        sampler.add_final(p.name, p.exited_at, p.cpu_s)
    return procs, sampler


# -- what the database holds ----------------------------------------------------------------------

_ROWS_SQL: Final = """
SELECT count(*) AS rows, count(DISTINCT source_seq) AS seqs, min(source_seq) AS min_seq,
       max(source_seq) AS max_seq, min(ingested_at) AS t_first, max(ingested_at) AS t_last,
       count(DISTINCT ingested_at) AS transactions
  FROM stock_prices WHERE source = $1
"""
_PARTITIONS_SQL: Final = """
SELECT kafka_partition, count(*) AS rows, min(ingested_at) AS first, max(ingested_at) AS last
  FROM stock_prices WHERE source = $1 GROUP BY kafka_partition ORDER BY kafka_partition
"""
_COUNT_BETWEEN_SQL: Final = (
    "SELECT count(*) FROM stock_prices WHERE source = $1 AND ingested_at >= $2 AND ingested_at < $3"
)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


async def database_view(bench: Bench, source: str) -> dict[str, Any]:
    conn = await asyncpg.connect(bench.admin_dsn)
    try:
        row = await conn.fetchrow(_ROWS_SQL, source)
        parts = await conn.fetch(_PARTITIONS_SQL, source)
        t_first, t_last = row["t_first"], row["t_last"]
        before_last = await conn.fetchval(_COUNT_BETWEEN_SQL, source, t_first, t_last) if t_first is not None else 0
    finally:
        await conn.close()
    return {
        "rows": row["rows"],
        "distinct_seqs": row["seqs"],
        "min_seq": row["min_seq"],
        "max_seq": row["max_seq"],
        "t_first": t_first.timestamp() if t_first else None,
        "t_last": t_last.timestamp() if t_last else None,
        "rows_before_last": before_last,
        "transactions": row["transactions"],
        "partitions": {
            r["kafka_partition"]: {"rows": r["rows"], "first": r["first"].timestamp(), "last": r["last"].timestamp()}
            for r in parts
        },
    }


async def steady_rate(
    bench: Bench, source: str, procs: list[ConsumerProcess], view: dict[str, Any]
) -> dict[str, Any] | None:
    """Rows/s while every consumer holds the partitions it ends the run with and
    none has written its last batch yet (None when the logs show no assignment;
    a null rate when that window is under a second). "Ends the run with": its
    last assignment before the last write, since a consumer that idles out
    afterwards makes the group hand its partitions around once more."""
    starts, ends = [], []
    for p in procs:
        assignments = [a for a in _parse_assignments(p.stderr.read_text(errors="replace")) if a[0] <= view["t_last"]]
        if not assignments:
            return None
        at, partitions = assignments[-1]
        mine = [view["partitions"][q]["last"] for q in partitions if q in view["partitions"]]
        if not mine:
            continue  # more consumers than partitions: this one holds none
        starts.append(at)
        ends.append(max(mine))
    if not starts:
        return None
    a, b = max(starts), min(ends)
    if b - a < 1.0:
        return {"ticks_per_s": None, "window_s": b - a, "from": a, "to": b}
    conn = await asyncpg.connect(bench.admin_dsn)
    try:
        rows = await conn.fetchval(_COUNT_BETWEEN_SQL, source, _utc(a), _utc(b))
    finally:
        await conn.close()
    return {"ticks_per_s": rows / (b - a), "window_s": b - a, "rows": rows, "from": a, "to": b}


# -- one configuration ----------------------------------------------------------------------------


async def measure(bench: Bench, plan: Plan, config: Configuration, workdir: Path) -> dict[str, Any]:
    n, ticks = config.consumers, bench.plan.ticks
    name = f"n{n}"
    timeout_s = 120 + ticks / 2_000
    log(f"{name}: {n} consumer process(es) on {config.topic} ...")
    procs, sampler = await run_consumers(bench, config, workdir, timeout_s)
    outputs = [_parse_stdout(p.stdout.read_text(errors="replace")) for p in procs]
    failed = [p for p in procs if p.exit_code != 0]
    if failed:
        tail = failed[0].stderr.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{name}: {len(failed)} consumer(s) exited non-zero ({failed[0].exit_code}): {tail}")
    written = sum(o["written"] for o in outputs if o)
    view = await database_view(bench, config.source)

    ok = True
    for what, expected, actual in (
        ("rows in stock_prices for the source", ticks, view["rows"]),
        ("distinct source_seq for the source", ticks, view["distinct_seqs"]),
        ("smallest source_seq", 0, view["min_seq"] if view["min_seq"] is not None else -1),
        ("largest source_seq", ticks - 1, view["max_seq"] if view["max_seq"] is not None else -1),
        ("rows dead-lettered (none expected)", 0, sum(o["dead_lettered"] for o in outputs if o)),
    ):
        try:
            bench.check(name, what, expected, actual)
        except CountMismatch as exc:
            log(f"{name}: CHECK FAILED: {exc}")
            ok = False
    # A batch written again after a rebalance (the unique rule keeps one copy) is
    # counted by each process that wrote it: more is wasted work, less a failure.
    rewritten = written - ticks
    if rewritten < 0:
        ok = False
        log(f"{name}: CHECK FAILED: the processes report {written:,} rows written, fewer than {ticks:,}")
    bench.checks.append(
        {
            "scenario": name,
            "what": "rows the processes report written (at least the ticks; more = written twice, one copy kept)",
            "expected": ticks,
            "actual": written,
            "ok": rewritten >= 0,
        }
    )
    verified: dict[str, Any] | None = None
    if plan.verify:
        report = await verify(config.settings, config.topic, config.feed_start_ns, config.to_ns, config.source)
        verified = {
            k: v
            for k, v in report.to_json().items()
            if k in ("ok", "missing", "duplicates", "unexpected", "kafka_ticks", "db_rows", "elapsed_s")
        }
        ok = ok and report.ok and report.kafka_ticks == ticks and report.db_rows == ticks
        bench.checks.append(
            {"scenario": name, "what": "nexanest verify: topic vs table", "expected": "ok", "actual": verified["ok"]}
            | {"ok": bool(verified["ok"])}
        )

    t_first, t_last = view["t_first"], view["t_last"]
    window = t_last - t_first
    tps = view["rows_before_last"] / window if window > 0 else None
    steady = await steady_rate(bench, config.source, procs, view)

    consumers_in_window = [sampler.between(p.name, t_first, t_last) for p in procs]
    in_window = {
        "consumers": sum(c or 0.0 for c in consumers_in_window),
        **{k: sampler.between(k, t_first, t_last) for k in ("postgresql", "kafka", "redis", "harness")},
    }
    busy = sampler.between("machine_busy", t_first, t_last)
    iowait = sampler.between("machine_iowait", t_first, t_last)
    wal_bytes = sampler.between("wal_bytes", t_first, t_last)
    disk_bytes = sampler.between("disk_written_bytes", t_first, t_last)
    rows_in_window = view["rows_before_last"]
    cores = os.cpu_count() or 1
    explained = sum(v for v in in_window.values() if v is not None)
    part_rows = [p["rows"] for p in view["partitions"].values()]
    logs = [_parse_assignments(p.stderr.read_text(errors="replace")) for p in procs]
    result = {
        "consumers": n,
        "ticks_per_s": tps,
        "per_consumer_ticks_per_s": tps / n if tps else None,
        "steady": steady,
        "window_s": window,
        "rows": view["rows"],
        "rows_ok": ok,
        "rows_reported_written": written,
        "rows_written_twice": max(rewritten, 0),
        "transactions": view["transactions"],
        "mean_batch_rows": view["rows"] / max(view["transactions"], 1),
        "first_write": _utc(t_first).isoformat(),
        "last_write": _utc(t_last).isoformat(),
        "cpu_s": {
            "consumers": [p.cpu_s for p in procs],  # whole life of each process (wait4)
            "consumers_in_window": consumers_in_window,
            "in_window": in_window,
            "machine_busy_in_window": busy,
            "other_in_window": None if busy is None else busy - explained,
        },
        "cores_in_window": {
            **{k: (v / window if v is not None else None) for k, v in in_window.items()},
            "machine_busy": busy / window if busy is not None else None,
            "machine_iowait": iowait / window if iowait is not None else None,
            "machine_available": cores,
        },
        # The whole cluster's WAL and the whole disk: other sessions' writes count too.
        "io_in_window": {
            "wal_mb_per_s": wal_bytes / window / 1e6 if wal_bytes is not None else None,
            "wal_bytes_per_tick": wal_bytes / rows_in_window if wal_bytes is not None and rows_in_window else None,
            "disk_write_mb_per_s": disk_bytes / window / 1e6 if disk_bytes is not None else None,
            "disk": sampler.disk,
        },
        # Per row of the same transactions ticks/s counts, so cores = ticks/s * CPU per tick.
        "cpu_us_per_tick": {
            k: (v / view["rows_before_last"] * 1e6 if v is not None and view["rows_before_last"] else None)
            for k, v in in_window.items()
        },
        "peak_rss_mb": [round((p.peak_rss_kb or 0) / 1024, 1) for p in procs],
        "processes": [
            {
                "exit_code": p.exit_code,
                "wall_s": (p.exited_at or 0) - p.started_at,
                "cpu_s": p.cpu_s,
                "peak_rss_mb": (p.peak_rss_kb or 0) / 1024,
                **(o or {}),
                # The last assignment before the last write, as steady_rate reads it.
                "final_partitions": next((a[1] for a in reversed(logs[i]) if a[0] <= t_last), None),
                "assignments": len(logs[i]),
                "exited_before_last_write": (p.exited_at or 0) < t_last,
                "warnings": _notable_lines(p.stderr.read_text(errors="replace")),
            }
            for i, (p, o) in enumerate(zip(procs, outputs, strict=True))
        ],
        "partition_rows": {"min": min(part_rows, default=0), "max": max(part_rows, default=0)},
        "verify": verified,
        "topic": config.topic,
        "source": config.source,
        "group": config.settings.kafka.consumer_group,
    }
    shown = f"{tps:,.0f}" if tps else "n/a"
    log(f"{name}: {shown} ticks/s over {window:.1f} s, rows ok: {ok}, machine busy {result['cores_in_window']}")
    return result


# -- the run --------------------------------------------------------------------------------------


def model(runs: list[dict[str, Any]], db_ceiling: dict[str, Any] | None) -> dict[str, Any]:
    """The figures the model in the docstring uses, from this run."""
    ok = [r for r in runs if r.get("ticks_per_s")]
    if not ok:
        return {}
    one = next((r for r in ok if r["consumers"] == 1), ok[0])
    best = max(ok, key=lambda r: r["ticks_per_s"])
    us = one["cpu_us_per_tick"]
    per_tick = sum(us[k] or 0.0 for k in ("consumers", "postgresql", "kafka", "redis"))
    cores = os.cpu_count() or 1
    ceiling = (db_ceiling or {}).get("copy_records", {}).get("ticks_per_s")
    pg_us = us.get("postgresql")
    return {
        "per_consumer_ticks_per_s": one["ticks_per_s"] / one["consumers"],
        "consumer_cores_at_1": one["cores_in_window"]["consumers"],
        "cpu_us_per_tick_at_1": us,
        "pipeline_cpu_us_per_tick_at_1": per_tick,
        "predicted_box_saturation_ticks_per_s": cores / (per_tick / 1e6) if per_tick else None,
        "best_measured": {"consumers": best["consumers"], "ticks_per_s": best["ticks_per_s"]},
        "db_ceiling_copy_ticks_per_s": ceiling,
        "db_ceiling_preencoded_ticks_per_s": (db_ceiling or {}).get("copy_preencoded", {}).get("ticks_per_s"),
        "postgresql_ticks_per_s_per_core": 1e6 / pg_us if pg_us else None,
        "partitions_bound": "consumers beyond the partition count get no partition and idle",
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = Plan.from_args(args)
    # SIGTERM (like Ctrl-C, which asyncio.run turns into a cancellation) cancels the
    # run, so the clean-up below still runs and the consumers are killed.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    base = load_settings()
    bench = Bench(base, "o", plan=plan)
    started_at = datetime.now(UTC)
    started = time.monotonic()
    log(
        f"run {bench.run_id} ({plan.mode}): {plan.ticks:,} ticks, {plan.symbols} symbols, "
        f"{plan.partitions} partitions, consumers {','.join(map(str, plan.consumers))}; "
        f"interrupted? `python -m benchmarks.harness.cleanup {bench.run_id}`"
    )
    machine = await host_machine(base)
    services_before = await service_identities(base)
    # Everything into a scratch database (dropped by the clean-up), not the user's.
    bench.base, migrations = await prepare_database(base, bench.run_id)
    configs = configurations(bench, plan)
    runs: list[dict[str, Any]] = []
    published: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    db_ceiling: dict[str, Any] | None = None
    try:
        for config in configs:
            log(f"publishing {plan.ticks:,} ticks to {config.topic} ...")
            published.append(await publish(bench, config))
            log(f"  {published[-1]['ticks_per_s']:,.0f} ticks/s")
        with tempfile.TemporaryDirectory(prefix=f"scale-out-{bench.run_id}-") as tmp:
            for config in configs:
                try:
                    runs.append(await measure(bench, plan, config, Path(tmp)))
                except (RuntimeError, TimeoutError, OSError, asyncpg.PostgresError) as exc:
                    errors[f"n{config.consumers}"] = f"{type(exc).__name__}: {exc}"
                    log(f"n{config.consumers} FAILED: {errors[f'n{config.consumers}']}")
                    runs.append({"consumers": config.consumers, "ticks_per_s": None, "rows_ok": False})
        if plan.db_ceiling:
            log("db_ceiling (one client COPYing the same rows into an empty copy of stock_prices) ...")
            try:
                db_ceiling = await measure_db_ceiling(bench, configs[0].feed)
                log(f"  {db_ceiling['copy_records']['ticks_per_s']:,.0f} ticks/s")
            except (CountMismatch, RuntimeError, OSError, asyncpg.PostgresError) as exc:
                errors["db_ceiling"] = f"{type(exc).__name__}: {exc}"
    finally:
        log("cleaning up")
        cleanup = await clean_up(base, bench.run_id)
    services_after = await service_identities(base)
    by_n = {r["consumers"]: r.get("ticks_per_s") for r in runs}
    steady = {r["consumers"]: (r.get("steady") or {}).get("ticks_per_s") for r in runs}
    return {
        "benchmark": "scale_out",
        "run_id": bench.run_id,
        "command": args.command_line,
        "started_at": started_at.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1),
        "mode": plan.mode,
        "parameters": {
            "ticks": plan.ticks,
            "symbols": plan.symbols,
            "seed": plan.seed,
            "partitions": plan.partitions,
            "consumers": list(plan.consumers),
            "idle_seconds": plan.idle_s,
            "batch_max_rows": base.batch.max_rows,
            "batch_max_wait_ms": base.batch.max_wait_ms,
            "rollups": base.consumer.rollups,
            "verify": plan.verify,
        },
        "machine": {**machine, "load_avg_at_end": os.getloadavg()},
        "services_restarted_during_run": restarted(services_before, services_after),
        "scratch_database_migrations": migrations,
        "published": published,
        "runs": runs,
        "ratios": {
            "2_vs_1": _ratio(by_n.get(2), by_n.get(1)),
            "4_vs_1": _ratio(by_n.get(4), by_n.get(1)),
            "steady_2_vs_1": _ratio(steady.get(2), steady.get(1)),
            "steady_4_vs_1": _ratio(steady.get(4), steady.get(1)),
        },
        "db_ceiling": db_ceiling,
        "model": model(runs, db_ceiling),
        "checks": bench.checks,
        "errors": errors,
        "cleanup": cleanup,
    }


# -- RESULTS.md -----------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    m, p = result["machine"], result["parameters"]
    mo = result.get("model") or {}
    lines = [
        f"## {result['started_at']} · scale-out · {result['mode']} · run `{result['run_id']}`",
        "",
        f"Command: `{result['command']}` ({result['duration_s']:.0f} s)",
        "",
        report.machine_line(m, shared=True),
        "",
        f"Feed: {p['ticks']:,} ticks per configuration, {p['symbols']} symbols, seed {p['seed']}, "
        f"{p['partitions']} partitions, published before the consumers start (a backlog: the consumers "
        f"run flat out); batches of up to {p['batch_max_rows']:,} rows; rollups `{p['rollups']}`; "
        f"`--until-idle {p['idle_seconds']:g}`. ticks/s = rows of the transactions that started before the "
        "last one ÷ (start of the last − start of the first), on the database's clock (`ingested_at`); "
        "steady = the same while every consumer holds its final partitions and none has finished. "
        "Cores = CPU seconds in that window ÷ its length.",
        "",
        "| consumers | ticks/s | vs 1 | per consumer | steady ticks/s | steady vs 1 | window s | "
        "batches | rows per partition | peak RSS MB | consumer CPU s (life) | rows checked |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    one = next((r.get("ticks_per_s") for r in result["runs"] if r["consumers"] == 1), None)
    one_steady = next(((r.get("steady") or {}).get("ticks_per_s") for r in result["runs"] if r["consumers"] == 1), None)
    ok_runs = [r for r in result["runs"] if r.get("ticks_per_s")]
    for r in result["runs"]:
        if not r.get("ticks_per_s"):
            lines.append(f"| {r['consumers']} | failed | | | | | | | | | | **no** |")
            continue
        steady = (r.get("steady") or {}).get("ticks_per_s")
        verified = " + verify" if r.get("verify") else ""
        pr = r["partition_rows"]
        lines.append(
            f"| {r['consumers']} | {_n(r['ticks_per_s'])} | {_n(_ratio(r['ticks_per_s'], one), 2)} | "
            f"{_n(r['per_consumer_ticks_per_s'])} | {_n(steady)} | {_n(_ratio(steady, one_steady), 2)} | "
            f"{_n(r['window_s'], 1)} | {r['transactions']} | {pr['min']:,}-{pr['max']:,} | "
            f"{', '.join(f'{x:.0f}' for x in r['peak_rss_mb'])} | "
            f"{', '.join(f'{x:.1f}' for x in r['cpu_s']['consumers'])} | "
            f"{r['rows']:,} {'yes' if r['rows_ok'] else '**no**'}{verified} |"
        )
    lines += [
        "",
        "Where the time goes, in the same window (cores = CPU seconds ÷ window; WAL is the whole cluster's, "
        "the disk the whole device's):",
        "",
        "| consumers | consumer cores | PostgreSQL cores | Kafka cores | Redis cores | machine busy | iowait | "
        "other sessions | WAL MB/s | WAL bytes per tick | disk writes MB/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in ok_runs:
        c, io = r["cores_in_window"], r.get("io_in_window") or {}
        other = r["cpu_s"]["other_in_window"]
        lines.append(
            f"| {r['consumers']} | {_n(c['consumers'], 2)} | {_n(c['postgresql'], 2)} | {_n(c['kafka'], 2)} | "
            f"{_n(c['redis'], 2)} | {_n(c['machine_busy'], 2)} of {c['machine_available']} | "
            f"{_n(c.get('machine_iowait'), 2)} | {_n(None if other is None else other / r['window_s'], 2)} | "
            f"{_n(io.get('wal_mb_per_s'), 1)} | {_n(io.get('wal_bytes_per_tick'))} | "
            f"{_n(io.get('disk_write_mb_per_s'), 1)} |"
        )
    twice = [r for r in result["runs"] if r.get("rows_written_twice")]
    notes = []
    for r in twice:
        warned: dict[str, int] = {}
        for proc in r["processes"]:
            for k, v in proc["warnings"].items():
                warned[k] = warned.get(k, 0) + v
        shown = ", ".join(f"{k} {v}" for k, v in sorted(warned.items())) or "none"
        notes.append(
            f"N={r['consumers']}: the processes report {r['rows_reported_written']:,} rows written, "
            f"{r['rows_written_twice']:,} more than the ticks (the table holds each tick once; "
            f"warnings logged: {shown})"
        )
    if notes:
        lines += ["", "Written twice during rebalances: " + "; ".join(notes) + "."]
    ra = result["ratios"]
    lines += [
        "",
        f"Ratios: 2 vs 1 **{_n(ra['2_vs_1'], 2)}**, 4 vs 1 **{_n(ra['4_vs_1'], 2)}** "
        f"(steady: {_n(ra['steady_2_vs_1'], 2)} and {_n(ra['steady_4_vs_1'], 2)}).",
        "",
        "CPU per tick (µs, CPU seconds in the window ÷ rows):",
        "",
        "| N | consumer processes | PostgreSQL | Kafka | Redis | this harness |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in ok_runs:
        if r.get("ticks_per_s"):
            u = r["cpu_us_per_tick"]
            lines.append(
                f"| {r['consumers']} | {_n(u['consumers'], 1)} | {_n(u['postgresql'], 1)} | {_n(u['kafka'], 1)} | "
                f"{_n(u['redis'], 1)} | {_n(u['harness'], 1)} |"
            )
    if result.get("db_ceiling"):
        lines += [
            "",
            f"Database ceiling in this run (the suite's `db_ceiling`: one client, binary COPY of the same rows "
            f"into an empty copy of `stock_prices`, "
            f"{result['db_ceiling']['copy_records']['batch_rows']:,}-row transactions, only the COPYs timed): "
            f"{_n(mo.get('db_ceiling_copy_ticks_per_s'))} ticks/s with asyncpg encoding, "
            f"{_n(mo.get('db_ceiling_preencoded_ticks_per_s'))} ticks/s from pre-encoded buffers.",
        ]
    if mo:
        lines += [
            "",
            f"Model inputs from this run: one consumer {_n(mo['per_consumer_ticks_per_s'])} ticks/s at "
            f"{_n(mo['consumer_cores_at_1'], 2)} core; CPU per tick at N=1 "
            f"{_n(mo['pipeline_cpu_us_per_tick_at_1'], 1)} µs "
            f"over consumer, PostgreSQL, Kafka and Redis, so {m['cores']} cores saturate at "
            f"~{_n(mo['predicted_box_saturation_ticks_per_s'])} ticks/s; PostgreSQL "
            f"~{_n(mo['postgresql_ticks_per_s_per_core'])} ticks/s per core of its CPU.",
        ]
    lines += report.restarted_warning(result)
    if result["errors"]:
        lines += ["", "**Errors:**", ""] + [f"- {k}: {v}" for k, v in result["errors"].items()]
    lines += ["", "<!-- scale-out: reading -->", ""]
    return "\n".join(lines) + "\n"


# -- entry point ----------------------------------------------------------------------------------


def main() -> int:
    parser = report.parser(__doc__, "200k ticks, no verify and no db_ceiling (under 90 s)")
    parser.add_argument("--ticks", type=int, default=0, help="ticks per configuration (1,000,000; quick 200,000)")
    parser.add_argument("--consumers", default="1,2,4", help="consumer process counts, comma-separated (1,2,4)")
    parser.add_argument("--partitions", type=int, default=12, help="partitions of each topic (12)")
    parser.add_argument("--symbols", type=int, default=300, help="symbols in the feed (300)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic feed (1)")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=5.0,
        help="--until-idle of each consumer (5): long enough that none leaves the group while others still work",
    )
    for flag, what in (
        ("--verify", "compare topic and table with nexanest verify"),
        ("--db-ceiling", "measure the suite's db_ceiling for the model"),
    ):
        parser.add_argument(
            flag, action=argparse.BooleanOptionalAction, default=None, help=f"{what} (default: on, off with --quick)"
        )
    args = parser.parse_args()
    configure_logging(LogSettings(level="warning"))
    args.command_line = report.command_line(MODULE)
    result = asyncio.run(run(args))
    report.save("scale_out", result, markdown(result), args)
    failed = bool(result["errors"]) or not all(r.get("rows_ok") for r in result["runs"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
