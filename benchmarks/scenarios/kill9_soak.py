"""Soak: kill -9 the consumer over and over while it ingests, then verify.

    python -m benchmarks.scenarios.kill9_soak [--ticks 1000000] [--cycles 20]

Publishes N synthetic ticks to a fresh topic, then repeatedly starts
`nexanest consume` as a real process, waits until it is writing, lets it run a
random 0-2 s more and SIGKILLs it. After the last cycle one consumer drains the
rest. `nexanest verify` logic then compares Kafka with TimescaleDB; the run
fails (exit 1) unless missing and duplicate rows are both 0. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import time

import asyncpg
import uvloop

from benchmarks.harness.cleanup import clean_up, prepare_database
from benchmarks.harness.report import print_and_save
from benchmarks.harness.run import Run
from benchmarks.harness.sampling import ROOT
from nexanest.ops.verify import verify
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.log import configure_logging
from nexanest.pipeline.settings import LogSettings, Settings, load_settings
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.producers.publisher import TickPublisher


def consumer_process(settings: Settings, name: str) -> subprocess.Popen[bytes]:
    env = Run.env(settings, NEXANEST_KAFKA__GROUP_INSTANCE_ID=f"soak-{name}")
    return subprocess.Popen(
        [sys.executable, "-m", "nexanest.cli.main", "consume", "--until-idle", "3"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def rows(pool: asyncpg.Pool, source: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM stock_prices WHERE source = $1", source))


async def main(args: argparse.Namespace) -> dict[str, object]:
    run = Run(load_settings(), "k")
    name, base = run.run_id, run.base
    try:
        run.base, _ = await prepare_database(base, run.run_id)
        return await soak(run, args)
    finally:
        cleanup = await clean_up(base, name)
        print(f"clean-up: {cleanup}", file=sys.stderr)


async def soak(run: Run, args: argparse.Namespace) -> dict[str, object]:
    name = run.run_id
    settings = run.settings("soak", run.topic("soak"))
    start_ns = time.time_ns() - 3 * 3600 * 10**9
    config = SyntheticConfig(
        symbols=300,
        rate=1_000_000,
        count=args.ticks,
        seed=args.seed,
        start_ns=start_ns,
        source=run.source("soak"),
        paced=False,
    )
    await ensure_topics(settings.kafka)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        started = time.monotonic()
        await TickPublisher(producer, settings.kafka.ticks_topic, config.source).publish_all(
            SyntheticFeed(config).ticks()
        )
        print(f"published {args.ticks:,} ticks in {time.monotonic() - started:.0f}s", file=sys.stderr)
    finally:
        await producer.stop()

    rng = random.Random(args.seed)  # kill timing, not cryptography
    pool = await asyncpg.create_pool(settings.timescale.dsn.get_secret_value(), min_size=1, max_size=2)
    assert pool is not None
    kills = 0
    try:
        for cycle in range(args.cycles):
            before = await rows(pool, config.source)
            if before >= args.ticks:
                break
            proc = consumer_process(settings, name)
            deadline = time.monotonic() + 60
            while await rows(pool, config.source) == before and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            await asyncio.sleep(rng.uniform(0.0, 2.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(timeout=30)
            now = await rows(pool, config.source)
            print(f"cycle {cycle + 1}: killed={proc.returncode == -9} rows {now:,}", file=sys.stderr)
        drain = consumer_process(settings, name)
        drain.wait(timeout=900)
        if drain.returncode != 0:
            raise RuntimeError(f"draining consumer exited {drain.returncode}")
    finally:
        await pool.close()

    report = await verify(settings, settings.kafka.ticks_topic, start_ns, time.time_ns(), source=config.source)
    return {
        "benchmark": "kill9_soak",
        "run_id": name,
        "machine": {"cores": os.cpu_count()},
        "ticks": args.ticks,
        "cycles": args.cycles,
        "kills": kills,
        "kafka_ticks": report.kafka_ticks,
        "db_rows": report.db_rows,
        "missing": report.missing,
        "duplicates": report.duplicates,
        "unexpected": report.unexpected,
        "ok": report.ok,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=1_000_000, help="ticks to publish (default 1000000)")
    parser.add_argument("--cycles", type=int, default=20, help="kill -9 cycles (default 20)")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    configure_logging(LogSettings(level="warning"))
    result = uvloop.run(main(args))
    print_and_save("kill9_soak", result, None)
    sys.exit(0 if result["ok"] else 1)
