"""What synchronous replication costs (issue 16, part 2): the same ingest against
the Patroni cluster of ``deploy/local/timescale-ha.sh`` in asynchronous and in
synchronous mode, side by side in one run.

    flock /tmp/nexanest-bench.lock .venv/bin/python -m benchmarks.scenarios.sync_replication \
        [--ticks 200000] [--rounds 2]

The cluster must run (``make timescale-ha-up``). Per round and mode (alternating:
async, sync, async, sync, ... so drift of a shared machine hits both alike), a
backlog of ``--ticks`` synthetic ticks is published to a topic of its own first,
then one real ``nexanest consume`` drains it through the multi-host DSN. ticks/s
is on the database's clock (rows over the span of their ``ingested_at``, each a
transaction's start), and every run must have written each tick once. The mode is
switched with ``timescale-ha.sh sync on|off`` (Patroni's ``synchronous_mode``: a
commit returns once the standby has flushed its WAL). Then what a commit itself
costs in each mode: one-row transactions, in alternating blocks (median, p90).
The cluster is left in asynchronous mode; the runs' rows are deleted afterwards
(as the owner role).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from pydantic import SecretStr

from benchmarks.harness.run import feed_config, publish
from benchmarks.harness.sampling import consume_argv
from nexanest.ops.migrate import migrate
from nexanest.pipeline.kafka import ensure_topics
from nexanest.pipeline.settings import Settings, load_settings, namespace_environment, namespaced

REPO = Path(__file__).resolve().parents[2]
HA_SCRIPT = REPO / "deploy/local/timescale-ha.sh"
RESULTS = REPO / "benchmarks/results"
COMMIT_BLOCKS, COMMITS_PER_BLOCK = 5, 100  # per mode, alternating
_ROWS = (
    "SELECT count(*) AS rows, count(DISTINCT source_seq) AS distinct_rows,"
    " extract(epoch FROM max(ingested_at) - min(ingested_at)) AS span_s FROM stock_prices WHERE source = $1"
)


def ha(*args: str) -> str:
    return subprocess.run([str(HA_SCRIPT), *args], capture_output=True, text=True, check=True, timeout=300).stdout


def on_hosts(dsn: SecretStr, hosts: str) -> SecretStr:
    """``dsn`` (same role, password and database) moved to the cluster's hosts, writable one only."""
    parts = urlsplit(dsn.get_secret_value())
    userinfo = parts.netloc.rpartition("@")[0]
    query = "&".join(q for q in (parts.query, "target_session_attrs=read-write") if q)
    return SecretStr(urlunsplit(parts._replace(netloc=f"{userinfo}@{hosts}", query=query)))


async def one_run(base: Settings, run_id: str, mode: str, i: int, ticks: int) -> dict[str, Any]:
    """Publish a backlog, switch the mode, drain it with one consumer: its rate."""
    name = f"bench.{run_id}.{mode}{i}"
    settings = namespaced(base, name)
    source = f"bench-{run_id}-{mode}{i}"
    await ensure_topics(settings.kafka)
    published, _ = await publish(settings.kafka, feed_config(ticks, 200, i, source, time.time_ns()), source)
    await asyncio.to_thread(ha, "sync", "on" if mode == "sync" else "off")
    env = {**os.environ, **namespace_environment(settings), "NEXANEST_LOG__LEVEL": "warning"}
    started = time.perf_counter()
    done = await asyncio.to_thread(
        subprocess.run, consume_argv(3.0), cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"consumer exited {done.returncode}: {done.stderr[-2000:]}")
    conn = await asyncpg.connect(base.timescale.dsn.get_secret_value())
    try:
        row = await conn.fetchrow(_ROWS, source)
    finally:
        await conn.close()
    if (row["rows"], row["distinct_rows"]) != (published, published):
        raise RuntimeError(f"{mode} run {i}: {row['rows']} rows ({row['distinct_rows']} distinct) of {published}")
    if not row["span_s"]:
        raise RuntimeError(f"{mode} run {i}: written in one transaction; publish more ticks (--ticks)")
    rate = published / float(row["span_s"])
    print(f"  {mode:5} round {i}: {published} ticks, {rate:,.0f} ticks/s (db clock), {wall_s:.1f}s wall", flush=True)
    return {"mode": mode, "round": i, "ticks": published, "ticks_per_s": rate, "wall_s": wall_s, "source": source}


async def commit_latencies(base: Settings, source: str, commits: int) -> list[float]:
    """Seconds per commit of a one-row transaction (the pipeline's write path without
    its rows): what synchronous replication adds to each transaction, the standby's
    round trip and WAL flush, without the noise of a whole ingest."""
    conn = await asyncpg.connect(base.timescale.dsn.get_secret_value())
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


async def clean_up(base: Settings, run_id: str) -> None:
    """Delete the runs' rows, as the owner (the ingest role may not delete)."""
    conn = await asyncpg.connect(base.timescale.admin_dsn.get_secret_value())
    try:
        await conn.execute("DELETE FROM stock_prices WHERE source LIKE $1", f"bench-{run_id}-%")
        await conn.execute("DELETE FROM ingest_offsets WHERE consumer_group LIKE $1", f"bench.{run_id}.%")
    finally:
        await conn.close()


async def measure(ticks: int, rounds: int) -> dict[str, Any]:
    user = load_settings(REPO / ".env")
    hosts = ha("hosts").strip()
    ts = user.timescale
    base = user.model_copy(
        update={
            "timescale": ts.model_copy(
                update={"dsn": on_hosts(ts.dsn, hosts), "admin_dsn": on_hosts(ts.admin_dsn, hosts)}
            )
        }
    )
    await migrate(base, ["timescale"])
    run_id = f"r{uuid.uuid4().hex[:8]}"
    runs: list[dict[str, Any]] = []
    latency: dict[str, list[float]] = {"async": [], "sync": []}
    try:
        for i in range(rounds):
            # One at a time, never two consumers at once; ABBA order, so that what
            # changes over the run (the machine's load, the table) hits both alike.
            for mode in ("async", "sync") if i % 2 == 0 else ("sync", "async"):
                runs.append(await one_run(base, run_id, mode, i, ticks))  # noqa: PERF401
        for block in range(2 * COMMIT_BLOCKS):
            mode = ("async", "sync")[block % 2]
            await asyncio.to_thread(ha, "sync", "on" if mode == "sync" else "off")
            latency[mode] += await commit_latencies(base, f"bench-{run_id}-commit", COMMITS_PER_BLOCK)
    finally:
        await asyncio.to_thread(ha, "sync", "off")
        await clean_up(base, run_id)
    mean = {m: statistics.fmean(r["ticks_per_s"] for r in runs if r["mode"] == m) for m in ("async", "sync")}
    commit_ms = {m: {"median": statistics.median(v) * 1e3, "p90": statistics.quantiles(v, n=10)[-1] * 1e3}
                 for m, v in latency.items()}  # fmt: skip
    print(
        f"  one-row commits: async median {commit_ms['async']['median']:.2f} ms, sync median"
        f" {commit_ms['sync']['median']:.2f} ms (p90 {commit_ms['async']['p90']:.2f} / {commit_ms['sync']['p90']:.2f})"
    )
    return {
        "scenario": "sync_replication",
        "run_id": run_id,
        "at": datetime.now(UTC).isoformat(),
        "ticks": ticks,
        "rounds": rounds,
        "runs": runs,
        "mean_ticks_per_s": mean,
        "sync_over_async": mean["sync"] / mean["async"],
        "commit_ms": commit_ms,
        "commit_sync_minus_async_ms": commit_ms["sync"]["median"] - commit_ms["async"]["median"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    result = asyncio.run(measure(args.ticks, args.rounds))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"sync_replication-{result['run_id']}.json"
    out.write_text(json.dumps(result, indent=2))
    mean = result["mean_ticks_per_s"]
    commit = result["commit_ms"]
    print(
        f"async {mean['async']:,.0f} ticks/s, sync {mean['sync']:,.0f} ticks/s:"
        f" sync/async = {result['sync_over_async']:.2f}; a commit: {commit['async']['median']:.2f} ms async,"
        f" {commit['sync']['median']:.2f} ms sync ({out})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
