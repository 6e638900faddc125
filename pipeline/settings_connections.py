"""Settings groups: how the pipeline reaches Kafka, TimescaleDB, PostgreSQL and
Redis (``NEXANEST_KAFKA__*``, ``NEXANEST_TIMESCALE__*``, ``NEXANEST_POSTGRES__*``,
``NEXANEST_REDIS__*``). Part of the one ``Settings`` object (``pipeline/settings.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

_DEFAULT_DSN = SecretStr("postgresql://localhost:5433/timescale")


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "nexanest"
    ticks_topic: str = "ticks"
    dead_letter_topic: str = "ticks.dlq"
    events_topic: str = "system_events"
    #: Historical ticks (``nexanest feed run replay``): read by the same consumer
    #: in a loop and group of its own, without the ``stale_timestamp`` rule.
    backfill_topic: str = "ticks.backfill"
    #: Partitions for topics the pipeline creates itself; keyed by symbol, so this
    #: bounds how many consumers of one group can share the work.
    partitions: int = Field(default=6, ge=1)
    #: Copies of each partition for topics the pipeline creates itself: 1 on the
    #: single local broker, 3 on a cluster (deploy/local/kafka-cluster.sh), whose
    #: min.insync.replicas=2 then makes an acks=all write survive a dead broker.
    replication_factor: int = Field(default=1, ge=1)
    consumer_group: str = "nexanest-ticks-to-timescale"
    #: Static group membership: a consumer restarted with the same id within
    #: the session timeout gets its partitions back without a rebalance.
    group_instance_id: str | None = None
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    #: Producer batching: a short linger trades ~ms of latency for far fewer requests.
    linger_ms: int = Field(default=5, ge=0)
    max_batch_bytes: int = Field(default=512 * 1024, ge=16 * 1024)
    compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = "lz4"
    request_timeout_ms: int = Field(default=30_000, ge=1_000)
    #: Upper bound for one fetch across partitions; keeps consumer memory bounded.
    fetch_max_bytes: int = Field(default=32 * 1024 * 1024, ge=1024 * 1024)
    max_partition_fetch_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    #: Consumer group of `nexanest dlq replay`: its committed offsets mark the
    #: dead letters already examined, so a second replay re-sends nothing.
    dlq_replay_group: str = "nexanest-dlq-replay"
    #: How clients reach the brokers. PLAINTEXT is the single local broker
    #: (loopback, no authentication); the local cluster (deploy/local/kafka-cluster.sh)
    #: and the chart's Strimzi cluster want SASL_PLAINTEXT or SASL_SSL with SCRAM,
    #: each process as the least-privileged user of its role (README "Kafka security").
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    #: Never logged: pydantic prints ``**********``.
    sasl_password: SecretStr | None = None
    #: PEM bundle of the CA that signed the brokers' certificates (SASL_SSL); unset:
    #: the system's trust store. The combination is checked when a client is made
    #: (``pipeline/kafka.py``), not here: pydantic's error would quote the group's
    #: input, password included.
    ssl_cafile: Path | None = None


class TimescaleSettings(BaseModel):
    #: The ingest role: INSERT/SELECT on the pipeline's tables, nothing else.
    dsn: SecretStr = _DEFAULT_DSN
    #: The owner role, used only by `nexanest migrate`.
    admin_dsn: SecretStr = _DEFAULT_DSN
    pool_min_size: int = Field(default=1, ge=1)
    pool_max_size: int = Field(default=4, ge=1)
    command_timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)


class PostgresSettings(BaseModel):
    """One database per service, as the seed's architecture prescribes."""

    auth_dsn: SecretStr = SecretStr("postgresql://localhost:5432/auth")
    portfolio_dsn: SecretStr = SecretStr("postgresql://localhost:5432/portfolio")
    analytics_dsn: SecretStr = SecretStr("postgresql://localhost:5432/analytics")
    notifications_dsn: SecretStr = SecretStr("postgresql://localhost:5432/notifications")

    def dsns(self) -> dict[str, SecretStr]:
        return {
            "auth": self.auth_dsn,
            "portfolio": self.portfolio_dsn,
            "analytics": self.analytics_dsn,
            "notifications": self.notifications_dsn,
        }


class RedisSettings(BaseModel):
    """Redis connection and the allocation of its 16 logical databases.

    The seed names five uses of Redis; each gets its own database so that a
    FLUSHDB or a key scan in one never touches another. 5-15 are unallocated.
    """

    url: SecretStr = SecretStr("redis://127.0.0.1:6379")
    db_sessions: int = Field(default=0, ge=0, le=15)  # auth service sessions
    db_portfolio: int = Field(default=1, ge=0, le=15)  # portfolio calculations
    db_quotes: int = Field(default=2, ge=0, le=15)  # real-time quotes (this pipeline)
    db_analytics: int = Field(default=3, ge=0, le=15)  # analytics aggregations, bars
    db_notifications: int = Field(default=4, ge=0, le=15)  # notification queues
    quote_key_prefix: str = "quote:"
    bar_key_prefix: str = "bar:"  # latest OHLCV bars, in db_analytics (pipeline rollups only)
    socket_timeout_s: float = Field(default=5.0, gt=0)
