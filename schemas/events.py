"""Operational events (``system_events`` topic and hypertable).

Every component reports its life cycle and its trouble in this one shape, so an
operator can follow the whole pipeline in one place. Encoded as JSON: events
are rare, and humans and other tools read them.

``details`` is a flat map of scalars (``DetailValue``), never nested: the
table's ``details->>'key'`` and ``nexanest events``' ``key=value`` read every
value the same way, and a reader in any language decodes it without knowing
the event type. Structured figures are flattened into keys (``bars_1m``,
``replaced_1d``). ``EventType`` lists every event type the project emits;
``tests/schemas/test_events.py`` freezes one sample of each, with its details.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

#: What a ``details`` value may be.
DetailValue = str | int | float | bool | None


class Severity(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class EventType(enum.StrEnum):
    """Every event type on the topic and in the table, with the components that emit it.

    ``SystemEvent.event_type`` stays a plain string on the wire, so a reader
    built against this list still decodes a type added later."""

    #: consumer.ticks_to_timescale, producer.synthetic, producer.feed: the component runs.
    STARTED = "started"
    #: consumer.ticks_to_timescale, producer.synthetic, producer.feed: it finished cleanly, with its counts.
    STOPPED = "stopped"
    #: consumer.ticks_to_timescale, producer.synthetic, producer.feed: it failed and exits.
    ERROR = "error"
    #: consumer.ticks_to_timescale: the first failure of a batch write (retried with backoff).
    BATCH_FAILED = "batch_failed"
    #: consumer.ticks_to_timescale: that write went through after an outage.
    BATCH_RECOVERED = "batch_recovered"
    #: consumer.ticks_to_timescale: one batch dead-lettered more than the threshold.
    DLQ_BURST = "dlq_burst"
    #: consumer.ticks_to_timescale: its total lag rose above the threshold.
    LAG_HIGH = "lag_high"
    #: consumer.ticks_to_timescale: its lag fell back.
    LAG_RECOVERED = "lag_recovered"
    #: cli.bars: ``nexanest bars repair`` recomputed a range of bars.
    AGGREGATE_REPAIRED = "aggregate_repaired"
    #: cli.maintain: a retention / policy pass ran.
    MAINTENANCE_DONE = "maintenance_done"
    #: cli.maintain: the pass raised.
    MAINTENANCE_FAILED = "maintenance_failed"
    #: producer.feed: a feed adapter connected (or opened its file); ``adapter`` names it.
    FEED_CONNECTED = "feed_connected"
    #: producer.feed: the adapter lost or closed its connection.
    FEED_DISCONNECTED = "feed_disconnected"
    #: producer.feed: the venue's sequence numbers jumped (messages lost upstream).
    FEED_GAP = "feed_gap"
    #: producer.feed: frames or rows that could not become ticks (at most one event per interval).
    FEED_MALFORMED = "feed_malformed"
    #: ops.backup (``deploy/local/backup.sh``, table only): a backup was written.
    BACKUP_DONE = "backup_done"


class SystemEvent(msgspec.Struct, frozen=True):
    event_id: str  # UUID, so a replayed event is recognisable
    ts_ns: int
    component: str  # e.g. "consumer.ticks_to_timescale"
    event_type: str  # an EventType value, e.g. "started", "batch_failed"
    severity: Severity
    message: str
    host: str
    details: dict[str, DetailValue] = {}
    v: int = 1


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(SystemEvent)


def encode_event(event: SystemEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes) -> SystemEvent:
    """Raises ``msgspec.ValidationError`` for anything but a ``SystemEvent``
    (a nested ``details`` value included), ``msgspec.DecodeError`` for bad JSON."""
    return _decoder.decode(data)
