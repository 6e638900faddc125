"""The ACLs of the SASL/SCRAM Kafka cluster deny what a role must not do, and a
client the cluster refuses is told why in one sentence.

The cluster (``deploy/local/kafka-cluster.sh``) grants its users on the pipeline's
default topics when it starts; these tests only try what must fail there, so they
write nothing into it. That the grants suffice for the real pipeline is proven by
``tests/consumers/test_kafka_cluster_faults.py``, which runs producer and consumer
as these users.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import TopicAuthorizationFailedError
from pydantic import SecretStr

from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.kafka import consumer_options, ensure_topics, make_admin, make_producer, start_client
from nexanest.pipeline.settings import KafkaSettings, Settings, namespace_environment
from tests.kafka_cluster import REPO, as_role, kafka_cluster_fixture, role_environment  # noqa: F401 (a fixture)

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
