"""Soak: kill -9 the consumer over and over while it ingests, then verify.

    python -m benchmarks.scenarios.kill9_soak [--ticks 1000000] [--cycles 20]

Publishes the synthetic ticks to a fresh topic, then repeatedly starts ``nexanest
consume`` as a real process, waits until it is writing, lets it run a random
0-2 s more and SIGKILLs it. After the last cycle one consumer drains the rest,
and ``nexanest verify`` compares Kafka with TimescaleDB: the run fails (exit 1)
unless missing and duplicate rows are both 0.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

from benchmarks.harness import report
from benchmarks.harness.run import Run, feed_config, main, publish
from benchmarks.harness.sampling import Processes, consume_argv
from nexanest.ops.verify import verify

log = report.log("kill9")


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    settings, source = run.settings("soak", run.topic("soak")), run.source("soak")
    start_ns = time.time_ns() - 3 * 3600 * 10**9
    await publish(settings.kafka, feed_config(args.ticks, args.symbols, args.seed, source, start_ns), source)
    env = run.env(settings, NEXANEST_KAFKA__GROUP_INSTANCE_ID=f"soak-{run.run_id}")
    rng, kills = random.Random(args.seed), 0  # kill timing, not cryptography
    for cycle in range(args.cycles):
        if (before := await run.count_rows(source)) >= args.ticks:
            break
        group = Processes([consume_argv(3)], env)
        waiting = asyncio.ensure_future(group.wait(900))
        deadline = time.monotonic() + 60
        while await run.count_rows(source) == before and time.monotonic() < deadline and not waiting.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(rng.uniform(0.0, 2.0))
        kills += not waiting.done()
        group.kill()
        (proc,) = await waiting
        log(f"cycle {cycle + 1}: killed={proc.exit_code == -9} rows {await run.count_rows(source):,}")
    (drain,) = await Processes([consume_argv(3)], env).wait(900)
    drain.check_exit()
    checked = await verify(settings, settings.kafka.ticks_topic, start_ns, time.time_ns(), source=source)
    run.check("soak", "missing and duplicate rows", (0, 0), (checked.missing, checked.duplicates), strict=False)
    return {"parameters": vars(args) | {"kills": kills}, "verify": checked.to_json(), "ok": checked.ok}


def markdown(result: dict[str, Any]) -> str:
    v = result["verify"]
    return (
        f"kill9_soak `{result['run_id']}`: {result['parameters']['kills']} kills; Kafka {v['kafka_ticks']:,} ticks, "
        f"table {v['db_rows']:,} rows, missing {v['missing']}, duplicates {v['duplicates']}: ok {result['ok']}\n"
    )


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ticks", type=int, default=1_000_000, help="ticks to publish (1,000,000)")
    parser.add_argument("--cycles", type=int, default=20, help="kill -9 cycles (20)")


if __name__ == "__main__":
    raise SystemExit(main(__name__))
