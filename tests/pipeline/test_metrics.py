from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from nexanest.pipeline import metrics
from nexanest.pipeline.settings import MetricsSettings, Settings, namespace_environment, namespaced
from nexanest.pipeline.validation import REASONS, REJECTED_BY_DATABASE
from tests.prometheus import check_metrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_endpoint_serves_the_pipeline_metrics() -> None:
    port = free_port()
    assert metrics.serve_metrics("127.0.0.1", port) == port  # the port bound, for the announcement
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
        "nexanest_consumer_lag_seconds gauge",
        "nexanest_consumer_tick_to_row_seconds histogram",
        "nexanest_rollup_freshness_seconds gauge",
    ):
        assert f"# TYPE {declared}" in body
    assert 'nexanest_consumer_rejected_total{reason="bad_price"}' in body


def test_every_metric_follows_the_naming_rule() -> None:
    names = [family.name for family in metrics.REGISTRY.collect()]
    assert names
    assert all(name.startswith("nexanest_") for name in names)


def test_each_command_has_its_own_default_metrics_port() -> None:
    """consume, produce, run and quotes can run side by side: the documented port map."""
    m = MetricsSettings()
    assert {c: m.port_for(c) for c in ("consumer", "producer", "run", "quotes")} == {
        "consumer": 9108,
        "producer": 9109,
        "run": 9110,
        "quotes": 9107,
    }
    assert m.setting_for("producer") == "NEXANEST_METRICS__PRODUCER_PORT"
    # One port for whichever command runs, 0 for none (tests, benchmarks).
    one = MetricsSettings(port=9200)
    assert {one.port_for(c) for c in ("consumer", "producer", "run")} == {9200}
    assert one.setting_for("consumer") == "NEXANEST_METRICS__PORT"
    assert MetricsSettings(port=0).port_for("run") == 0
    with pytest.raises(ValueError, match="must differ"):
        MetricsSettings(consumer_port=9300, producer_port=9300)
    with pytest.raises(ValueError, match="must differ"):
        MetricsSettings(quotes_port=9108)
    assert MetricsSettings(consumer_port=0, producer_port=0).port_for("producer") == 0


def test_a_child_gets_every_port_of_the_map() -> None:
    env = namespace_environment(Settings(metrics=MetricsSettings(producer_port=9301)))
    assert env["NEXANEST_METRICS__PRODUCER_PORT"] == "9301"
    assert env["NEXANEST_METRICS__CONSUMER_PORT"] == "9108"
    assert "NEXANEST_METRICS__PORT" not in env  # no override: each command keeps its own
    assert namespace_environment(namespaced(Settings(), "x"))["NEXANEST_METRICS__PORT"] == "0"


def test_an_age_gauge_grows_until_something_newer_is_stored_and_forgets_revoked_labels() -> None:
    now = [1_000.0]
    registry = CollectorRegistry()
    age = metrics.AgeGauge("test_age_seconds", "age", ["partition"], registry=registry, clock=lambda: now[0])
    age.observe(("0",), 990.0)
    age.observe(("0",), 980.0)  # older than what is stored: no change
    age.observe(("1",), 999.5)
    assert registry.get_sample_value("test_age_seconds", {"partition": "0"}) == 10.0
    now[0] = 1_030.0  # nothing newer stored (a stalled consumer): the age keeps growing
    assert registry.get_sample_value("test_age_seconds", {"partition": "0"}) == 40.0
    assert age.value(("1",)) == 30.5
    age.forget([("1",)])
    assert registry.get_sample_value("test_age_seconds", {"partition": "1"}) is None
    assert age.value(("1",)) is None
    assert registry.get_sample_value("test_age_seconds", {"partition": "0"}) == 40.0


def test_every_dead_letter_reason_is_exported_from_zero_and_no_other() -> None:
    before = metrics.REGISTRY.get_sample_value("nexanest_consumer_rejected_total", {"reason": "other"}) or 0.0
    metrics.count_rejected("a reason nobody declared")
    assert metrics.REGISTRY.get_sample_value("nexanest_consumer_rejected_total", {"reason": "other"}) == before + 1
    reasons = {
        s.labels["reason"]
        for family in metrics.REGISTRY.collect()
        for s in family.samples
        if s.name == "nexanest_consumer_rejected_total"
    }
    assert reasons == {*REASONS, REJECTED_BY_DATABASE, "other"}


def test_every_retry_service_has_a_series_from_zero_and_an_unknown_one_counts_as_other() -> None:
    """A dashboard's rate() sees the first retry only if the series existed before it."""
    services = {
        s.labels["service"]
        for family in metrics.REGISTRY.collect()
        for s in family.samples
        if s.name == "nexanest_consumer_retries_total"
    }
    assert services == {"timescaledb", "redis", "kafka", "other"}
    before = metrics.REGISTRY.get_sample_value("nexanest_consumer_retries_total", {"service": "other"})
    assert before is not None
    metrics.count_retry("no-such-service")
    assert metrics.REGISTRY.get_sample_value("nexanest_consumer_retries_total", {"service": "other"}) == before + 1


def test_promtool_accepts_every_metric_of_the_registry() -> None:
    metrics.CONSUMER_LAG_SECONDS.observe(("unit.ticks", "0"), 1.0)
    metrics.ROLLUP_FRESHNESS_SECONDS.observe(("1m",), 1.0)
    metrics.TICK_TO_ROW_SECONDS.observe(0.2)
    assert check_metrics(generate_latest(metrics.REGISTRY)) == ""
    metrics.CONSUMER_LAG_SECONDS.forget([("unit.ticks", "0")])


def test_promtool_check_metrics_finds_what_it_is_for() -> None:
    """The check is not a formality: a counter without _total and a bad unit fail it."""
    registry = CollectorRegistry()
    Gauge("nexanest_test_latency_milliseconds", "latency in ms", registry=registry).set(1)
    assert "milliseconds" in check_metrics(generate_latest(registry))
