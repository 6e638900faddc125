"""System events: the batch monitor (unit), and emitting, filtering, following
and every event type through the topic against the real TimescaleDB and Kafka
(integration). The ``events`` command line and the producer's life cycle events
are tested under ``tests/cli/``."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from nexanest.ops.events_tail import event_json, fetch_events, format_event, severities_from, tail_events
from nexanest.ops.topic_reader import BoundedReader
from nexanest.pipeline.events import BatchMonitor, EventEmitter
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.settings import EventsSettings, Settings
from nexanest.schemas.events import EventType, Severity, decode_event
from tests.schemas.event_samples import FROZEN

S = 1_000_000_000


class FakeEmitter:
    def __init__(self) -> None:
        self.events: list[tuple[str, Severity, dict[str, Any]]] = []

    async def emit(self, event_type: str, message: str, severity: Severity = Severity.INFO, **details: Any) -> None:
        self.events.append((event_type, severity, details))


def monitor(**settings: Any) -> tuple[BatchMonitor, FakeEmitter]:
    emitter = FakeEmitter()
    return BatchMonitor(emitter, EventsSettings(**settings), group="g"), emitter  # type: ignore[arg-type]


ALL = {("t", 0), ("t", 1)}


async def test_lag_high_is_emitted_once_per_crossing_and_recovery_once() -> None:
    mon, emitter = monitor(lag_high_messages=100, lag_recovered_ratio=0.5)
    for lag in (50, 150, 200, 120, 60, 40, 30, 160, 170):
        await mon.after_batch(rejected_by_reason={}, lags={("t", 0): lag}, assigned=ALL)
    assert [(e[0], e[2]["lag"]) for e in emitter.events] == [
        ("lag_high", 150),
        ("lag_recovered", 40),
        ("lag_high", 160),
    ]
    assert emitter.events[0][1] == Severity.WARNING
    assert emitter.events[0][2]["group"] == "g"


async def test_lag_is_the_sum_over_assigned_partitions_only() -> None:
    mon, emitter = monitor(lag_high_messages=100)
    await mon.after_batch(rejected_by_reason={}, lags={("t", 0): 60}, assigned=ALL)
    await mon.after_batch(rejected_by_reason={}, lags={("t", 1): 60}, assigned=ALL)  # 60 + 60 from the last batches
    assert [e[0] for e in emitter.events] == ["lag_high"]
    # Partition 1 went to another consumer: its lag is no longer ours.
    await mon.after_batch(rejected_by_reason={}, lags={("t", 0): 40}, assigned={("t", 0)})
    assert [e[0] for e in emitter.events] == ["lag_high", "lag_recovered"]


async def test_dlq_burst_is_emitted_for_a_batch_above_the_threshold() -> None:
    mon, emitter = monitor(dlq_burst_messages=10)
    await mon.after_batch(rejected_by_reason={"bad_symbol": 4, "undecodable": 6}, lags={}, assigned=ALL)
    assert emitter.events == []
    await mon.after_batch(rejected_by_reason={"bad_symbol": 4, "undecodable": 7}, lags={}, assigned=ALL)
    ((kind, severity, details),) = emitter.events
    assert (kind, severity) == ("dlq_burst", Severity.WARNING)
    assert (details["rejected"], details["reasons"]) == (11, "bad_symbol=4, undecodable=7")


def test_severity_means_that_level_and_worse() -> None:
    assert severities_from(Severity.WARNING) == ["warning", "error", "critical"]
    assert severities_from(Severity.DEBUG)[0] == "debug"


def test_an_event_prints_as_one_line_or_one_json_object() -> None:
    event = {
        "time": datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC),
        "event_id": "e1",
        "component": "producer.synthetic",
        "event_type": "stopped",
        "severity": "info",
        "message": "published 10 ticks",
        "host": "h",
        "details": {"published": 10},
    }
    line = format_event(event)
    assert line.startswith("2026-01-02 03:04:05.678Z  info     producer.synthetic")
    assert line.endswith("published 10 ticks  [published=10]")
    assert json.loads(event_json(event))["time"] == "2026-01-02T03:04:05.678000+00:00"


@pytest.mark.integration
async def test_events_are_stored_filtered_and_followed(
    migrated: Settings, timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    base = f"test.{test_id}"
    since = datetime.now(UTC) - timedelta(seconds=5)
    a = EventEmitter(f"{base}.a", pool=timescale_pool, producer=None, topic="unused")
    b = EventEmitter(f"{base}.b", pool=timescale_pool, producer=None, topic="unused")
    await a.emit(EventType.STARTED, "a starts", answer=42)
    await b.emit(EventType.LAG_HIGH, "b lags", Severity.WARNING, lag=7)
    await a.emit(EventType.ERROR, "a fails", Severity.ERROR)

    everything = await fetch_events(timescale_pool, since=since, component=base)
    assert [(e["component"], e["event_type"]) for e in everything] == [
        (f"{base}.a", "started"),
        (f"{base}.b", "lag_high"),
        (f"{base}.a", "error"),
    ]  # oldest first; the prefix matches both sub-components
    assert everything[0]["details"] == {"answer": 42}
    warnings = await fetch_events(timescale_pool, since=since, component=base, minimum=Severity.WARNING)
    assert [e["event_type"] for e in warnings] == ["lag_high", "error"]
    only_a = await fetch_events(timescale_pool, since=since, component=f"{base}.a")
    assert [e["event_type"] for e in only_a] == ["started", "error"]
    newest = await fetch_events(timescale_pool, since=since, component=base, limit=2)
    assert [e["event_type"] for e in newest] == ["lag_high", "error"]
    assert await fetch_events(timescale_pool, since=since, component=f"{base}.a.x") == []

    # --follow: the two already there, then one emitted while following, each once.
    seen: list[str] = []
    stop = asyncio.Event()
    follow = asyncio.create_task(
        tail_events(
            migrated, lambda e: seen.append(e["message"]), since=since, component=f"{base}.a", follow=True,
            interval_s=0.1, stop=stop,
        )
    )  # fmt: skip
    for _ in range(100):
        if len(seen) == 2:
            break
        await asyncio.sleep(0.05)
    await a.emit(EventType.STOPPED, "a stops")
    for _ in range(100):
        if len(seen) == 3:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # a few more polls: nothing is shown twice
    stop.set()
    assert await follow == 3
    assert seen == ["a starts", "a fails", "a stops"]


async def read_events(settings: Settings) -> list[tuple[bytes | None, bytes]]:
    """Every record of the settings' events topic, as (key, value)."""
    async with BoundedReader(settings.kafka, settings.kafka.events_topic) as reader:
        return [(r.key, r.value) async for batch in reader.batches() for r in batch if r.value is not None]


@pytest.mark.integration
async def test_every_event_type_round_trips_through_the_topic(isolated: Settings) -> None:
    """Each frozen sample's event, emitted by a real EventEmitter through the real
    producer, comes back off the topic decoded to the same event, keyed by its component."""
    await ensure_topics(isolated.kafka)
    producer = make_producer(isolated.kafka)
    await producer.start()
    emitted = []
    try:
        for raw in FROZEN.values():
            frozen = decode_event(raw)
            emitter = EventEmitter(frozen.component, pool=None, producer=producer, topic=isolated.kafka.events_topic)
            emitted.append(
                await emitter.emit(EventType(frozen.event_type), frozen.message, frozen.severity, **frozen.details)
            )
    finally:
        await producer.stop()
    records = await read_events(isolated)
    read_back = {event.event_id: (key, event) for key, event in ((k, decode_event(v)) for k, v in records)}
    assert len(records) == len(read_back) == len(FROZEN)
    for event in emitted:
        key, back = read_back[event.event_id]
        assert back == event
        assert key == event.component.encode()
    assert {(e.component, e.event_type) for _, e in read_back.values()} == set(FROZEN)
