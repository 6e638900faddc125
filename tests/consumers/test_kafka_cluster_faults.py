"""A broker of the three-node Kafka cluster dies under load: nothing lost, nothing doubled.

The cluster (``deploy/local/kafka-cluster.sh``: replication factor 3,
``min.insync.replicas=2``, no unclean leader election) is started for this module
beside the shared single broker, which is never touched. Ticks are published
continuously by the real ``TickPublisher`` and consumed by a real ``nexanest
consume`` process, while the node that leads the busiest partitions is killed with
SIGKILL and later started again. The test waits for each fact it depends on (new
leaders elected, rows written after the failover, the node back in every ISR),
never for a fixed time.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError, NodeNotReadyError

from nexanest.pipeline.kafka import ensure_topics, make_producer, pipeline_topics
from nexanest.pipeline.settings import Settings
from nexanest.producers.feeds.synthetic import SyntheticFeed
from nexanest.producers.publisher import TickPublisher
from tests import containers
from tests.consumers.test_ticks_to_timescale_faults import (
    assert_exactly_once,
    feed_config,
    finish,
    rows_of,
    start_consumer,
    until,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "deploy/local/kafka-cluster.sh"
REPLICATION = 3


def cluster(*args: str, timeout_s: float = 240) -> str:
    """Run ``kafka-cluster.sh ARGS``; a failure fails the test with what the script said."""
    done = subprocess.run([str(CLUSTER_SCRIPT), *args], capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        pytest.fail(f"kafka-cluster.sh {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


@pytest.fixture(scope="module")
def kafka_cluster() -> Iterator[str]:
    """The cluster's bootstrap servers, with all three nodes up. ``start`` is
    idempotent (a running node is left alone, a dead one started); the cluster is
    stopped at the end of the module when this fixture started it. A cluster that
    cannot start fails the tests (in CI too), it never skips them."""
    if containers.wanted():
        pytest.skip("under testcontainers (Docker): the cluster is run by deploy/local's scripts")
    was_up = subprocess.run([str(CLUSTER_SCRIPT), "status"], capture_output=True, check=False).returncode == 0
    cluster("start")
    try:
        yield cluster("bootstrap").strip()
    finally:
        if not was_up:
            cluster("stop")


@pytest.fixture
async def on_cluster(isolated: Settings, kafka_cluster: str) -> AsyncIterator[Settings]:
    """``isolated`` (the test's databases, topics and group) with Kafka moved to the
    cluster. The test's topics are deleted from the cluster afterwards (the session
    cleans only the shared broker), so a cluster kept running does not collect them."""
    kafka = isolated.kafka.model_copy(update={"bootstrap_servers": kafka_cluster, "replication_factor": REPLICATION})
    yield isolated.model_copy(update={"kafka": kafka})
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_cluster)
    await admin.start()
    try:
        mine = [t.name for t in pipeline_topics(kafka)]
        await admin.delete_topics([t for t in await admin.list_topics() if t in mine])
    finally:
        await admin.close()


async def partitions_of(settings: Settings) -> list[dict[str, object]]:
    """The ticks topic's partitions as the cluster describes them (leader, replicas,
    isr); none while the admin client's request went to the dead node (the callers poll)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        await admin.start()
        (topic,) = await admin.describe_topics([settings.kafka.ticks_topic])
    except KafkaError as exc:
        if not exc.retriable and not isinstance(exc, NodeNotReadyError | KafkaConnectionError):
            raise
        return []
    finally:
        await admin.close()
    return list(topic["partitions"]) if topic["error_code"] == 0 else []


async def fully_replicated(settings: Settings) -> bool:
    """Every partition of the ticks topic has a leader and all three replicas in sync."""
    partitions = await partitions_of(settings)
    return bool(partitions) and all(
        p["leader"] >= 0 and len(p["isr"]) == REPLICATION  # type: ignore[operator, arg-type]
        for p in partitions
    )


async def busiest_leader(settings: Settings, pool: asyncpg.Pool, source: str) -> tuple[int, list[int]]:
    """The node that leads the most of the test's ticks so far, and the partitions it leads."""
    counts = {
        r["kafka_partition"]: r["n"]
        for r in await pool.fetch(
            "SELECT kafka_partition, count(*) AS n FROM stock_prices WHERE source = $1 GROUP BY 1", source
        )
    }
    led: dict[int, list[int]] = {}
    for p in await partitions_of(settings):
        led.setdefault(int(p["leader"]), []).append(int(p["partition"]))  # type: ignore[call-overload]
    node = max(led, key=lambda n: sum(counts.get(p, 0) for p in led[n]))
    return node, sorted(led[node])


async def consumer_stall_s(pool: asyncpg.Pool, source: str) -> float:
    """The longest time between two consecutive batches of the test's rows in the
    table: ``ingested_at`` defaults to ``now()``, its write transaction's start."""
    gap = await pool.fetchval(
        "SELECT extract(epoch FROM max(gap)) FROM ("
        " SELECT at - lag(at) OVER (ORDER BY at) AS gap"
        " FROM (SELECT DISTINCT ingested_at AS at FROM stock_prices WHERE source = $1) AS batches) AS gaps",
        source,
    )
    return float(gap or 0.0)


async def test_killing_the_leader_broker_loses_and_doubles_nothing(
    on_cluster: Settings,
    timescale_pool: asyncpg.Pool,
    test_id: str,
    kafka_cluster: str,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    settings = on_cluster
    assert await ensure_topics(settings.kafka)  # created here, with replication factor 3
    await until(lambda: fully_replicated(settings), "the test's topics have three in-sync replicas", 30)

    produced = 60_000
    config = feed_config(test_id, produced, rate=2_000, paced=True)  # 30 s of ticks
    log = tmp_path / "consumer.log"
    consumer = start_consumer(
        settings,
        until_idle_s=300.0,  # ended by SIGTERM once every tick is stored, not by idleness during the outage
        log=log,
        NEXANEST_KAFKA__BOOTSTRAP_SERVERS=kafka_cluster,
        NEXANEST_KAFKA__REPLICATION_FACTOR=str(REPLICATION),
    )
    producer = make_producer(settings.kafka)
    await producer.start()
    publisher = TickPublisher(
        producer, settings.kafka.ticks_topic, config.source, new_producer=lambda: make_producer(settings.kafka)
    )
    # The paced feed yields 20 ticks every 10 ms; with acks=all on three loaded nodes an
    # acknowledgement can take a few hundred ms, so more batches are kept in flight
    # than the default 8, or the feed could not keep its rate.
    producing = asyncio.create_task(publisher.publish_all(SyntheticFeed(config).ticks(), in_flight=64))
    # The producer's stall: the longest time without a new acknowledgement while the feed runs.
    producer_stall = 0.0

    async def watch_producer() -> None:
        nonlocal producer_stall
        last_count, last_change = 0, time.monotonic()
        while not producing.done():
            now = time.monotonic()
            if publisher.published != last_count:
                last_count, last_change = publisher.published, now
            producer_stall = max(producer_stall, now - last_change)
            await asyncio.sleep(0.05)

    watching = asyncio.create_task(watch_producer())
    down: int | None = None  # a node this test killed and has not started again
    try:

        async def writing() -> bool:
            assert consumer.poll() is None, f"the consumer exited:\n{log.read_text()[-3000:]}"
            return await rows_of(timescale_pool, config.source) > 0

        await until(writing, "the consumer writes ticks from the cluster")
        victim, led = await busiest_leader(settings, timescale_pool, config.source)
        down = victim
        await asyncio.to_thread(cluster, "kill-node", str(victim))
        killed_at = time.monotonic()

        async def led_elsewhere() -> bool:
            by_partition = {p["partition"]: p for p in await partitions_of(settings)}
            return bool(by_partition) and all(
                by_partition[n]["leader"] not in (-1, victim) and victim not in by_partition[n]["isr"]  # type: ignore[operator]
                for n in led
            )

        await until(led_elsewhere, f"new leaders for partitions {led} of the killed node {victim}", 30)
        failover_s = time.monotonic() - killed_at
        after_failover = await rows_of(timescale_pool, config.source)

        async def written_since() -> bool:
            return await rows_of(timescale_pool, config.source) > after_failover

        await until(written_since, "rows written after the failover", 30)
        assert not producing.done(), "the feed ended before the failover; produce for longer"

        await asyncio.to_thread(cluster, "start-node", str(victim))
        down = None
        await until(lambda: fully_replicated(settings), "the restarted node back in every ISR", 60)
        # The producer raised nothing and dropped nothing: every planned tick acknowledged.
        assert await producing == produced
        assert publisher.published == produced

        async def all_stored() -> bool:
            assert consumer.poll() is None, f"the consumer exited:\n{log.read_text()[-3000:]}"
            return await rows_of(timescale_pool, config.source) >= produced

        await until(all_stored, f"all {produced} ticks stored", 90)
    finally:
        watching.cancel()
        if not producing.done():
            producing.cancel()
        await producer.stop()
        if consumer.poll() is None:
            consumer.send_signal(signal.SIGTERM)
        if down is not None:  # the test failed with a node down: later tests get three
            await asyncio.to_thread(cluster, "start-node", str(down))
    await asyncio.to_thread(finish, consumer, 60, log)
    await assert_exactly_once(timescale_pool, config.source, produced, settings, config.start_ns)

    stall = await consumer_stall_s(timescale_pool, config.source)
    record_property("failover_s", round(failover_s, 2))
    record_property("consumer_stall_s", round(stall, 2))
    record_property("producer_stall_s", round(producer_stall, 2))
    print(
        f"\nbroker kill: node {victim} led partitions {led}; new leaders after {failover_s:.1f}s;"
        f" consumer stalled at most {stall:.1f}s, producer {producer_stall:.1f}s"
    )
    # Bounded: the session timeout (6 s) plus elections and the clients' metadata refresh.
    assert stall < 30.0
