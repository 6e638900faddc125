"""How fast can a feed adapter publish? ``TickPublisher`` against per-tick ``send``.

    python -m benchmarks.micro.publish_rate [--ticks 200000] [--symbols 300] [--batch 1000] [--rounds 3]

The same synthetic ticks are published to a fresh topic (the pipeline's
partition count, producer settings from ``make_producer``: idempotent,
acks=all, lz4, linger) two ways, alternating, ``--rounds`` times each:

* ``record_batches``: ``TickPublisher.publish_all``, which encodes each batch of
  ``--batch`` ticks straight into one Kafka record batch per partition;
* ``send_per_tick``: the straightforward use of aiokafka, one ``send`` per
  tick (the producer partitions by key), the same batches, the same 8 batches
  awaiting acknowledgements at once.

Reports ticks/s and client CPU per tick (process time: the publisher shares the
machine with the broker) for each, and their ratios. Every published tick is
counted from the topic's end offsets, so a rate is never credited for ticks
that did not arrive. The topic is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from benchmarks.harness.report import print_and_save
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.settings import load_settings
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.producers.publisher import TickPublisher
from nexanest.schemas.ticks import Tick, encode_tick


async def batches_of(ticks: list[Tick], size: int) -> AsyncIterator[Sequence[Tick]]:
    for i in range(0, len(ticks), size):
        yield ticks[i : i + size]


async def send_per_tick(producer: AIOKafkaProducer, topic: str, ticks: list[Tick], size: int) -> None:
    pending: list[list[asyncio.Future[Any]]] = []
    for i in range(0, len(ticks), size):
        pending.append([await producer.send(topic, encode_tick(t), key=t.symbol.encode()) for t in ticks[i : i + size]])
        if len(pending) > 8:
            await asyncio.gather(*pending.pop(0))
    for futures in pending:
        await asyncio.gather(*futures)
    await producer.flush()


async def end_total(consumer: AIOKafkaConsumer, topic: str, partitions: set[int]) -> int:
    ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    return sum(ends.values())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings()
    topic = f"bench.pub-{uuid.uuid4().hex[:8]}.ticks"
    kafka = settings.kafka.model_copy(update={"ticks_topic": topic})
    await ensure_topics(kafka)
    feed = SyntheticFeed(SyntheticConfig(symbols=args.symbols, rate=100_000, count=args.ticks, seed=1, paced=False))
    ticks = list(feed.generate())
    results: dict[str, list[dict[str, float]]] = {"record_batches": [], "send_per_tick": []}
    published = 0
    counter = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers)
    await counter.start()
    try:
        for _ in range(args.rounds):
            for way in results:
                producer = make_producer(kafka)
                await producer.start()
                try:
                    wall, cpu = time.perf_counter(), time.process_time()
                    if way == "record_batches":
                        await TickPublisher(producer, topic, "bench").publish_all(batches_of(ticks, args.batch))
                    else:
                        await send_per_tick(producer, topic, ticks, args.batch)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    partitions = await producer.partitions_for(topic)
                finally:
                    await producer.stop()
                published += len(ticks)
                landed = await end_total(counter, topic, partitions)
                if landed != published:
                    raise RuntimeError(f"{way}: {landed:,} ticks in the topic, {published:,} published")
                results[way].append({"ticks_per_s": len(ticks) / wall, "cpu_us_per_tick": cpu / len(ticks) * 1e6})
    finally:
        await counter.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
        await admin.start()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()
    median = {
        way: {k: statistics.median(r[k] for r in runs) for k in ("ticks_per_s", "cpu_us_per_tick")}
        for way, runs in results.items()
    }
    return {
        "benchmark": "publish_rate",
        "parameters": vars(args),
        "runs": results,
        "median": median,
        "ratios": {
            "rate_record_batches_vs_send_per_tick": median["record_batches"]["ticks_per_s"]
            / median["send_per_tick"]["ticks_per_s"],
            "cpu_send_per_tick_vs_record_batches": median["send_per_tick"]["cpu_us_per_tick"]
            / median["record_batches"]["cpu_us_per_tick"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=200_000, help="ticks per round (default 200000)")
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument("--batch", type=int, default=1_000, help="ticks per publish call (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each way, alternating (default 3)")
    print_and_save("publish_rate", uvloop.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
