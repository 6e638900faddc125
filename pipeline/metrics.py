"""Every Prometheus metric of the pipeline, declared in one place.

Names follow ``nexanest_<component>_<what>_<unit>``. Components update these
per batch (``inc(n)``, one ``observe`` per batch), never per tick, except the
quote-latency histogram, which is observed once per symbol per batch.

Every label has a bounded set of values (topics, partitions, sinks, the
dead-letter reasons of ``pipeline/validation.py``, resolutions, services,
components and event types), never a symbol or a per-run tag: each value is a
time series Prometheus keeps. ``promtool check metrics`` passes on a scrape of
the consumer (``tests/pipeline/test_metrics.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from nexanest.pipeline.validation import REASONS, REJECTED_BY_DATABASE

REGISTRY = CollectorRegistry(auto_describe=True)


class AgeGauge(Collector):
    """A gauge of "now minus a stored time", computed when Prometheus scrapes:
    the age keeps growing while nothing newer is stored (a stalled consumer),
    which a value set by the consumer itself would not show.

    ``observe`` keeps the newest time per label set; ``forget`` drops label sets
    no longer owned (partitions revoked in a rebalance: another consumer
    reports them). Thread-safe: the event loop writes, the HTTP thread reads.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._name, self._documentation, self._labelnames = name, documentation, tuple(labelnames)
        self._clock = clock
        self._newest: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe(self, labels: tuple[str, ...], time_s: float) -> None:
        """Record that something of ``labels`` as new as ``time_s`` (epoch seconds) is stored."""
        with self._lock:
            if time_s > self._newest.get(labels, float("-inf")):
                self._newest[labels] = time_s

    def forget(self, labels: Iterable[tuple[str, ...]]) -> None:
        """Stop reporting these label sets (partitions another consumer owns now)."""
        with self._lock:
            for one in labels:
                self._newest.pop(one, None)

    def value(self, labels: tuple[str, ...]) -> float | None:
        """The age now, in seconds (None: nothing recorded for ``labels``)."""
        with self._lock:
            newest = self._newest.get(labels)
        return None if newest is None else max(0.0, self._clock() - newest)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self._clock()
        with self._lock:
            newest = list(self._newest.items())
        family = GaugeMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labels, time_s in sorted(newest):
            family.add_metric(labels, max(0.0, now - time_s))
        yield family


# Producer side. Labelled by topic, not by the feed's per-run source tag (a new
# series each run would be a label without bound).
TICKS_PRODUCED = Counter(
    "nexanest_producer_ticks_total", "Ticks handed to Kafka and acknowledged", ["topic"], registry=REGISTRY
)
PRODUCE_ERRORS = Counter(
    "nexanest_producer_errors_total", "Ticks Kafka did not acknowledge", ["topic"], registry=REGISTRY
)

# Feed adapters (producers/observer.py), labelled by the adapter's registry name
# only: never a symbol, a venue instance or a run's source (series without bound).
FEED_TICKS_IN = Counter(
    "nexanest_feed_ticks_in_total", "Normalised ticks a feed adapter yielded", ["adapter"], registry=REGISTRY
)
FEED_PUBLISHED = Counter(
    "nexanest_feed_published_total", "Ticks of a feed adapter acknowledged by Kafka", ["adapter"], registry=REGISTRY
)
FEED_REJECTED = Counter(
    "nexanest_feed_rejected_total",
    "Frames or rows a feed adapter could not turn into ticks",
    ["adapter"],
    registry=REGISTRY,
)
FEED_RECONNECTS = Counter(
    "nexanest_feed_reconnects_total", "Connections a feed adapter made after its first", ["adapter"], registry=REGISTRY
)
FEED_GAPS = Counter(
    "nexanest_feed_gaps_total", "Sequence gaps a feed adapter saw at its venue", ["adapter"], registry=REGISTRY
)
FEED_CONNECTED = Gauge(
    "nexanest_feed_connected", "1 while a feed adapter is connected, else 0", ["adapter"], registry=REGISTRY
)

# Consumer side.
TICKS_CONSUMED = Counter("nexanest_consumer_messages_total", "Messages taken from Kafka", ["topic"], registry=REGISTRY)
TICKS_WRITTEN = Counter("nexanest_sink_rows_written_total", "Rows made durable by a sink", ["sink"], registry=REGISTRY)
#: The ``reason`` label's values: the validation rules, the database's refusal,
#: and ``other`` should a reason outside them ever be given (never expected).
REJECTION_REASONS = (*REASONS, REJECTED_BY_DATABASE, "other")
TICKS_REJECTED = Counter(
    "nexanest_consumer_rejected_total",
    "Messages set aside to the dead-letter topic, by reason",
    ["reason"],
    registry=REGISTRY,
)
for _reason in REJECTION_REASONS:  # every reason from 0: rate() sees the first one
    TICKS_REJECTED.labels(_reason)


def count_rejected(reason: str, n: int = 1) -> None:
    """Count ``n`` dead letters of ``reason`` (an unknown reason counts as ``other``)."""
    TICKS_REJECTED.labels(reason if reason in REJECTION_REASONS else "other").inc(n)


QUOTES_SKIPPED = Counter(
    "nexanest_quotes_skipped_total",
    "Invalid ticks the quote fast path skipped (the consumer dead-letters them)",
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "nexanest_consumer_batch_rows",
    "Messages per consumed batch",
    buckets=(1, 10, 50, 100, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000),
    registry=REGISTRY,
)
FLUSH_SECONDS = Histogram(
    "nexanest_sink_flush_seconds",
    "Time for one sink flush (COPY transaction, Redis round trip)",
    ["sink"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
TICK_TO_QUOTE_SECONDS = Histogram(
    "nexanest_quote_latency_seconds",
    "From a tick's exchange time to its quote being visible in Redis",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "nexanest_consumer_lag_messages",
    "High watermark minus the consumer's position, per partition",
    ["topic", "partition"],
    registry=REGISTRY,
)
CONSUMER_LAG_SECONDS = AgeGauge(
    "nexanest_consumer_lag_seconds",
    "Now minus the tick time of the newest tick stored from the partition (computed at scrape time; "
    "while the partition's lag in messages is 0 this is the feed's silence, not lag)",
    ["topic", "partition"],
    registry=REGISTRY,
)
TICK_TO_ROW_SECONDS = Histogram(
    "nexanest_consumer_tick_to_row_seconds",
    "From a tick's time to its row committed in TimescaleDB: once per partition per batch, for the "
    "partition's oldest tick in the batch (the longest wait, an upper bound for the others)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
    registry=REGISTRY,
)
#: The rollup resolutions (views ohlcv_1m .. ohlcv_1d).
RESOLUTIONS = ("1m", "5m", "1h", "1d")
ROLLUP_FRESHNESS_SECONDS = AgeGauge(
    "nexanest_rollup_freshness_seconds",
    "Now minus the tick time of the newest tick this consumer committed that the bars of view "
    "ohlcv_<resolution> include (pipeline rollups merge it in the tick's transaction; continuous "
    "aggregates with real-time aggregation include it at commit); computed at scrape time",
    ["resolution"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "nexanest_consumer_retries_total", "Batch writes retried after a retryable error", ["service"], registry=REGISTRY
)
#: The ``service`` label's values: what a ``RetryableError`` names, and ``other``
#: should another name ever be given (never expected).
RETRY_SERVICES = ("timescaledb", "redis", "kafka", "other")
for _service in RETRY_SERVICES:  # every service from 0, as the dead-letter reasons
    RETRIES.labels(_service)


def count_retry(service: str) -> None:
    """Count one retry of a step that failed on ``service`` (an unknown one counts as ``other``)."""
    RETRIES.labels(service if service in RETRY_SERVICES else "other").inc()


SYSTEM_EVENTS = Counter(
    "nexanest_system_events_total", "System events emitted", ["component", "event_type"], registry=REGISTRY
)


def serve_metrics(host: str, port: int) -> int:
    """Expose /metrics over HTTP (a daemon thread); port 0 disables it. Returns the
    port listened on (0: none). Raises ``OSError`` when the port cannot be bound."""
    if not port:
        return 0
    server, _ = start_http_server(port, addr=host, registry=REGISTRY)
    return int(server.server_port)


DUPLICATES_SKIPPED = Counter(
    "nexanest_sink_duplicates_skipped_total",
    "Ticks not stored because they were already: a seq at or below its partition's high-water mark "
    "(dropped by the consumer before COPY), or a re-sent tick found in the table by lookup",
    registry=REGISTRY,
)
FENCED = Counter(
    "nexanest_consumer_fenced_total",
    "Batches discarded because another consumer had claimed their partition",
    registry=REGISTRY,
)
#: Partitions found with a stored offset behind the one this consumer committed:
#: the database lost committed transactions (an asynchronous failover); re-read.
OFFSETS_REGRESSED = Counter(
    "nexanest_consumer_offsets_regressed_total",
    "Partitions whose offset in ingest_offsets went back (transactions lost by the database), re-read from there",
    registry=REGISTRY,
)

# The HTTP services (services/app.py counts every request). ``route`` is the
# route's template (``/portfolios/{portfolio_id}``), never the path a client
# sent, so ids and symbols do not become series; requests that match no route
# are ``unmatched``.
HTTP_REQUESTS = Counter(
    "nexanest_http_requests_total",
    "Requests answered by a service, by route template, method and status",
    ["service", "route", "method", "status"],
    registry=REGISTRY,
)
HTTP_REQUEST_SECONDS = Histogram(
    "nexanest_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response (a stream: its whole life)",
    ["service", "route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)

# The notifications service (services/notifications/). Labels are channels, outcomes,
# queue parts and failure reasons: small fixed sets, never a user, endpoint or symbol.
NOTIFICATIONS_QUEUE_DEPTH = Gauge(
    "nexanest_notifications_queue_depth",
    "Jobs on the notification queue: ready, taken by a worker (processing) or waiting to be retried (delayed)",
    ["state"],
    registry=REGISTRY,
)
NOTIFICATIONS_DELIVERIES = Counter(
    "nexanest_notifications_deliveries_total",
    "Delivery attempts by channel (inbox, webhook) and outcome (delivered, retry, failed, abandoned)",
    ["channel", "outcome"],
    registry=REGISTRY,
)
NOTIFICATIONS_WEBHOOK_FAILURES = Counter(
    "nexanest_notifications_webhook_failures_total",
    "Failed webhook attempts by reason (status: a non-2xx answer; timeout; connect; error)",
    ["reason"],
    registry=REGISTRY,
)
# Every label value exported from the start (at 0), so that rate() and alerts see a
# failure kind before its first occurrence.
for _state in ("ready", "processing", "delayed"):
    NOTIFICATIONS_QUEUE_DEPTH.labels(_state)
for _channel in ("inbox", "webhook"):
    for _outcome in ("delivered", "retry", "failed", "abandoned"):
        NOTIFICATIONS_DELIVERIES.labels(_channel, _outcome)
for _reason in ("status", "timeout", "connect", "error"):
    NOTIFICATIONS_WEBHOOK_FAILURES.labels(_reason)
NOTIFICATIONS_ENDPOINTS_DISABLED = Counter(
    "nexanest_notifications_webhook_endpoints_disabled_total",
    "Webhook endpoints disabled after too many failures in a row",
    registry=REGISTRY,
)
NOTIFICATIONS_ALERTS_FIRED = Counter(
    "nexanest_notifications_alerts_fired_total", "Price alerts fired (one per crossing)", registry=REGISTRY
)
NOTIFICATIONS_JOBS_RECLAIMED = Counter(
    "nexanest_notifications_jobs_reclaimed_total",
    "Jobs put back on the queue from the processing list of a worker that died",
    registry=REGISTRY,
)
