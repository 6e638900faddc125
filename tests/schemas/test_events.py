"""The ``system_events`` wire format: one frozen sample of every event type.

``tests/data/events/system_events.jsonl`` (``event_samples.py``) holds one event per (component,
event type) the project emits, as the bytes ``encode_event`` writes. Frozen: if
one stops decoding, or decodes to something that encodes differently, every
reader of the topic breaks. The samples' details are the keys each emitter
sends; the tests below tie them to the code that builds them (the batch
monitor, ``bars repair``, the backup script), and
``tests/consumers/test_ticks_to_timescale_events.py`` reads the real topic back.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nexanest.ops import bars
from nexanest.ops.bars_repair import RepairReport
from nexanest.pipeline.edition import Edition
from nexanest.pipeline.events import BatchMonitor, EventEmitter
from nexanest.pipeline.settings import EventsSettings, Settings
from nexanest.pipeline.sinks.ohlcv import RESOLUTIONS
from nexanest.schemas.events import EventType, Severity, decode_event, encode_event
from tests.schemas.event_samples import FROZEN, assert_like_sample, sample

REPO = Path(__file__).resolve().parents[2]


def test_every_event_type_has_a_frozen_sample() -> None:
    assert {event_type for _, event_type in FROZEN} == {str(t) for t in EventType}


@pytest.mark.parametrize("key", sorted(FROZEN), ids=lambda k: f"{k[0]}:{k[1]}")
def test_a_frozen_sample_decodes_and_encodes_to_the_same_bytes(key: tuple[str, str]) -> None:
    event = decode_event(FROZEN[key])
    assert (event.component, event.event_type) == key
    assert event.event_type in set(EventType)
    assert event.v == 1
    assert encode_event(event) == FROZEN[key]


def test_a_nested_detail_is_not_the_wire_format() -> None:
    """What ``bars repair`` used to send: readers refuse it, so no emitter may."""
    nested = json.loads(FROZEN[("cli.bars", "aggregate_repaired")])
    nested["details"]["bars"] = {"1m": 390}
    with pytest.raises(msgspec.ValidationError, match=r"details"):
        decode_event(json.dumps(nested).encode())


def test_an_unknown_event_type_still_decodes() -> None:
    """A reader built against today's EventType reads events added later."""
    later = json.loads(FROZEN[("cli.maintain", "maintenance_done")])
    later["event_type"] = "added_later"
    assert decode_event(json.dumps(later).encode()).event_type == "added_later"


# -- the samples say what the code sends -----------------------------------------------


class Recorder:
    """An EventEmitter's producer: keeps the bytes it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.sent.append(value)


def recording_emitter(component: str) -> tuple[EventEmitter, Recorder]:
    recorder = Recorder()
    return EventEmitter(component, pool=None, producer=recorder, topic="events"), recorder


async def test_the_batch_monitor_sends_what_its_samples_show() -> None:
    emitter, recorder = recording_emitter("consumer.ticks_to_timescale")
    monitor = BatchMonitor(
        emitter,
        EventsSettings(dlq_burst_messages=1, lag_high_messages=10, lag_recovered_ratio=0.5),
        topic="ticks",
        group="g",
    )
    await monitor.batch_failed("timescaledb", "connection refused")
    await monitor.batch_recovered("timescaledb", 3, 1.5)
    await monitor.after_batch(rejected_by_reason={"undecodable": 2}, lags={("ticks", 0): 20}, assigned={("ticks", 0)})
    await monitor.after_batch(rejected_by_reason={}, lags={("ticks", 0): 1}, assigned={("ticks", 0)})
    types = [decode_event(b).event_type for b in recorder.sent]
    assert types == ["batch_failed", "batch_recovered", "dlq_burst", "lag_high", "lag_recovered"]
    for sent in recorder.sent:
        assert_like_sample(sent, "consumer.ticks_to_timescale")


class FakeConnection:
    """Stands in for the owner connection of ``bars repair``: records the event INSERT."""

    def __init__(self) -> None:
        self.inserted: list[tuple[Any, ...]] = []

    async def execute(self, sql: str, *args: Any) -> str:
        assert sql.startswith("INSERT INTO system_events")
        self.inserted.append(args)
        return "INSERT 0 1"

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("edition", ["apache", "timescale"])
async def test_bars_repair_records_an_event_readers_can_decode(
    monkeypatch: pytest.MonkeyPatch, edition: Edition
) -> None:
    """The event as ``repair_bars`` stores it (its row, as the topic's JSON) must
    decode: it once carried ``bars`` and ``replaced`` as nested maps."""
    day = datetime(2026, 11, 29, tzinfo=UTC)
    counts = dict.fromkeys(RESOLUTIONS, 3) if edition == "apache" else {}
    report = RepairReport(day, day.replace(day=30), "AAPL", edition, counts, dict(counts))
    conn = FakeConnection()

    async def connect(dsn: str, role: str) -> FakeConnection:
        return conn

    async def repair(*args: Any) -> RepairReport:
        return report

    monkeypatch.setattr(bars, "_connect", connect)
    monkeypatch.setattr(bars, "repair", repair)
    assert await bars.repair_bars(Settings(_env_file=None), 0, 1, "AAPL") is report  # type: ignore[call-arg]

    ((time, event_id, component, event_type, severity, message, host, details),) = conn.inserted
    row = {
        "event_id": str(event_id),
        "ts_ns": int(time.timestamp()) * 10**9,
        "component": component,
        "event_type": event_type,
        "severity": severity,
        "message": message,
        "host": host,
        "details": json.loads(details),
    }
    event = decode_event(json.dumps(row).encode())
    assert event.details["symbol"] == "AAPL"
    if edition == "apache":
        assert_like_sample(encode_event(event), "cli.bars")
        assert event.details["bars_1d"] == 3


def test_the_backup_script_records_a_known_event_type_with_flat_details() -> None:
    script = (REPO / "deploy/local/backup.sh").read_text()
    (component, event_type) = re.findall(r"VALUES \(now\(\), gen_random_uuid\(\), '([\w.]+)', '(\w+)'", script)[0]
    keys = re.findall(r"jsonb_build_object\(([^)]*)\)", script)[0]
    assert (component, event_type) in FROZEN
    assert sorted(re.findall(r"(?<!:)'(\w+)',", keys)) == sorted(sample(component, event_type).details)


async def test_a_value_that_is_not_a_scalar_is_sent_as_its_json_text() -> None:
    """Typed callers cannot pass one; an untyped one must still not break the topic."""
    emitter, recorder = recording_emitter("cli.bars")
    await emitter.emit(EventType.AGGREGATE_REPAIRED, "m", Severity.INFO, bars={"1m": 1})  # type: ignore[arg-type]  # the untyped caller
    (sent,) = recorder.sent
    assert decode_event(sent).details == {"bars": '{"1m": 1}'}


async def test_the_feed_monitor_sends_what_its_samples_show() -> None:
    from nexanest.producers.observer import COMPONENT, FeedMonitor

    emitter, recorder = recording_emitter(COMPONENT)
    now = [0.0]
    monitor = FeedMonitor("replay", emitter, malformed_every_s=60.0, clock=lambda: now[0])
    await monitor.connected("a.parquet")
    await monitor.connected("a.parquet")  # a reconnect
    await monitor.disconnected("close code 1006")
    await monitor.gap("BTC-USD", 1001, 1004)
    await monitor.malformed("too_precise", "x" * 1000)
    await monitor.malformed("too_precise", "y")  # within the interval: counted, no event
    now[0] = 61.0
    await monitor.malformed("bad_symbol", "z")
    events = [assert_like_sample(sent, COMPONENT) for sent in recorder.sent]
    assert [e.event_type for e in events] == [
        "feed_connected",
        "feed_connected",
        "feed_disconnected",
        "feed_gap",
        "feed_malformed",
        "feed_malformed",
    ]
    assert events[1].details["reconnects"] == 1
    assert events[3].details["missing"] == 3
    assert len(str(events[4].details["sample"])) < 300  # truncated
    assert (events[5].details["count"], events[5].details["total"]) == (2, 3)
