"""Settings groups of the pipeline's own processes: batching, validation, the
consumer and the quote fast path, market indices, retries, the exchange feeds,
system events, retention, metrics ports and logging. Part of the one
``Settings`` object (``pipeline/settings.py``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
    and Prometheus can scrape each (README "Metrics" has the table). 9111-9119 are
    reserved for the project's other processes; the HTTP services serve their
    ``/metrics`` on their own HTTP port. ``port``, when set, replaces all three
    (one process on a port chosen by hand; ``0`` disables the HTTP server).
    Prometheus finds each process through the file it writes into ``targets_dir``
    while it runs, so only what runs is a target.
    """

    host: str = "127.0.0.1"
    consumer_port: int = Field(default=9108, ge=0, le=65535)  # nexanest consume
    producer_port: int = Field(default=9109, ge=0, le=65535)  # nexanest produce
    run_port: int = Field(default=9110, ge=0, le=65535)  # nexanest run: producer and consumer in one process
    quotes_port: int = Field(default=9107, ge=0, le=65535)  # nexanest quotes: the quote fast path
    #: Overrides the component's port for whichever command runs; 0 disables the HTTP server.
    port: int | None = Field(default=None, ge=0, le=65535)
    #: Where a running process announces its endpoint to Prometheus (file_sd files,
    #: ``pipeline/targets.py``); empty announces nothing. ``deploy/local/env.sh`` sets it to
    #: the directory the local Prometheus reads; tests and benchmarks leave it empty.
    targets_dir: str = ""

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


class LogSettings(BaseModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    json_output: bool = Field(default=False, alias="json")
