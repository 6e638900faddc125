"""Kafka clients and topics, built from ``KafkaSettings`` in one place.

Producers are idempotent with ``acks=all``: a retried send is de-duplicated by
the broker, so a network blip never doubles a tick inside Kafka. Consumers never
auto-commit: offsets move only after the batch is durable downstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.kafka_records import TickConsumer
from nexanest.pipeline.settings import KafkaSettings


def make_producer(settings: KafkaSettings, *, client_suffix: str = "producer") -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-{client_suffix}",
        enable_idempotence=True,
        acks="all",
        linger_ms=settings.linger_ms,
        max_batch_size=settings.max_batch_bytes,
        compression_type=None if settings.compression == "none" else settings.compression,
        request_timeout_ms=settings.request_timeout_ms,
    )


def consumer_options(settings: KafkaSettings, client_suffix: str) -> dict[str, Any]:
    """What every consumer of the pipeline shares: no auto-commit, committed
    transactions only, bounded fetches. Callers add their group."""
    return {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": f"{settings.client_id}-{client_suffix}",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "fetch_max_bytes": settings.fetch_max_bytes,
        "max_partition_fetch_bytes": settings.max_partition_fetch_bytes,
        "request_timeout_ms": settings.request_timeout_ms,
    }


def make_consumer(settings: KafkaSettings, *topics: str, group_id: str | None = None) -> TickConsumer:
    """The ticks consumer: a member of ``group_id`` (default: the consumer group).
    Its ``getmany`` returns aiokafka's records as unpacked (``pipeline/kafka_records.py``)."""
    return TickConsumer(
        *topics,
        group_id=group_id or settings.consumer_group,
        group_instance_id=settings.group_instance_id,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        **consumer_options(settings, "consumer"),
    )


def pipeline_topics(settings: KafkaSettings) -> list[NewTopic]:
    """The pipeline's topics, with the settings' replication factor (the broker's
    own ``min.insync.replicas`` decides how many copies an acks=all write needs)."""
    rf = settings.replication_factor
    return [
        NewTopic(settings.ticks_topic, num_partitions=settings.partitions, replication_factor=rf),
        NewTopic(settings.dead_letter_topic, num_partitions=settings.partitions, replication_factor=rf),
        NewTopic(settings.events_topic, num_partitions=1, replication_factor=rf),
        NewTopic(settings.backfill_topic, num_partitions=settings.partitions, replication_factor=rf),
    ]


async def ensure_topics(settings: KafkaSettings, topics: Iterable[NewTopic] | None = None) -> list[str]:
    """Create the pipeline's topics that do not exist yet; return the created names.

    The broker does not auto-create topics: a typo in a topic name is an error,
    not a new empty topic.
    """
    wanted = list(pipeline_topics(settings) if topics is None else topics)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-admin",
        request_timeout_ms=settings.request_timeout_ms,
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            response = await admin.create_topics(missing)
            # aiokafka reports per-topic errors in the response instead of raising.
            for name, code, *rest in response.topic_errors:
                if code not in (0, TopicAlreadyExistsError.errno):
                    message = rest[0] if rest else ""
                    raise ConfigurationError(f"cannot create Kafka topic {name!r}: error {code} {message}")
            await _wait_until_ready(admin, {t.name for t in missing})
        return [t.name for t in missing]
    finally:
        await admin.close()


async def _wait_until_ready(admin: AIOKafkaAdminClient, names: set[str], timeout_s: float = 10.0) -> None:
    """Topic creation is asynchronous in the broker: wait until every partition
    of the new topics has a leader, so the first sends do not bounce."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await _all_led(admin, names):
        if asyncio.get_running_loop().time() > deadline:
            raise ConfigurationError(f"Kafka topics {sorted(names)} have no leaders {timeout_s:.0f}s after creation")
        await asyncio.sleep(0.1)


async def _all_led(admin: AIOKafkaAdminClient, names: set[str]) -> bool:
    if not names <= set(await admin.list_topics()):
        return False
    described = await admin.describe_topics(sorted(names))
    return all(
        t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"]) for t in described
    )
