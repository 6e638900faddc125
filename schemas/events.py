"""Operational events (``system_events`` topic and hypertable).

Every component reports its life cycle and its trouble in this one shape, so an
operator can follow the whole pipeline in one place. Encoded as JSON: events
are rare, and humans and other tools read them.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec


class Severity(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class SystemEvent(msgspec.Struct, frozen=True):
    event_id: str  # UUID, so a replayed event is recognisable
    ts_ns: int
    component: str  # e.g. "consumer.ticks_to_timescale"
    event_type: str  # e.g. "started", "stopped", "batch_failed"
    severity: Severity
    message: str
    host: str
    details: dict[str, str | int | float | bool | None] = {}
    v: int = 1


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(SystemEvent)


def encode_event(event: SystemEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes) -> SystemEvent:
    return _decoder.decode(data)
