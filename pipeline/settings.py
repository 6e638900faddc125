"""The one configuration object of the pipeline.

Every address, credential, topic name, batch size and timeout lives here and is
read from ``NEXANEST_*`` environment variables (nested groups with ``__``, so the
batch size is ``NEXANEST_BATCH__MAX_ROWS``) or from the git-ignored ``.env`` that
``deploy/local/env.sh`` generates. Entrypoints build it once and hand each
component its sub-model; library code never reads the environment.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nexanest.pipeline.errors import ConfigurationError

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


class BatchSettings(BaseModel):
    #: Most records written in one COPY transaction. A batch is whatever arrived
    #: while the previous one was written, so this cap binds only at saturation,
    #: where larger batches spread the per-transaction cost (rollups, offsets,
    #: commit) over more rows: 20,000 ingested 15% faster than 5,000 end to end
    #: (the former benchmarks/e2e_throughput.py, now `make bench-throughput`; two runs each, side by side). At most two
    #: batches are in memory (a few MB each).
    max_rows: int = Field(default=20_000, ge=1)
    #: Most records of the first batch after start: with a backlog waiting, the
    #: first rows are stored within moments instead of after a full batch's COPY,
    #: and the batches after it grow to ``max_rows`` as usual.
    first_rows: int = Field(default=1_000, ge=1)
    #: Longest a fetch waits for records before writing what it has.
    max_wait_ms: int = Field(default=100, ge=1)


class ValidationSettings(BaseModel):
    """Rules a tick must pass to be ingested; a failing tick goes to the DLQ."""

    symbol_pattern: str = r"^[A-Z0-9][A-Z0-9._:/-]{0,31}$"
    #: When set, only these symbols are accepted (others: ``unknown_symbol``).
    #: As an environment variable, a JSON list: ``'["AAPL","MSFT"]'``.
    known_symbols: list[str] | None = None
    max_future_s: float = Field(default=5.0, ge=0)
    max_past_s: float = Field(default=7 * 24 * 3600.0, ge=0)
    max_message_bytes: int = Field(default=4096, ge=64)


class ConsumerSettings(BaseModel):
    #: Store offsets in TimescaleDB with each batch and fence stale writers. Off
    #: means plain commit-after-write to Kafka (at-least-once); only benchmarks
    #: that measure what exactly-once costs should turn it off.
    exactly_once: bool = True
    #: On start, re-apply the latest stored tick of each symbol seen in this
    #: window to its Redis quote (covers a Redis that lost its last writes).
    quote_rebuild_window_s: float = Field(default=300.0, ge=0)
    #: Who keeps the OHLCV bars (views ohlcv_1m/5m/1h/1d) current: ``pipeline``
    #: merges each batch into rollup tables in the COPY transaction (the Apache
    #: edition), ``native`` leaves it to continuous aggregates (the community
    #: edition), ``auto`` picks by the license the consumer finds at start, and
    #: ``off`` writes no bars (benchmarks, or a bulk load followed by
    #: ``nexanest bars repair``).
    rollups: Literal["auto", "pipeline", "native", "off"] = "auto"
    #: Market indices start from the latest stored tick of each constituent in
    #: this window (a constituent with none waits for its next tick).
    index_seed_window_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    #: At most this often, re-read constituents' latest stored prices before an
    #: index is computed: with several consumers in the group, each sees only
    #: the ticks of its own partitions. 0: never (one consumer per group).
    index_refresh_s: float = Field(default=5.0, ge=0)
    #: Whether this consumer also writes the quotes of the ticks it takes (before
    #: their batch is written: a quote is then never behind the table). Leave it on
    #: beside the quote fast path (``nexanest quotes``): both writers are harmless
    #: together, the quote script only moves forward in tick time. Off, the fast path
    #: alone keeps quotes, and a stopped one leaves them stale.
    inline_quotes: bool = True


class QuotesSettings(BaseModel):
    """The quote fast path, ``nexanest quotes`` (``consumers/ticks_to_quotes.py``):
    a process and consumer group of its own that only decodes, validates and
    writes quotes, so that they never wait behind the consumer's COPY work."""

    #: Its consumer group is ``<kafka.consumer_group><group_suffix>``.
    group_suffix: str = ".quotes"
    #: Most records taken per Redis round trip: small fetches keep a tick's wait for
    #: the ones before it short; under a backlog each round trip carries this many.
    max_records: int = Field(default=2_000, ge=1)
    #: The broker's longest wait for a fetch with no data (a fetch returns as soon
    #: as any record is there); short so that an idle fast path answers at once.
    fetch_max_wait_ms: int = Field(default=20, ge=0)


class IndexDefinition(BaseModel):
    """A market index the consumer computes from the latest price of each
    constituent (``pipeline/sinks/indices.py``), stored in ``market_indices``
    and quoted in Redis as ``quote:<name>`` like a symbol.

    - ``price_weighted``: ``sum(price) / divisor`` (divisor: the number of
      constituents unless given, i.e. their average price);
    - ``equal_weight``: ``base_value * mean(price / base_price)``, so the index
      is ``base_value`` when every constituent is at its base price.
    """

    model_config = ConfigDict(frozen=True)

    #: Also its Redis quote key, so it must not be a traded symbol.
    name: str = Field(pattern=r"^[A-Z0-9][A-Z0-9._:/-]{0,31}$")
    method: Literal["equal_weight", "price_weighted"]
    symbols: list[str] = Field(min_length=1)
    divisor: Decimal | None = Field(default=None, gt=0)
    base_value: Decimal = Field(default=Decimal(100), gt=0)
    base_prices: dict[str, Decimal] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> IndexDefinition:
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError(f"index {self.name}: a symbol is listed twice")
        if self.name in self.symbols:
            raise ValueError(f"index {self.name}: an index cannot be its own constituent")
        if self.method == "equal_weight":
            if self.divisor is not None:
                raise ValueError(f"index {self.name}: divisor is for price_weighted; equal_weight uses base_prices")
            base = self.base_prices or {}
            if set(base) != set(self.symbols) or any(p <= 0 for p in base.values()):
                raise ValueError(f"index {self.name}: equal_weight needs a positive base price for each symbol")
        elif self.base_prices is not None:
            raise ValueError(f"index {self.name}: base_prices is for equal_weight; price_weighted uses divisor")
        return self


class RetrySettings(BaseModel):
    initial_backoff_s: float = Field(default=0.2, gt=0)
    max_backoff_s: float = Field(default=10.0, gt=0)


class VenueSettings(BaseModel):
    """The exchange websocket feeds (``producers/feeds/binance.py``, ``coinbase.py``);
    ``nexanest feed run binance --url ...`` overrides the URL for one run."""

    binance_url: str = "wss://stream.binance.com:9443"
    #: Binance ends a connection after 24 hours: reconnect on our terms before that.
    binance_max_connection_age_s: float = Field(default=23.5 * 3600, gt=0)
    coinbase_url: str = "wss://ws-feed.exchange.coinbase.com"
    #: Coinbase sends a heartbeat per product every second: this much silence means a dead connection.
    coinbase_idle_timeout_s: float = Field(default=10.0, gt=0)
    open_timeout_s: float = Field(default=10.0, gt=0)
    #: Our keepalive pings; a pong later than the timeout ends the connection (then a reconnect).
    ping_interval_s: float = Field(default=20.0, gt=0)
    ping_timeout_s: float = Field(default=20.0, gt=0)


class EventsSettings(BaseModel):
    """When the consumer reports trouble as a system event (``pipeline/events.py``)."""

    #: A batch that dead-letters more than this many messages emits ``dlq_burst``.
    dlq_burst_messages: int = Field(default=100, ge=0)
    #: Total lag over the consumer's partitions above this emits ``lag_high``, once
    #: per crossing; falling to ``lag_recovered_ratio`` of it emits ``lag_recovered``.
    lag_high_messages: int = Field(default=100_000, ge=1)
    lag_recovered_ratio: float = Field(default=0.5, gt=0, le=1)


class RetentionSettings(BaseModel):
    """How long `nexanest maintain` keeps each kind of data, in days; 0 keeps it
    forever. Whole chunks go once all their rows are older (``drop_chunks``)."""

    raw_ticks_days: float = Field(default=30.0, ge=0)  # stock_prices
    bars_1m_days: float = Field(default=365.0, ge=0)
    bars_5m_days: float = Field(default=0.0, ge=0)
    bars_1h_days: float = Field(default=0.0, ge=0)
    bars_1d_days: float = Field(default=0.0, ge=0)
    system_events_days: float = Field(default=90.0, ge=0)
    market_indices_days: float = Field(default=365.0, ge=0)
    #: Community edition only: compress stock_prices chunks older than this (0: never).
    #: Kept above validation.max_past_s (7 days), so late ticks land in uncompressed chunks.
    compress_ticks_after_days: float = Field(default=8.0, ge=0)


#: The commands that serve Prometheus metrics, each on a port of its own.
MetricsComponent = Literal["consumer", "producer", "run", "quotes"]


class MetricsSettings(BaseModel):
    """Where each process of the pipeline serves Prometheus ``/metrics``.

    Every component has a default port of its own, so that ``nexanest consume``,
    ``nexanest produce`` and ``nexanest run`` can run side by side on one machine
    and Prometheus can scrape each (``deploy/local/prometheus.sh`` generates its
    targets from the same map; README "Metrics" has the table). 9111-9119 are
    reserved for the project's other processes; the HTTP services serve their
    ``/metrics`` on their own HTTP port. ``port``, when set, replaces all three
    (one process on a port chosen by hand; ``0`` disables the HTTP server).
    """

    host: str = "127.0.0.1"
    consumer_port: int = Field(default=9108, ge=0, le=65535)  # nexanest consume
    producer_port: int = Field(default=9109, ge=0, le=65535)  # nexanest produce
    run_port: int = Field(default=9110, ge=0, le=65535)  # nexanest run: producer and consumer in one process
    quotes_port: int = Field(default=9107, ge=0, le=65535)  # nexanest quotes: the quote fast path
    #: Overrides the component's port for whichever command runs; 0 disables the HTTP server.
    port: int | None = Field(default=None, ge=0, le=65535)

    @model_validator(mode="after")
    def _distinct_ports(self) -> MetricsSettings:
        ports = [p for p in (self.consumer_port, self.producer_port, self.run_port, self.quotes_port) if p]
        if len(set(ports)) != len(ports):
            raise ValueError("the consumer, producer, run and quotes metrics ports must differ (or be 0)")
        return self

    def port_for(self, component: MetricsComponent) -> int:
        """The port ``component`` serves on (0: none)."""
        if self.port is not None:
            return self.port
        ports = {"consumer": self.consumer_port, "producer": self.producer_port, "run": self.run_port}
        return (ports | {"quotes": self.quotes_port})[component]

    def setting_for(self, component: MetricsComponent) -> str:
        """The environment variable that sets ``component``'s port (for messages)."""
        return "NEXANEST_METRICS__PORT" if self.port is not None else f"NEXANEST_METRICS__{component.upper()}_PORT"


class AlertingSettings(BaseModel):
    """Where Alertmanager posts the alerts Prometheus fires. Read by
    ``deploy/local/prometheus.sh`` (from the environment or ``.env``, like every
    ``NEXANEST_*``) when it writes Alertmanager's configuration: each receiver of
    the route tree (``critical``, ``warning``) posts Alertmanager's webhook JSON
    there. It is the hook for the notifications service's receiver; unset, alerts
    are only listed by Alertmanager (``amtool alert query``)."""

    #: ``NEXANEST_ALERTING__WEBHOOK_URL``; secret because a URL may carry a token.
    webhook_url: SecretStr | None = None


class LogSettings(BaseModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    json_output: bool = Field(default=False, alias="json")


class NotificationsSettings(BaseModel):
    """The notifications service (``services/notifications/``): its Redis keys, its
    evaluator and delivery worker, and webhook delivery (``NEXANEST_NOTIFICATIONS__*``)."""

    #: Prefix of its Redis keys (queue, processing lists, retries, worker heartbeats, in
    #: ``redis.db_notifications``) and of its pub/sub channel of alert changes.
    key_prefix: str = "notifications:"
    #: Seals the webhook signing secrets stored in the database (AES-256-GCM): 64 hex
    #: digits. Unset: derived from ``services.token_secret`` (then rotating that secret
    #: makes the stored webhook secrets unreadable: endpoints must be made again).
    secret_key: SecretStr | None = None
    #: ``nexanest serve notifications`` runs the alert evaluator and the delivery worker
    #: itself; ``nexanest serve notifications-worker`` runs the worker alone.
    evaluator_in_service: bool = True
    worker_in_service: bool = True
    #: Deliveries one worker process makes at once.
    worker_concurrency: int = Field(default=4, ge=1, le=64)
    #: A worker refreshes its heartbeat this often; a processing list whose worker
    #: missed three is put back on the queue by another (or the next) worker.
    worker_heartbeat_s: float = Field(default=5.0, gt=0, le=300)
    #: The evaluator re-reads every enabled alert this often, besides the change messages.
    index_refresh_s: float = Field(default=60.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=120)
    #: Allow webhook URLs on loopback, private or link-local addresses (a local
    #: receiver in development); off, they are refused (``destinations.py``).
    webhook_allow_private: bool = False
    #: Attempts of one webhook delivery before it is given up (``failed``).
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    #: An endpoint whose deliveries failed this many times in a row is disabled and its
    #: owner told in the inbox.
    webhook_disable_after_failures: int = Field(default=20, ge=1, le=10_000)
    #: Retry delays: exponential from the first, capped, jittered (``pipeline/retry.py``).
    retry_initial_s: float = Field(default=5.0, gt=0)
    retry_max_s: float = Field(default=3600.0, gt=0)
    #: Alerts one user may have.
    max_alerts_per_user: int = Field(default=200, ge=1, le=10_000)
    max_webhooks_per_user: int = Field(default=10, ge=1, le=100)
    #: The worker follows the system events topic and sends these types to the admins
    #: subscribed to operational alerts (empty: it does not follow the topic).
    ops_event_types: list[str] = Field(default_factory=lambda: ["dlq_burst", "lag_high", "batch_failed", "error"])


class ServicesSettings(BaseModel):
    """The HTTP services (``services/``): where they listen, and their access tokens.

    Ports are the seed's. The token secret signs the access tokens the services
    accept (``services/tokens.py``); ``deploy/local/env.sh`` writes a random one
    into a new ``.env``. It has no default: an older ``.env`` without it still
    serves the pipeline, and only a service refuses to start
    (``token_secret_or_raise``). Nothing here is validated as a whole: pydantic's
    errors would quote the group's input, secret included."""

    host: str = "127.0.0.1"
    auth_port: int = Field(default=8001, ge=1, le=65535)
    portfolio_port: int = Field(default=8002, ge=1, le=65535)
    market_data_port: int = Field(default=8003, ge=1, le=65535)
    notifications_port: int = Field(default=8004, ge=1, le=65535)
    analytics_port: int = Field(default=8005, ge=1, le=65535)
    #: HMAC-SHA256 key of the access tokens; at least 32 characters (env.sh: 64 hex digits).
    token_secret: SecretStr | None = None
    #: How long an access token is accepted after it was issued. Lowering it also
    #: shortens tokens already issued: a token whose expiry lies further ahead is refused.
    token_lifetime_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    #: A session (``services/sessions.py``) ends after this long without a request.
    session_idle_s: int = Field(default=30 * 60, ge=60, le=7 * 24 * 3600)
    #: ... and this long after the login, however busy it is: a stolen token is
    #: good for at most this long. A session never outlives either.
    session_absolute_s: int = Field(default=12 * 3600, ge=300, le=30 * 24 * 3600)
    #: Failed logins (``services/auth/throttle.py``) counted per account and per
    #: client address within a window; past a limit, logins answer 429 until the
    #: window ends. The address limit is higher: many users may share one address.
    login_failures_per_account: int = Field(default=5, ge=1, le=1000)
    login_failures_per_address: int = Field(default=50, ge=1, le=100_000)
    login_failure_window_s: int = Field(default=15 * 60, ge=1, le=24 * 3600)
    #: Each service connects as a login role of its own that owns nothing, so
    #: that the row-level security of its tables binds it (deploy/local creates
    #: the roles; the owner roles of ``postgres``/``timescale`` only migrate).
    auth_dsn: SecretStr = SecretStr("postgresql://nexanest_auth@127.0.0.1:5432/auth")
    portfolio_dsn: SecretStr = SecretStr("postgresql://nexanest_portfolio@127.0.0.1:5432/portfolio")
    #: The portfolio service's role on TimescaleDB, where the snapshots are.
    portfolio_snapshots_dsn: SecretStr = SecretStr("postgresql://nexanest_portfolio@127.0.0.1:5433/timescale")
    #: Read-only: SELECT on the market data tables and nothing else.
    market_data_dsn: SecretStr = SecretStr("postgresql://nexanest_market_data@127.0.0.1:5433/timescale")
    #: The analytics service: its saved reports on PostgreSQL, and on TimescaleDB
    #: it reads the bars and snapshots and writes ``analytics_metrics``.
    analytics_dsn: SecretStr = SecretStr("postgresql://nexanest_analytics@127.0.0.1:5432/analytics")
    analytics_timescale_dsn: SecretStr = SecretStr("postgresql://nexanest_analytics@127.0.0.1:5433/timescale")
    #: The notification service: alerts, inbox, webhooks and deliveries.
    notifications_dsn: SecretStr = SecretStr("postgresql://nexanest_notifications@127.0.0.1:5432/notifications")
    pool_max_size: int = Field(default=8, ge=1)
    #: Request bodies over this many bytes are refused with 413 (``services/problems.py``).
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    #: Portfolio valuation: a quote whose tick is older than this is reported as
    #: stale, with its age, and its price is not used.
    portfolio_quote_max_age_s: float = Field(default=60.0, gt=0)
    #: How long a portfolio's valuation stays cached in Redis (``redis.db_portfolio``);
    #: a new transaction invalidates it at once. 0: no cache.
    portfolio_valuation_cache_s: float = Field(default=2.0, ge=0, le=300)
    #: The snapshot worker values every portfolio this often, at times aligned to it.
    portfolio_snapshot_interval_s: float = Field(default=60.0, ge=1, le=24 * 3600)
    #: The portfolio service runs the snapshot worker itself (a second worker,
    #: ``nexanest serve portfolio-snapshots``, writes the same snapshots once).
    portfolio_snapshots_in_service: bool = True
    #: Portfolios one user may have (bounds ``GET /portfolios``).
    portfolio_max_per_user: int = Field(default=100, ge=1, le=10_000)
    # --- analytics (services/analytics/) ---
    #: Annual risk-free rate of the Sharpe ratio, as a fraction (0.04 is 4 %).
    analytics_risk_free_rate: float = Field(default=0.0, ge=-0.5, le=1.0)
    #: The market index (a name of ``NEXANEST_INDICES``, stored in ``market_indices``)
    #: that portfolio betas are measured against; None: no beta.
    analytics_benchmark_index: str | None = Field(default=None, pattern=r"^[A-Z0-9][A-Z0-9._:/-]{0,31}$")
    #: The analytics worker computes every metric this often, at times aligned to it.
    analytics_interval_s: float = Field(default=300.0, ge=5, le=24 * 3600)
    #: The analytics service runs the worker itself (``nexanest serve analytics-worker``
    #: runs it alone; two workers write each round's rows once).
    analytics_worker_in_service: bool = True
    #: Symbols the worker covers per round: those with bars in the last day, at most this many.
    analytics_max_symbols: int = Field(default=500, ge=1, le=100_000)
    #: Prefix of the latest metrics cached in Redis ``db_analytics`` (beside the bar cache's ``bar:``).
    analytics_cache_prefix: str = Field(default="analytics:", min_length=1, max_length=64)
    #: Scheduled saved reports the worker runs per round, at most (the longest waiting
    #: first; the rest wait for the next round).
    analytics_reports_per_round: int = Field(default=200, ge=1, le=100_000)

    def dsns(self) -> dict[str, SecretStr]:
        """The DSN of each service role, by setting name."""
        return {
            "auth_dsn": self.auth_dsn,
            "portfolio_dsn": self.portfolio_dsn,
            "portfolio_snapshots_dsn": self.portfolio_snapshots_dsn,
            "market_data_dsn": self.market_data_dsn,
            "analytics_dsn": self.analytics_dsn,
            "analytics_timescale_dsn": self.analytics_timescale_dsn,
            "notifications_dsn": self.notifications_dsn,
        }

    def notifications_auth_dsn(self) -> SecretStr:
        """The notifications service's role on the auth database, where it asks which
        subscribers to operational alerts are admins now (auth/0003): the user,
        password, host and options of ``notifications_dsn`` with the database of
        ``auth_dsn``. Derived, not set: both databases are on one PostgreSQL server
        (the seed's layout), so a deployment needs no further secret."""
        notifications = urlsplit(self.notifications_dsn.get_secret_value())
        database = urlsplit(self.auth_dsn.get_secret_value()).path
        return SecretStr(urlunsplit(notifications._replace(path=database)))

    def ports(self) -> dict[str, int]:
        """The port of each service, by its name in ``nexanest serve``."""
        return {
            "auth": self.auth_port,
            "portfolio": self.portfolio_port,
            "market-data": self.market_data_port,
            "notifications": self.notifications_port,
            "analytics": self.analytics_port,
        }

    def token_secret_or_raise(self) -> SecretStr:
        """The token secret; raises ``ConfigurationError`` saying how to set it when it
        is missing (a ``.env`` written before the services existed) or too short."""
        how = (
            "add a line NEXANEST_SERVICES__TOKEN_SECRET=<at least 32 random characters> to .env "
            "(e.g. from `openssl rand -hex 32`), or set it in the environment"
        )
        if self.token_secret is None:
            raise ConfigurationError(
                "NEXANEST_SERVICES__TOKEN_SECRET is not set (a .env written before the services existed "
                f"lacks it): {how}"
            )
        if len(self.token_secret.get_secret_value()) < 32:  # never echo it, nor its length
            raise ConfigurationError(f"NEXANEST_SERVICES__TOKEN_SECRET is too short: {how}")
        return self.token_secret


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NEXANEST_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    kafka: KafkaSettings = KafkaSettings()
    timescale: TimescaleSettings = TimescaleSettings()
    postgres: PostgresSettings = PostgresSettings()
    redis: RedisSettings = RedisSettings()
    batch: BatchSettings = BatchSettings()
    validation: ValidationSettings = ValidationSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    quotes: QuotesSettings = QuotesSettings()
    retry: RetrySettings = RetrySettings()
    venues: VenueSettings = VenueSettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    events: EventsSettings = EventsSettings()
    retention: RetentionSettings = RetentionSettings()
    services: ServicesSettings = ServicesSettings()
    notifications: NotificationsSettings = NotificationsSettings()
    alerting: AlertingSettings = AlertingSettings()
    #: Market indices (``NEXANEST_INDICES``, a JSON list of IndexDefinition objects).
    indices: list[IndexDefinition] = Field(default_factory=list)
    #: Where `db-backup` and friends write; relative paths are from the working directory.
    backup_dir: Path = Path("backups")
    #: Where `nexanest feed run replay` keeps one checkpoint per file (NEXANEST_FEED_STATE_DIR).
    feed_state_dir: Path = Path(".nexanest/feeds")
    #: Where `nexanest status` finds Prometheus (deploy/local/prometheus.sh); empty: not configured.
    prometheus_url: str = "http://127.0.0.1:9090"
    #: Where `nexanest status` finds Alertmanager (deploy/local/prometheus.sh starts it on 9095,
    #: not its usual 9093: the local Kafka controller has that); empty: not configured.
    alertmanager_url: str = "http://127.0.0.1:9095"

    @model_validator(mode="after")
    def _unique_index_names(self) -> Settings:
        names = [d.name for d in self.indices]
        if len(set(names)) != len(names):
            raise ValueError("two indices share a name")
        return self


def load_settings(env_file: Path | None = None) -> Settings:
    """Build the settings from the environment and ``env_file`` (default ``.env``)."""
    if env_file is None:
        return Settings()
    return Settings(_env_file=env_file)  # type: ignore[call-arg]


def namespaced(settings: Settings, namespace: str, **consumer: object) -> Settings:
    """A copy of ``settings`` with topics, consumer groups and Redis quote and bar keys of
    its own (``<namespace>.ticks``, ``<namespace>.ticks.dlq``, ...), and no metrics
    HTTP server: for tests, benchmarks and side-by-side runs that share one stack
    but must not see each other's data. ``consumer`` overrides ConsumerSettings."""
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={
                    "ticks_topic": f"{namespace}.ticks",
                    "dead_letter_topic": f"{namespace}.ticks.dlq",
                    "events_topic": f"{namespace}.events",
                    "backfill_topic": f"{namespace}.ticks.backfill",
                    "consumer_group": namespace,
                    "dlq_replay_group": f"{namespace}.dlq-replay",
                }
            ),
            "redis": settings.redis.model_copy(
                update={"quote_key_prefix": f"{namespace}:quote:", "bar_key_prefix": f"{namespace}:bar:"}
            ),
            "metrics": settings.metrics.model_copy(update={"port": 0}),
            "consumer": settings.consumer.model_copy(update=consumer),
        }
    )


def separate_databases(settings: Settings, *, suffix: str = "_test", redis_db_offset: int = 10) -> Settings:
    """A copy of ``settings`` that stores nothing where ``settings`` does: the
    TimescaleDB and service databases become ``<name><suffix>`` on the same
    servers with the same roles (the service roles' DSNs too), and each Redis database moves up by
    ``redis_db_offset`` (0-4 become 10-14, inside the unallocated 5-15). The test
    suite runs on it, so that running the tests leaves the user's data as it was.

    Nothing is created here: ``deploy/local`` creates the ``_test`` databases
    with the same roles, grants and extension as the real ones. Raises
    ``ValueError`` when a DSN names no database, when the Redis URL pins a
    database (redis-py lets the URL's win over the one asked for, which would
    put both on one), or when a moved Redis database falls outside 0-15.
    """
    r = settings.redis
    if urlsplit(r.url.get_secret_value()).path.strip("/"):
        raise ValueError("the Redis URL names a database; set NEXANEST_REDIS__DB_* instead")
    moved = {
        name: getattr(r, name) + redis_db_offset
        for name in ("db_sessions", "db_portfolio", "db_quotes", "db_analytics", "db_notifications")
    }
    if not all(0 <= db <= 15 for db in moved.values()):
        raise ValueError(f"Redis databases {sorted(moved.values())} are not all within 0-15")
    ts, pg, sv = settings.timescale, settings.postgres, settings.services
    return settings.model_copy(
        update={
            "timescale": ts.model_copy(
                update={
                    "dsn": _database_suffixed(ts.dsn, suffix),
                    "admin_dsn": _database_suffixed(ts.admin_dsn, suffix),
                }
            ),
            "postgres": pg.model_copy(
                update={f"{name}_dsn": _database_suffixed(dsn, suffix) for name, dsn in pg.dsns().items()}
            ),
            "services": sv.model_copy(
                update={name: _database_suffixed(dsn, suffix) for name, dsn in sv.dsns().items()}
            ),
            "redis": r.model_copy(update=moved),
        }
    )


def _database_suffixed(dsn: SecretStr, suffix: str) -> SecretStr:
    parts = urlsplit(dsn.get_secret_value())
    database = parts.path.strip("/")
    if not database:
        # Never echo the DSN: it carries the password.
        raise ValueError(f"a PostgreSQL DSN for host {parts.hostname!r} names no database")
    return SecretStr(urlunsplit(parts._replace(path=f"/{database}{suffix}")))


def namespace_environment(settings: Settings) -> dict[str, str]:
    """The ``NEXANEST_*`` variables that give a child ``nexanest`` process the same
    topics, consumer groups, databases, Redis databases and quote keys and consumer
    options as ``settings``. Environment variables win over the child's ``.env``,
    so a child of a test (given ``separate_databases``) never reaches the user's
    data. The values include DSNs with passwords: pass them in a child's
    environment (private to its user), never on its command line."""
    k, c, r = settings.kafka, settings.consumer, settings.redis
    pg = settings.postgres
    return {
        "NEXANEST_KAFKA__TICKS_TOPIC": k.ticks_topic,
        "NEXANEST_KAFKA__DEAD_LETTER_TOPIC": k.dead_letter_topic,
        "NEXANEST_KAFKA__EVENTS_TOPIC": k.events_topic,
        "NEXANEST_KAFKA__BACKFILL_TOPIC": k.backfill_topic,
        "NEXANEST_KAFKA__CONSUMER_GROUP": k.consumer_group,
        "NEXANEST_KAFKA__DLQ_REPLAY_GROUP": k.dlq_replay_group,
        "NEXANEST_TIMESCALE__DSN": settings.timescale.dsn.get_secret_value(),
        "NEXANEST_TIMESCALE__ADMIN_DSN": settings.timescale.admin_dsn.get_secret_value(),
        "NEXANEST_POSTGRES__AUTH_DSN": pg.auth_dsn.get_secret_value(),
        "NEXANEST_POSTGRES__PORTFOLIO_DSN": pg.portfolio_dsn.get_secret_value(),
        "NEXANEST_POSTGRES__ANALYTICS_DSN": pg.analytics_dsn.get_secret_value(),
        "NEXANEST_POSTGRES__NOTIFICATIONS_DSN": pg.notifications_dsn.get_secret_value(),
        **{
            f"NEXANEST_SERVICES__{name.upper()}": dsn.get_secret_value()
            for name, dsn in settings.services.dsns().items()
        },
        "NEXANEST_REDIS__DB_SESSIONS": str(r.db_sessions),
        "NEXANEST_REDIS__DB_PORTFOLIO": str(r.db_portfolio),
        "NEXANEST_REDIS__DB_QUOTES": str(r.db_quotes),
        "NEXANEST_REDIS__DB_ANALYTICS": str(r.db_analytics),
        "NEXANEST_REDIS__DB_NOTIFICATIONS": str(r.db_notifications),
        "NEXANEST_REDIS__QUOTE_KEY_PREFIX": r.quote_key_prefix,
        "NEXANEST_REDIS__BAR_KEY_PREFIX": r.bar_key_prefix,
        **_metrics_ports(settings.metrics),
        "NEXANEST_CONSUMER__QUOTE_REBUILD_WINDOW_S": str(c.quote_rebuild_window_s),
    }


def _metrics_ports(m: MetricsSettings) -> dict[str, str]:
    ports = {
        "NEXANEST_METRICS__CONSUMER_PORT": str(m.consumer_port),
        "NEXANEST_METRICS__PRODUCER_PORT": str(m.producer_port),
        "NEXANEST_METRICS__RUN_PORT": str(m.run_port),
        "NEXANEST_METRICS__QUOTES_PORT": str(m.quotes_port),
    }
    if m.port is not None:
        ports["NEXANEST_METRICS__PORT"] = str(m.port)
    return ports
