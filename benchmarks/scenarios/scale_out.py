"""Scale-out (issue 5): 1, 2 and 4 consumer processes in one group on a 12-partition topic.

    python -m benchmarks.scenarios.scale_out [--quick] [--consumers 1,2,4] [--partitions 12]

Per N, the same feed in a topic, source and hour of tick time of its own; N
``nexanest consume`` start at once. ticks/s is on the database's clock (a row's
``ingested_at`` is its transaction's start); steady is the same while every
consumer holds its final partitions (its last ``partitions_assigned`` line).
CPU per process from ``wait4``, and per component in the window from ``/proc``
every 0.25 s (the consumers, the cluster's postmaster and backends live and
reaped, Kafka, Redis, this harness, the machine), with WAL and disk bytes.
Without ``--quick`` also ``nexanest verify`` and the suite's ``db_ceiling``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.harness import report
from benchmarks.harness.report import cells, n, ratio, table
from benchmarks.harness.run import Run, main
from benchmarks.harness.sampling import CLK_TCK, Proc, Processes, consume_argv, cpu_s, pid_of, state_dir
from benchmarks.scenarios.limits import db_ceiling
from nexanest.ops.verify import verify

HOUR_NS = 3600 * 10**9
COMPONENTS = ("consumers", "postgresql", "kafka", "redis", "harness")
_ASSIGNED = re.compile(r"^(\S+) \[info\s*\] partitions_assigned\s.*?partitions=\[([\d, ]*)\]", re.MULTILINE)
_ROWS = (
    "SELECT count(*) AS rows, min(ingested_at) AS t_first, max(ingested_at) AS t_last, count(DISTINCT ingested_at)"
    " AS transactions FROM stock_prices WHERE source = $1"
)
_PARTITIONS = "SELECT kafka_partition, count(*), max(ingested_at) FROM stock_prices WHERE source = $1 GROUP BY 1"
_BETWEEN = "SELECT count(*) FROM stock_prices WHERE source = $1 AND ingested_at >= $2 AND ingested_at < $3"
log = report.log("scale-out")


def _postgres_s(postmaster: int, others: set[str]) -> float | None:
    """A cluster is a postmaster and the backends it forks; a backend that exits
    moves its time to the postmaster's reaped children, so the sum stays cumulative.
    ``others``: pids already seen to be no backend (not read again)."""
    total = cpu_s(postmaster)
    for entry in os.listdir("/proc"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError):
            if not entry.isdigit() or entry in others:
                continue
            if Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(postmaster):
                total = (total or 0.0) + (cpu_s(int(entry), reaped_children=False) or 0.0)
            else:
                others.add(entry)
    return total


def _device_written(path: Path) -> float | None:
    """Bytes written to the block device holding ``path`` (/proc/diskstats, 512-byte sectors)."""
    dev = os.stat(path).st_dev
    for parts in (ln.split() for ln in Path("/proc/diskstats").read_text().splitlines()):
        if (int(parts[0]), int(parts[1])) == (os.major(dev), os.minor(dev)):
            return int(parts[9]) * 512.0
    return None


def _machine() -> list[int]:
    """The first eight fields of /proc/stat: user nice system idle iowait irq softirq steal, in clock ticks."""
    return [int(v) for v in Path("/proc/stat").read_text().split()[1:9]]


class CpuSampler:
    """Cumulative CPU seconds (and WAL and disk bytes) of each component, with wall-clock times."""

    def __init__(self, consumers: list[int], wal: asyncpg.Connection) -> None:
        self.consumers, self.wal = consumers, wal
        self.services = {name: pid_of(name) for name in ("timescaledb", "kafka", "redis")}
        self.series: dict[str, list[tuple[float, float]]] = {}
        self._others: set[str] = set()

    async def sample(self) -> None:
        pg = self.services["timescaledb"]
        busy = _machine()
        values = {
            "postgresql": _postgres_s(pg, self._others) if pg else None,
            **{k: cpu_s(pid) if (pid := self.services[k]) else None for k in ("kafka", "redis")},
            **{f"consumer{i}": cpu_s(pid, reaped_children=False) for i, pid in enumerate(self.consumers)},
            "harness": sum(os.times()[:2]),
            "machine_busy": (sum(busy) - busy[3] - busy[4]) / CLK_TCK,
            "machine_iowait": busy[4] / CLK_TCK,
            "disk_written_bytes": _device_written(state_dir() / "timescaledb"),
            "wal_bytes": float(await self.wal.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")),
        }
        now = time.time()
        for name, value in values.items():
            if value is not None:
                self.series.setdefault(name, []).append((now, value))

    async def run(self, done: asyncio.Future[Any]) -> None:
        while not done.done():
            await self.sample()
            await asyncio.wait({done}, timeout=0.25)
        await self.sample()

    def between(self, name: str, t0: float, t1: float) -> float | None:
        """The growth of ``name`` in [t0, t1], linear between samples."""
        points = self.series.get(name)
        if not points:
            return None

        def at(t: float) -> float:
            for (ta, va), (tb, vb) in itertools.pairwise(points):
                if ta <= t <= tb:
                    return va if tb == ta else va + (vb - va) * (t - ta) / (tb - ta)
            return points[0][1] if t < points[0][0] else points[-1][1]

        return at(t1) - at(t0)


def steady_window(procs: list[Proc], last_by_partition: dict[int, float], t_last: float) -> tuple[float, float] | None:
    """While every consumer holds the partitions it ends with (its last assignment
    before the last write) and none has written its last batch yet."""
    starts, ends = [], []
    for p in procs:
        stamp = datetime.fromisoformat
        assigned = [(stamp(m[1].replace("Z", "+00:00")).timestamp(), m[2]) for m in _ASSIGNED.finditer(p.stderr)]
        final = [(at, parts) for at, parts in assigned if at <= t_last]
        if not final:
            return None
        held = [int(q) for q in final[-1][1].replace(" ", "").split(",") if q]
        mine = [last_by_partition[q] for q in held if q in last_by_partition]
        if mine:  # more consumers than partitions: this one holds none
            starts.append(final[-1][0])
            ends.append(max(mine))
    return (max(starts), min(ends)) if starts else None


async def configuration(run: Run, args: argparse.Namespace, k: int, consumers: int) -> dict[str, Any]:
    """One N: publish its feed, run its consumers, measure."""
    name = f"n{consumers}" if args.consumers.count(consumers) == 1 else f"n{consumers}-{k}"
    start_ns = (time.time_ns() // HOUR_NS - 2 - k) * HOUR_NS + 600 * 10**9  # ten minutes into an hour of its own
    settings, source = await run.backlog(name, args.ticks, start_ns, partitions=args.partitions)
    log(f"{name}: {consumers} consumer process(es) on {settings.kafka.ticks_topic} ...")
    # Info: a few lines per process, with the assignment times steady_window needs (console format).
    env = run.env(settings, NEXANEST_LOG__LEVEL="info", NEXANEST_LOG__JSON="false")
    group = Processes([consume_argv(args.idle_seconds)] * consumers, env, interval_s=0.25)
    conn = await asyncpg.connect(run.admin_dsn)
    try:
        sampler = CpuSampler([p.popen.pid for p in group.procs], conn)
        waiting = asyncio.ensure_future(group.wait(120 + args.ticks / 2_000))
        await sampler.run(waiting)
        procs = await waiting
        for i, p in enumerate(procs):  # the exact totals at exit (wait4), after the last samples
            sampler.series.setdefault(f"consumer{i}", []).append((p.exited_at or 0.0, p.cpu_s))
        for p in procs:
            p.check_exit()
        view = await conn.fetchrow(_ROWS, source)
        last_by_partition = {r[0]: r[2].timestamp() for r in await conn.fetch(_PARTITIONS, source)}
        part_rows = [r[1] for r in await conn.fetch(_PARTITIONS, source)]
        t0, t1 = view["t_first"], view["t_last"]
        in_window = await conn.fetchval(_BETWEEN, source, t0, t1)
        steady = steady_window(procs, last_by_partition, t1.timestamp())
        window_ = [datetime.fromtimestamp(t, UTC) for t in steady or (0, 0)]
        steady_rows = int(await conn.fetchval(_BETWEEN, source, *window_))
    finally:
        await conn.close()
    outputs = [p.consumed() for p in procs]
    written = sum(o["written"] for o in outputs)
    ok = await run.stored_once(name, source, args.ticks)
    ok = run.check(name, "rows dead-lettered", 0, sum(o["dead_lettered"] for o in outputs), strict=False) and ok
    # A batch written again after a rebalance (the unique rule keeps one copy) counts for each writer.
    ok = run.check(name, "rows reported written, at least the ticks", True, written >= args.ticks, strict=False) and ok
    verified = None
    if not args.quick:
        end_ns = start_ns + args.ticks * 10**4 + 1  # ticks 10 µs apart (feed_config)
        report_ = await verify(settings, settings.kafka.ticks_topic, start_ns, end_ns, source)
        verified = report_.ok and report_.kafka_ticks == report_.db_rows == args.ticks
        ok = run.check(name, "nexanest verify: topic vs table", True, verified, strict=False) and ok

    if view["transactions"] < 2:
        raise RuntimeError(f"{name}: {view['transactions']} batch(es) give no window: use more --ticks")
    t0s, t1s = t0.timestamp(), t1.timestamp()
    window, cores = t1s - t0s, os.cpu_count() or 1
    cpu = {c: sampler.between(c, t0s, t1s) for c in COMPONENTS[1:]}
    cpu["consumers"] = sum(sampler.between(f"consumer{i}", t0s, t1s) or 0.0 for i in range(consumers))
    totals = ("machine_busy", "machine_iowait", "wal_bytes", "disk_written_bytes")
    busy, iowait, wal, disk = (sampler.between(x, t0s, t1s) for x in totals)
    tps = in_window / window if window > 0 else None
    steady_tps = steady_rows / (steady[1] - steady[0]) if steady and steady[1] - steady[0] >= 1.0 else None

    def per(value: float | None, by: float) -> float | None:
        return None if value is None else value / by

    result = {"consumers": consumers, "ticks_per_s": tps, "per_consumer_ticks_per_s": tps and tps / consumers}
    result |= {"steady_ticks_per_s": steady_tps, "window_s": window, "transactions": view["transactions"]}
    result |= {"rows": view["rows"], "rows_ok": ok, "verify": verified, "rows_reported_written": written}
    result |= {"partition_rows": f"{min(part_rows):,}-{max(part_rows):,}"}
    result |= {"peak_rss_mb": ", ".join(f"{p.peak_rss_kb / 1024:.0f}" for p in procs)}
    result |= {"cpu_s_life": ", ".join(f"{p.cpu_s:.1f}" for p in procs)}
    result |= {f"{c}_cores": per(v, window) for c, v in cpu.items()}
    result |= {f"{c}_us_per_tick": per(v, in_window / 1e6) for c, v in cpu.items()}
    result |= {"machine_busy": None if busy is None else f"{busy / window:.2f} of {cores}"}
    result |= {"machine_iowait_cores": per(iowait, window), "wal_mb_per_s": per(wal, window * 1e6)}
    result |= {"other_cores": per(busy and busy - sum(v or 0.0 for v in cpu.values()), window)}
    result |= {"wal_bytes_per_tick": per(wal, in_window), "disk_write_mb_per_s": per(disk, window * 1e6)}
    log(f"{name}: {n(tps)} ticks/s over {window:.1f} s, rows ok: {ok}, machine busy {result['machine_busy']}")
    return result


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    runs = [await configuration(run, args, k, c) for k, c in enumerate(args.consumers)]
    ceiling = None
    if not args.quick:
        log("db_ceiling (one client COPYing the same rows into an empty copy of stock_prices) ...")
        ceiling = await db_ceiling(run, run.feed(args.ticks, run.source("ceiling"), time.time_ns() - HOUR_NS))
    one = next((r for r in runs if r["consumers"] == 1), runs[0])
    for r in runs:
        r["vs_1"], r["steady_vs_1"] = (ratio(r[k], one[k]) for k in ("ticks_per_s", "steady_ticks_per_s"))
        r["checked"] = f"{r['rows']:,} {'yes' if r['rows_ok'] else '**no**'}{' + verify' if r['verify'] else ''}"
    us = {c: one[f"{c}_us_per_tick"] or 0.0 for c in COMPONENTS[:4]}
    model = {"per_consumer_ticks_per_s": one["per_consumer_ticks_per_s"], "consumer_cores_at_1": one["consumers_cores"]}
    model |= {"pipeline_cpu_us_per_tick_at_1": sum(us.values())}
    model |= {"postgresql_ticks_per_s_per_core": ratio(1e6, us["postgresql"])}
    model |= {"predicted_box_saturation_ticks_per_s": ratio((os.cpu_count() or 1) * 1e6, sum(us.values()))}
    model |= {f"db_ceiling_{path}_ticks_per_s": figures["ticks_per_s"] for path, figures in (ceiling or {}).items()}
    model |= {"consumer_us_per_tick_at_1": us["consumers"], "wal_bytes_per_tick_at_1": one["wal_bytes_per_tick"]}
    model["many_machines"] = many_machines(one, us, args.partitions, {r["consumers"]: r for r in runs})
    by_n = {r["consumers"]: r for r in runs}
    ratios = {f"{k}{c}_vs_1": by_n.get(c, {}).get(f"{k}vs_1") for k in ("", "steady_") for c in (2, 4)}
    parameters = {"batch_max_rows": run.base.batch.max_rows, "rollups": run.base.consumer.rollups}
    return {"parameters": parameters, "runs": runs, "ratios": ratios, "db_ceiling": ceiling, "model": model}


def many_machines(
    one: dict[str, Any], us: dict[str, float], partitions: int, measured: dict[int, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The scale-out model from this run's costs: N consumers, each on a machine of its own, take
    min(N, P) x the rate of one (at most P partitions have work) as long as the one database node keeps
    up; what that node then needs is the rate x PostgreSQL's CPU and WAL per tick, measured at N=1."""
    r_c, wal = one["per_consumer_ticks_per_s"] or 0.0, one["wal_bytes_per_tick"]
    out = []
    for k in sorted({1, 2, 4, 8, partitions, 2 * partitions}):
        rate = min(k, partitions) * r_c
        row = {"consumers": k, "ticks_per_s": rate, "postgresql_cores": rate * us["postgresql"] / 1e6}
        row |= {"wal_mb_per_s": None if wal is None else rate * wal / 1e6}
        row |= {"consumer_cores": rate * us["consumers"] / 1e6}
        out.append(row | {"measured_here": (measured.get(k) or {}).get("ticks_per_s")})
    return out


RUNS = (
    "consumers|ticks/s|vs 1|per consumer|steady ticks/s|steady vs 1|window s|batches|rows per partition|peak RSS MB|"
    "consumer CPU s (life)|rows checked"
)
CORES = (
    "consumers|consumer cores|PostgreSQL cores|Kafka cores|Redis cores|machine busy|iowait|other sessions|WAL MB/s|"
    "WAL bytes per tick|disk writes MB/s"
)
CORE_CELLS = (
    "consumers consumers_cores:2 postgresql_cores:2 kafka_cores:2 redis_cores:2 machine_busy machine_iowait_cores:2 "
    "other_cores:2 wal_mb_per_s:1 wal_bytes_per_tick:0 disk_write_mb_per_s:1"
)
RUN_CELLS = (
    "consumers ticks_per_s:0 vs_1:2 per_consumer_ticks_per_s:0 steady_ticks_per_s:0 steady_vs_1:2 window_s:1 "
    "transactions partition_rows peak_rss_mb cpu_s_life checked"
)
MODEL_CELLS = "consumers ticks_per_s:0 consumer_cores:1 postgresql_cores:1 wal_mb_per_s:1 measured_here:0"
US_CELLS = "consumers " + " ".join(f"{c}_us_per_tick:1" for c in COMPONENTS)


def markdown(result: dict[str, Any]) -> str:
    p, ra, mo, runs = result["parameters"], result["ratios"], result["model"], result["runs"]
    lines = [
        *report.heading(result, f"scale-out · {result['mode']}"),
        f"Feed: {p['ticks']:,} ticks per configuration, {p['symbols']} symbols, seed {p['seed']}, "
        f"{p['partitions']} partitions, published before the consumers start (a backlog: the consumers run flat "
        f"out); batches of up to {p['batch_max_rows']:,} rows; rollups `{p['rollups']}`; `--until-idle "
        f"{p['idle_seconds']:g}`. ticks/s = rows of the transactions that started before the last one ÷ (start of "
        "the last − start of the first), on the database's clock (`ingested_at`); steady = the same while every "
        "consumer holds its final partitions and none has finished. Cores = CPU seconds in that window ÷ its length.",
        "",
        *table(RUNS, (cells(r, RUN_CELLS) for r in runs), "r" * 11 + "l"),
        "",
        "Where the time goes, in the same window (cores = CPU seconds ÷ window; WAL is the whole cluster's, "
        "the disk the whole device's):",
        "",
        *table(CORES, (cells(r, CORE_CELLS) for r in runs), "r" * 11),
        "",
        f"Ratios: 2 vs 1 **{n(ra['2_vs_1'], 2)}**, 4 vs 1 **{n(ra['4_vs_1'], 2)}** "
        f"(steady: {n(ra['steady_2_vs_1'], 2)} and {n(ra['steady_4_vs_1'], 2)}).",
        "",
        "CPU per tick (µs, CPU seconds in the window ÷ rows):",
        "",
        *table("N|consumer processes|PostgreSQL|Kafka|Redis|this harness", (cells(r, US_CELLS) for r in runs), "r" * 6),
    ]
    if ceiling := result["db_ceiling"]:
        lines.append(
            f"\nDatabase ceiling in this run (the suite's `db_ceiling`: one client, binary COPY of the same rows into "
            f"an empty copy of `stock_prices`, {ceiling['copy_records']['batch_rows']:,}-row transactions, only the "
            f"COPYs timed): {n(mo['db_ceiling_copy_records_ticks_per_s'])} ticks/s with asyncpg encoding, "
            f"{n(mo['db_ceiling_copy_preencoded_ticks_per_s'])} ticks/s from pre-encoded buffers."
        )
    lines.append(
        f"\nModel inputs from this run: one consumer {n(mo['per_consumer_ticks_per_s'])} ticks/s at "
        f"{n(mo['consumer_cores_at_1'], 2)} core; CPU per tick at N=1 {n(mo['pipeline_cpu_us_per_tick_at_1'], 1)} µs "
        f"over consumer, PostgreSQL, Kafka and Redis, so {result['machine']['cores']} cores saturate at "
        f"~{n(mo['predicted_box_saturation_ticks_per_s'])} ticks/s; PostgreSQL "
        f"~{n(mo['postgresql_ticks_per_s_per_core'])} ticks/s per core of its CPU."
    )
    if model_rows := mo.get("many_machines"):
        lines += [
            "",
            f"**Model for many machines** (computed from this run's N=1 costs: one consumer "
            f"{n(mo['per_consumer_ticks_per_s'])} ticks/s, {n(mo['consumer_us_per_tick_at_1'], 1)} µs of consumer CPU "
            f"and {n(mo['postgresql_ticks_per_s_per_core'] and 1e6 / mo['postgresql_ticks_per_s_per_core'], 1)} µs of "
            f"PostgreSQL CPU and {n(mo['wal_bytes_per_tick_at_1'])} bytes of WAL per tick). Consumers of one group "
            f"share the {p['partitions']} partitions, so at most {p['partitions']} work: with each on a machine of its "
            f"own the group takes about min(N, {p['partitions']}) × one consumer's rate, as long as the one "
            "TimescaleDB node has the cores and WAL bandwidth below; beyond that, a bigger node, then symbols "
            "(partitions) spread over several nodes, one consumer group and sink each (TimescaleDB 2.13 was the last "
            "with multi-node). The last column is what this machine measured, all processes sharing its cores:",
            "",
            *table(
                "consumers|ticks/s|consumer cores|PostgreSQL cores needed|WAL MB/s needed|measured here",
                (cells(r, MODEL_CELLS) for r in model_rows),
                "r" * 6,
            ),
        ]
    return "\n".join([*lines, *report.closing(result), "", "<!-- scale-out: reading -->", ""]) + "\n"


OPTIONS = {
    "ticks": (1_000_000, 200_000, "ticks per configuration"),
    "consumers": ([1, 2, 4], None, "consumer processes in each configuration"),
    "partitions": (12, None, "partitions of each topic"),
    "idle_seconds": (5.0, None, "--until-idle: none leaves early"),
}
QUICK = "200,000 ticks, no verify and no db_ceiling"

if __name__ == "__main__":
    raise SystemExit(main(__name__))
