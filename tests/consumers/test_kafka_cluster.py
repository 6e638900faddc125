"""The three-node SASL/SCRAM Kafka cluster: its ACLs deny what a role must not do,
and a broker of it dies under load with nothing lost, nothing doubled.

The cluster (``deploy/local/kafka-cluster.sh``: replication factor 3,
``min.insync.replicas=2``, no unclean leader election, SASL/SCRAM and ACLs) is
started once for this module beside the shared single broker, which is never touched.

The ACL tests come first and only try what must fail on the cluster's own topics
(granted when it starts), so they write nothing into it; a client the cluster
refuses is told why in one sentence.

Then the broker kill (marked ``faults``). Ticks are published
continuously by the real ``TickPublisher`` and consumed by a real ``nexanest
consume`` process, while the node that leads the busiest partitions is killed with
SIGKILL and later started again. The test waits for each fact it depends on (new
leaders elected, rows written after the failover, the node back in every ISR),
never for a fixed time.

It runs over SASL/SCRAM as the cluster's least-privileged users: the admin creates
the test's topics and grants them with the script's own ``grant`` (as it grants the
real topics), the publisher is ``nexanest-producer``, the consumer process
``nexanest-consumer``, the test's metadata probes ``nexanest-ops``. So the ACLs are
proven to suffice for the real pipeline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError, NodeNotReadyError, TopicAuthorizationFailedError
from pydantic import SecretStr

from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.kafka import (
    consumer_options,
    ensure_topics,
    make_admin,
    make_consumer,
    make_producer,
    pipeline_topics,
    start_client,
)
from nexanest.pipeline.settings import KafkaSettings, Settings, namespace_environment
from nexanest.producers.feeds.synthetic import SyntheticFeed
from nexanest.producers.publisher import TickPublisher
from tests.consumers.test_ticks_to_timescale_faults import (
    assert_exactly_once,
    feed_config,
    finish,
    rows_of,
    start_consumer,
    until,
)
from tests.kafka_cluster import (  # noqa: F401 (kafka_cluster_fixture: a fixture)
    REPLICATION,
    REPO,
    as_role,
    cluster,
    grant_environment,
    kafka_cluster_fixture,
    role_environment,
)

pytestmark = pytest.mark.integration

DEFAULTS = KafkaSettings()


def on_defaults(role: str) -> KafkaSettings:
    """The cluster's own topic names (granted at start), as ``role``."""
    return as_role(Settings(kafka=DEFAULTS, _env_file=None), role).kafka  # type: ignore[call-arg]


async def test_the_producer_cannot_read_ticks(kafka_cluster: str) -> None:
    kafka = on_defaults("producer")
    consumer = AIOKafkaConsumer(group_id=None, **consumer_options(kafka, "acl-test"))
    await start_client(consumer, kafka)
    try:
        tp = TopicPartition(kafka.ticks_topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        with pytest.raises(TopicAuthorizationFailedError, match=kafka.ticks_topic):
            await consumer.getmany(timeout_ms=10_000)
    finally:
        await consumer.stop()


@pytest.mark.parametrize(("role", "topic"), [("producer", "dead_letter_topic"), ("consumer", "ticks_topic")])
async def test_a_role_cannot_write_a_topic_of_another(kafka_cluster: str, role: str, topic: str) -> None:
    kafka = on_defaults(role)
    producer = make_producer(kafka, client_suffix="acl-test")
    await start_client(producer, kafka)
    try:
        with pytest.raises(TopicAuthorizationFailedError, match=getattr(kafka, topic)):
            await producer.send_and_wait(getattr(kafka, topic), b"not allowed")
    finally:
        await producer.stop()


async def test_the_consumer_cannot_join_a_group_outside_its_prefix(kafka_cluster: str) -> None:
    kafka = on_defaults("consumer")
    consumer = make_consumer(kafka, kafka.ticks_topic, group_id="not-the-pipelines-group")
    with pytest.raises(ConfigurationError, match=r"Kafka denies user 'nexanest-consumer'.*not-the-pipelines-group"):
        await start_client(consumer, kafka)


async def test_the_consumer_cannot_create_topics(kafka_cluster: str, test_id: str) -> None:
    kafka = on_defaults("consumer").model_copy(update={"ticks_topic": f"test.{test_id}.ticks"})
    with pytest.raises(ConfigurationError, match="who may not create it"):
        await ensure_topics(kafka)


async def test_a_wrong_password_is_refused_in_one_sentence(kafka_cluster: str) -> None:
    kafka = on_defaults("consumer").model_copy(update={"sasl_password": SecretStr("not-the-password")})
    admin = make_admin(kafka)
    with pytest.raises(
        ConfigurationError, match="SASL authentication failed for user 'nexanest-consumer' \\(SCRAM-SHA-512\\)"
    ) as refused:
        await start_client(admin, kafka)
    assert "not-the-password" not in str(refused.value)


async def test_an_unauthenticated_client_is_refused_in_one_sentence(kafka_cluster: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_cluster)  # PLAINTEXT, no user
    with pytest.raises(ConfigurationError, match="unauthenticated \\(PLAINTEXT\\) client: the listener wants SASL"):
        await start_client(make_admin(kafka), kafka)


def test_the_consumer_with_a_wrong_password_exits_with_the_reason(kafka_cluster: str, isolated: Settings) -> None:
    env = {
        **namespace_environment(isolated),
        **role_environment("consumer"),
        "NEXANEST_KAFKA__SASL_PASSWORD": "not-the-password",
        "NEXANEST_METRICS__PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "nexanest.cli.main", "consume", "--until-idle", "1"],
        cwd=REPO,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("NEXANEST_")}, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "nexanest: Kafka at 127.0.0.1:1909" in done.stderr
    assert "SASL authentication failed for user 'nexanest-consumer'" in done.stderr
    assert "Traceback" not in done.stderr
    assert "not-the-password" not in done.stderr


@pytest.fixture
async def on_cluster(isolated: Settings, kafka_cluster: str) -> AsyncIterator[Settings]:
    """``isolated`` (the test's databases, topics and group) with Kafka moved to the
    cluster as the producer's user; the topics created by the admin and granted to
    the users by ``kafka-cluster.sh grant``. Afterwards their ACLs are revoked and the
    topics deleted (the session cleans only the shared broker), so a cluster kept
    running does not collect them."""
    admin_settings = as_role(isolated, "admin")
    assert await ensure_topics(admin_settings.kafka)  # created here, with replication factor 3
    names = grant_environment(isolated)
    await asyncio.to_thread(cluster, "grant", env=names)
    try:
        yield as_role(isolated, "producer")
    finally:
        await asyncio.to_thread(cluster, "revoke", env=names)
        admin = make_admin(admin_settings.kafka)
        await admin.start()
        try:
            mine = [t.name for t in pipeline_topics(admin_settings.kafka)]
            await admin.delete_topics([t for t in await admin.list_topics() if t in mine])
        finally:
            await admin.close()


async def partitions_of(settings: Settings) -> list[dict[str, object]]:
    """The ticks topic's partitions as the cluster describes them (leader, replicas,
    isr), as the tools' user; none while the admin client's request went to the dead
    node (the callers poll)."""
    ops = as_role(settings, "ops").kafka
    admin = make_admin(ops, client_suffix="test-probe")
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


@pytest.mark.faults
async def test_killing_the_leader_broker_loses_and_doubles_nothing(
    on_cluster: Settings,
    timescale_pool: asyncpg.Pool,
    test_id: str,
    kafka_cluster: str,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    settings = on_cluster
    await until(lambda: fully_replicated(settings), "the test's topics have three in-sync replicas", 30)

    # The feed runs until the killed node is back (a feed of a fixed length could end
    # before a slow failover on a loaded machine): how many ticks is its outcome.
    config = feed_config(test_id, None, rate=2_000, paced=True)
    feed = SyntheticFeed(config)
    log = tmp_path / "consumer.log"
    consumer = start_consumer(
        settings,
        until_idle_s=300.0,  # ended by SIGTERM once every tick is stored, not by idleness during the outage
        log=log,
        env=role_environment("consumer"),
    )
    producer = make_producer(settings.kafka)
    await producer.start()
    publisher = TickPublisher(
        producer, settings.kafka.ticks_topic, config.source, new_producer=lambda: make_producer(settings.kafka)
    )
    # The paced feed yields 20 ticks every 10 ms; with acks=all on three loaded nodes an
    # acknowledgement can take a few hundred ms, so more batches are kept in flight
    # than the default 8, or the feed could not keep its rate.
    producing = asyncio.create_task(publisher.publish_all(feed.ticks(), in_flight=64))
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
        assert not producing.done(), "the publisher stopped during the failover"

        await asyncio.to_thread(cluster, "start-node", str(victim))
        down = None
        await until(lambda: fully_replicated(settings), "the restarted node back in every ISR", 60)
        await feed.stop()
        # The producer raised nothing and dropped nothing: every tick the feed yielded acknowledged.
        produced = await producing
        assert produced == publisher.published == feed.health().ticks > 0

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
    # `nexanest verify` reads the topic back: an operator tool, as the tools' user.
    await assert_exactly_once(timescale_pool, config.source, produced, as_role(settings, "ops"), config.start_ns)

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
