"""What synchronous replication costs (issue 16, part 2): the same ingest against
the Patroni cluster of ``deploy/local/timescale-ha.sh`` in asynchronous and in
synchronous mode, side by side in one run.

    flock /tmp/nexanest-bench.lock .venv/bin/python -m benchmarks.scenarios.sync_replication \\
        [--ticks 200000] [--rounds 2]

The cluster must run (``make timescale-ha-up``); the run's scratch database is
made on its primary and reached through the multi-host DSN. Per round and mode
(alternating: async, sync, sync, async, ... so drift of a shared machine hits
both alike), a backlog of ``--ticks`` synthetic ticks is published to a topic of
its own first, then one real ``nexanest consume`` drains it. ticks/s is on the
database's clock (rows over the span of their ``ingested_at``, each a
transaction's start), and every run must have written each tick once. The mode
is switched with ``timescale-ha.sh sync on|off`` (Patroni's ``synchronous_mode``:
a commit returns once the standby has flushed its WAL). Then what a commit itself
costs in each mode: one-row transactions, in alternating blocks (median, p90).
The cluster is left in asynchronous mode.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import subprocess
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from pydantic import SecretStr

from benchmarks.harness import report
from benchmarks.harness.run import BenchError, Run, main
from benchmarks.harness.sampling import ROOT, consume_argv, run_sampled
from nexanest.pipeline.settings import Settings

HA_SCRIPT = ROOT / "deploy/local/timescale-ha.sh"
COMMIT_BLOCKS, COMMITS_PER_BLOCK = 5, 100  # per mode, alternating
SYMBOLS = 200
OPTIONS = {"ticks": (200_000, None, "ticks per run"), "rounds": (2, None, "runs of each mode")}
_ROWS = (
    "SELECT count(*) AS rows, count(DISTINCT source_seq) AS distinct_rows,"
    " extract(epoch FROM max(ingested_at) - min(ingested_at)) AS span_s FROM stock_prices WHERE source = $1"
)
log = report.log("sync_replication")


def ha(*args: str) -> str:
    return subprocess.run([str(HA_SCRIPT), *args], capture_output=True, text=True, check=True, timeout=300).stdout


async def cluster(base: Settings) -> tuple[Settings, int]:
    """``base`` with its DSNs (same roles, passwords and database) moved to the cluster's hosts,
    the writable one only, and the primary's port (where the harness makes the scratch database)."""

    def on_hosts(dsn: SecretStr, hosts: str) -> SecretStr:
        parts = urlsplit(dsn.get_secret_value())
        query = "&".join(q for q in (parts.query, "target_session_attrs=read-write") if q)
        return SecretStr(urlunsplit(parts._replace(netloc=f"{parts.netloc.rpartition('@')[0]}@{hosts}", query=query)))

    try:
        hosts, primary = (await asyncio.to_thread(ha, "hosts")).strip(), await asyncio.to_thread(ha, "primary")
    except subprocess.CalledProcessError as exc:
        raise BenchError(
            f"`{shlex.join(exc.cmd)}` exited {exc.returncode}: is the cluster up (make timescale-ha-up)?"
        ) from exc
    ts = base.timescale
    timescale = ts.model_copy(update={"dsn": on_hosts(ts.dsn, hosts), "admin_dsn": on_hosts(ts.admin_dsn, hosts)})
    return base.model_copy(update={"timescale": timescale}), int(primary.split()[1])


async def one_run(run: Run, args: argparse.Namespace, mode: str, i: int) -> dict[str, Any]:
    """Publish a backlog, switch the mode, drain it with one consumer: its rate."""
    settings, source = await run.backlog(f"{mode}{i}", args.ticks, time.time_ns())
    await asyncio.to_thread(ha, "sync", "on" if mode == "sync" else "off")
    proc = await run_sampled(consume_argv(3.0), run.env(settings))
    proc.check_exit()
    wall_s = (proc.exited_at or 0.0) - proc.started_at
    row = await run.sql(_ROWS, source, method="fetchrow")
    run.check(f"{mode}{i}", "rows and distinct seqs", (args.ticks, args.ticks), (row["rows"], row["distinct_rows"]))
    if not row["span_s"]:
        raise RuntimeError(f"{mode} run {i}: written in one transaction; publish more ticks (--ticks)")
    rate = args.ticks / float(row["span_s"])
    log(f"{mode:5} round {i}: {args.ticks} ticks, {rate:,.0f} ticks/s (db clock), {wall_s:.1f}s wall")
    return {"mode": mode, "round": i, "ticks": args.ticks, "ticks_per_s": rate, "wall_s": wall_s, "source": source}


async def commit_latencies(run: Run, source: str, commits: int) -> list[float]:
    """Seconds per commit of a one-row transaction (the pipeline's write path without
    its rows): what synchronous replication adds to each transaction, the standby's
    round trip and WAL flush, without the noise of a whole ingest."""
    conn = await asyncpg.connect(run.base.timescale.dsn.get_secret_value())
    seconds = []
    try:
        insert = await conn.prepare(
            "INSERT INTO stock_prices (time, symbol, price, size, exchange, source, source_seq, kafka_partition,"
            " kafka_offset) VALUES (now(), 'BENCH', 1, 1, 'XBEN', $1, $2, 0, 0)"
        )
        seq = time.time_ns()
        for i in range(commits):
            started = time.perf_counter()
            async with conn.transaction():
                await insert.fetch(source, seq + i)
            seconds.append(time.perf_counter() - started)
    finally:
        await conn.close()
    return seconds


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    latency: dict[str, list[float]] = {"async": [], "sync": []}
    try:
        for i in range(args.rounds):
            # One at a time, never two consumers at once; ABBA order, so that what
            # changes over the run (the machine's load, the table) hits both alike.
            for mode in ("async", "sync") if i % 2 == 0 else ("sync", "async"):
                runs.append(await one_run(run, args, mode, i))  # noqa: PERF401
        for block in range(2 * COMMIT_BLOCKS):
            mode = ("async", "sync")[block % 2]
            await asyncio.to_thread(ha, "sync", "on" if mode == "sync" else "off")
            latency[mode] += await commit_latencies(run, run.source("commit"), COMMITS_PER_BLOCK)
    finally:
        await asyncio.to_thread(ha, "sync", "off")
    mean = {m: statistics.fmean(r["ticks_per_s"] for r in runs if r["mode"] == m) for m in ("async", "sync")}
    commit_ms = {m: {"median": statistics.median(v) * 1e3, "p90": statistics.quantiles(v, n=10)[-1] * 1e3}
                 for m, v in latency.items()}  # fmt: skip
    out = {"runs": runs, "mean_ticks_per_s": mean, "sync_over_async": mean["sync"] / mean["async"]}
    difference = commit_ms["sync"]["median"] - commit_ms["async"]["median"]
    return out | {"commit_ms": commit_ms, "commit_sync_minus_async_ms": difference}


if __name__ == "__main__":
    raise SystemExit(main(__name__))
