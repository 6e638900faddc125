"""Kafka clients and topics, built from ``KafkaSettings`` in one place.

Producers are idempotent with ``acks=all``: a retried send is de-duplicated by
the broker, so a network blip never doubles a tick inside Kafka. Consumers never
auto-commit: offsets move only after the batch is durable downstream.

Every client the project makes (producers, consumers, admin clients, in the
pipeline, the operator tools and the services) gets its connection and
security options from ``connection_options`` here, so a SASL/SCRAM cluster
needs nothing but the settings, and ``start_client`` turns a broker's refusal
into one sentence instead of aiokafka's "Unable to bootstrap".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest

from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.kafka_records import TickConsumer
from nexanest.pipeline.settings import KafkaSettings

#: What a broker answers a principal that its ACLs do not allow.
_DENIED = (TopicAuthorizationFailedError, GroupAuthorizationFailedError, ClusterAuthorizationFailedError)

#: Any client ``start_client`` starts.
KafkaClient: TypeAlias = "AIOKafkaProducer | AIOKafkaConsumer | AIOKafkaAdminClient"


def security_options(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka's security keyword arguments for ``settings``: none for PLAINTEXT,
    SASL (and a TLS context for SASL_SSL) otherwise.

    Raises ``ConfigurationError`` when a SASL protocol lacks its user or password.
    The password leaves its ``SecretStr`` only here, into the client.
    """
    if settings.security_protocol == "PLAINTEXT":
        if settings.ssl_cafile is not None:
            raise ConfigurationError("NEXANEST_KAFKA__SSL_CAFILE is used only with security_protocol SASL_SSL")
        return {}
    if not settings.sasl_username or settings.sasl_password is None:
        raise ConfigurationError(
            f"Kafka security_protocol {settings.security_protocol} needs"
            " NEXANEST_KAFKA__SASL_USERNAME and NEXANEST_KAFKA__SASL_PASSWORD"
        )
    options: dict[str, Any] = {
        "security_protocol": settings.security_protocol,
        "sasl_mechanism": settings.sasl_mechanism,
        "sasl_plain_username": settings.sasl_username,
        "sasl_plain_password": settings.sasl_password.get_secret_value(),
    }
    if settings.security_protocol == "SASL_SSL":
        options["ssl_context"] = create_ssl_context(cafile=settings.ssl_cafile)
    elif settings.ssl_cafile is not None:
        raise ConfigurationError("NEXANEST_KAFKA__SSL_CAFILE is used only with security_protocol SASL_SSL")
    return options


def connection_options(settings: KafkaSettings, client_suffix: str) -> dict[str, Any]:
    """Where and as whom every client connects: bootstrap servers, client id,
    request timeout and ``security_options``. Callers add their role's options."""
    return {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": f"{settings.client_id}-{client_suffix}",
        "request_timeout_ms": settings.request_timeout_ms,
        **security_options(settings),
    }


def make_admin(
    settings: KafkaSettings, *, client_suffix: str = "admin", request_timeout_ms: int | None = None
) -> AIOKafkaAdminClient:
    """An admin client (topic metadata, offsets, group lag; topic creation only
    where the principal may create)."""
    options = connection_options(settings, client_suffix)
    if request_timeout_ms is not None:
        options["request_timeout_ms"] = request_timeout_ms
    return AIOKafkaAdminClient(**options)


async def start_client(client: KafkaClient, settings: KafkaSettings) -> None:
    """``client.start()``; when the brokers cannot be reached, find out whether
    they refused this client and raise ``ConfigurationError`` saying why (wrong
    user or password, an unauthenticated client at a SASL listener, a mechanism
    the broker lacks); a start the ACLs deny (a consumer's group) raises it too.
    Any other failure is re-raised as it came."""
    try:
        await client.start()
    except _DENIED as exc:
        with contextlib.suppress(KafkaError, OSError):
            await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
        raise ConfigurationError(
            f"Kafka denies user {settings.sasl_username!r}: {exc}; the cluster's admin grants it"
            " (deploy/local/kafka-cluster.sh grant, or the chart's KafkaUser ACLs)"
        ) from exc
    except KafkaConnectionError as exc:
        reason = await refusal(settings)
        if reason is None:
            raise
        with contextlib.suppress(KafkaError, OSError):
            await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
        raise ConfigurationError(reason) from exc


async def refusal(settings: KafkaSettings) -> str | None:
    """Why the first reachable bootstrap broker refuses to serve a client with
    these settings, or None if it serves one (or none is reachable: not a matter
    of credentials). One connection per broker tried, closed again."""
    security = security_options(settings)
    for server in settings.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            conn = await create_conn(
                host, int(port), request_timeout_ms=min(settings.request_timeout_ms, 10_000), **security
            )
        except SaslAuthenticationFailed as exc:
            return (
                f"Kafka at {server}: SASL authentication failed for user {settings.sasl_username!r}"
                f" ({settings.sasl_mechanism}): {exc}; check NEXANEST_KAFKA__SASL_USERNAME and"
                " NEXANEST_KAFKA__SASL_PASSWORD"
            )
        except UnsupportedSaslMechanismError as exc:
            return f"Kafka at {server}: {exc}; set NEXANEST_KAFKA__SASL_MECHANISM"
        except (OSError, KafkaError, TimeoutError):
            continue
        try:
            await conn.send(MetadataRequest([]))
        except KafkaConnectionError:
            if settings.security_protocol == "PLAINTEXT":
                return (
                    f"Kafka at {server} closed the connection of an unauthenticated (PLAINTEXT) client:"
                    " the listener wants SASL; set NEXANEST_KAFKA__SECURITY_PROTOCOL, _SASL_USERNAME"
                    " and _SASL_PASSWORD"
                )
            continue
        except (KafkaError, TimeoutError):
            continue
        finally:
            conn.close()
        return None
    return None


def make_producer(settings: KafkaSettings, *, client_suffix: str = "producer") -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **connection_options(settings, client_suffix),
        enable_idempotence=True,
        acks="all",
        linger_ms=settings.linger_ms,
        max_batch_size=settings.max_batch_bytes,
        compression_type=None if settings.compression == "none" else settings.compression,
    )


def consumer_options(settings: KafkaSettings, client_suffix: str) -> dict[str, Any]:
    """What every consumer of the pipeline shares: no auto-commit, committed
    transactions only, bounded fetches. Callers add their group."""
    return {
        **connection_options(settings, client_suffix),
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "fetch_max_bytes": settings.fetch_max_bytes,
        "max_partition_fetch_bytes": settings.max_partition_fetch_bytes,
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
    admin = make_admin(settings)
    await start_client(admin, settings)
    try:
        # With ACLs, a principal lists only the topics it may describe: those it uses.
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            response = await admin.create_topics(missing)
            # aiokafka reports per-topic errors in the response instead of raising.
            for name, code, *rest in response.topic_errors:
                if code == TopicAuthorizationFailedError.errno:
                    raise ConfigurationError(
                        f"Kafka topic {name!r} is missing or not granted to user {settings.sasl_username!r},"
                        " who may not create it: the cluster's admin creates the topics and grants them"
                        " (deploy/local/kafka-cluster.sh grant)"
                    )
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
