from __future__ import annotations

import socket
import urllib.request

from nexanest.pipeline import metrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_endpoint_serves_the_pipeline_metrics() -> None:
    port = free_port()
    metrics.serve_metrics("127.0.0.1", port)
    metrics.TICKS_REJECTED.labels("bad_price").inc(3)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    for declared in (
        "nexanest_producer_ticks_total counter",
        "nexanest_consumer_messages_total counter",
        "nexanest_sink_rows_written_total counter",
        "nexanest_sink_flush_seconds histogram",
        "nexanest_quote_latency_seconds histogram",
        "nexanest_consumer_lag_messages gauge",
    ):
        assert f"# TYPE {declared}" in body
    assert 'nexanest_consumer_rejected_total{reason="bad_price"}' in body


def test_every_metric_follows_the_naming_rule() -> None:
    names = [family.name for family in metrics.REGISTRY.collect()]
    assert names
    assert all(name.startswith("nexanest_") for name in names)
