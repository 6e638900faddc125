"""The frozen ``system_events`` samples (``tests/data/events/system_events.jsonl``):
one event per (component, event type) the project emits, as ``encode_event``
writes it. Shared by the wire-format test and the tests that read the real topic."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nexanest.schemas.events import SystemEvent, decode_event

SAMPLES_FILE = Path(__file__).resolve().parents[1] / "data/events/system_events.jsonl"


def frozen_samples() -> dict[tuple[str, str], bytes]:
    """(component, event type) -> the frozen bytes of its sample, in file order."""
    samples: dict[tuple[str, str], bytes] = {}
    for line in SAMPLES_FILE.read_bytes().splitlines():
        fields = json.loads(line)
        key = (fields["component"], fields["event_type"])
        assert key not in samples, f"two samples of {key}"
        samples[key] = line
    return samples


FROZEN = frozen_samples()


def sample(component: str, event_type: str) -> SystemEvent:
    return decode_event(FROZEN[(component, event_type)])


def assert_like_sample(sent: bytes, component: str) -> SystemEvent:
    """``sent`` decodes, and carries the severity and detail keys of its type's sample."""
    event = decode_event(sent)
    frozen = sample(component, event.event_type)
    assert (event.component, event.severity) == (frozen.component, frozen.severity)
    assert sorted(event.details) == sorted(frozen.details), event.event_type
    return event


def event_of_row(row: Mapping[str, Any]) -> bytes:
    """A ``system_events`` row (time, event_id, component, event_type, severity,
    message, host, details) as the topic's JSON: what a reader of either gets."""
    details = row["details"]
    return json.dumps(
        {
            "event_id": str(row["event_id"]),
            "ts_ns": int(row["time"].timestamp() * 1_000_000) * 1_000,
            "component": row["component"],
            "event_type": row["event_type"],
            "severity": row["severity"],
            "message": row["message"],
            "host": row["host"],
            "details": json.loads(details) if isinstance(details, str) else dict(details),
        }
    ).encode()
