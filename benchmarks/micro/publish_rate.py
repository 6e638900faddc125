"""How fast can a feed adapter publish? ``TickPublisher`` against per-tick ``send``.

    python -m benchmarks.micro.publish_rate [--ticks 200000] [--batch 1000] [--rounds 3]

The same ticks, alternating, ``--rounds`` times each: ``record_batches``
(``TickPublisher.publish_all``: one Kafka record batch per partition per batch)
and ``send_per_tick`` (aiokafka's plain use, the same batches, 8 awaiting
acknowledgements at once). Ticks/s and client CPU per tick; every tick is
counted from the topic's end offsets.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks.harness.run import Run, main, publish
from nexanest.pipeline.kafka import connection_options, make_producer
from nexanest.producers.feeds.synthetic import SyntheticFeed
from nexanest.producers.publisher import TickPublisher
from nexanest.schemas.ticks import Tick, encode_tick


async def batches_of(ticks: list[Tick], size: int) -> AsyncIterator[Sequence[Tick]]:
    for i in range(0, len(ticks), size):
        yield ticks[i : i + size]


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    kafka = run.base.kafka.model_copy(update={"ticks_topic": run.topic("publish")})
    await publish(kafka, [], "bench")  # creates the topic
    ticks = list(SyntheticFeed(run.feed(args.ticks, "bench", time.time_ns())).generate())
    results: dict[str, list[dict[str, float]]] = {"record_batches": [], "send_per_tick": []}
    counter = AIOKafkaConsumer(**connection_options(kafka, "bench-counter"))
    await counter.start()
    try:
        for _ in range(args.rounds):
            for way, runs in results.items():
                producer = make_producer(kafka)
                await producer.start()
                try:
                    wall, cpu = time.perf_counter(), time.process_time()
                    topic = kafka.ticks_topic
                    if way == "record_batches":
                        await TickPublisher(producer, topic, "bench").publish_all(batches_of(ticks, args.batch))
                    else:
                        pending = []
                        for i in range(0, len(ticks), args.batch):
                            batch = ticks[i : i + args.batch]
                            pending.append(
                                [await producer.send(topic, encode_tick(t), key=t.symbol.encode()) for t in batch]
                            )
                            if len(pending) > 8:
                                await asyncio.gather(*pending.pop(0))
                        await asyncio.gather(*(f for futures in pending for f in futures))
                        await producer.flush()
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                finally:
                    await producer.stop()
                runs.append({"ticks_per_s": len(ticks) / wall, "cpu_us_per_tick": cpu / len(ticks) * 1e6})
                ends = await counter.end_offsets(
                    [TopicPartition(kafka.ticks_topic, p) for p in range(kafka.partitions)]
                )
                published = sum(len(r) for r in results.values()) * len(ticks)
                run.check(way, "ticks in the topic", published, sum(ends.values()))
    finally:
        await counter.stop()
    median = {f"{w} {k}": statistics.median(r[k] for r in runs) for w, runs in results.items() for k in runs[0]}
    rate = median["record_batches ticks_per_s"] / median["send_per_tick ticks_per_s"]
    cpu_ratio = median["send_per_tick cpu_us_per_tick"] / median["record_batches cpu_us_per_tick"]
    out = {"runs": results, "median": median}
    return out | {"rate_record_batches_vs_send_per_tick": rate, "cpu_send_per_tick_vs_record_batches": cpu_ratio}


OPTIONS = {
    "ticks": (200_000, None, "ticks per round"),
    "batch": (1_000, None, "ticks per publish call"),
    "rounds": (3, None, "rounds of each way, alternating"),
}


if __name__ == "__main__":
    raise SystemExit(main(__name__))
