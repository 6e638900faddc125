"""Every Prometheus metric of the pipeline, declared in one place.

Names follow ``nexanest_<component>_<what>_<unit>``. Components update these
per batch (``inc(n)``, one ``observe`` per batch), never per tick, except the
quote-latency histogram, which is observed once per symbol per batch.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

# Producer side.
TICKS_PRODUCED = Counter(
    "nexanest_producer_ticks_total", "Ticks handed to Kafka and acknowledged", ["source"], registry=REGISTRY
)
PRODUCE_ERRORS = Counter(
    "nexanest_producer_errors_total", "Ticks Kafka did not acknowledge", ["source"], registry=REGISTRY
)

# Consumer side.
TICKS_CONSUMED = Counter("nexanest_consumer_messages_total", "Messages taken from Kafka", ["topic"], registry=REGISTRY)
TICKS_WRITTEN = Counter("nexanest_sink_rows_written_total", "Rows made durable by a sink", ["sink"], registry=REGISTRY)
TICKS_REJECTED = Counter(
    "nexanest_consumer_rejected_total", "Messages set aside to the dead-letter topic", ["reason"], registry=REGISTRY
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
RETRIES = Counter(
    "nexanest_consumer_retries_total", "Batch writes retried after a retryable error", ["service"], registry=REGISTRY
)
SYSTEM_EVENTS = Counter(
    "nexanest_system_events_total", "System events emitted", ["component", "event_type"], registry=REGISTRY
)


def serve_metrics(host: str, port: int) -> None:
    """Expose /metrics over HTTP (a daemon thread); port 0 disables it."""
    if port:
        start_http_server(port, addr=host, registry=REGISTRY)


DUPLICATES_SKIPPED = Counter(
    "nexanest_sink_duplicates_skipped_total",
    "Rows not inserted because the same tick (source, seq, time) was already stored",
    registry=REGISTRY,
)
FENCED = Counter(
    "nexanest_consumer_fenced_total",
    "Batches discarded because another consumer had claimed their partition",
    registry=REGISTRY,
)
