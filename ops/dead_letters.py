"""A dead letter as the operator tools read it back, and how far ``nexanest dlq
replay`` has examined the dead-letter topic (its consumer group's committed
offsets, with per-reason progress in the commit metadata: see ``dlq_replay``).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from nexanest.pipeline.kafka import make_admin, start_client
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.settings import KafkaSettings
from nexanest.pipeline.sinks.dead_letter import (
    DEAD_LETTER_HEADERS,
    HEADER_DETAIL,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_REJECTED_NS,
    HEADER_TOPIC,
)
from nexanest.schemas.ticks import HEADER_REPLAYED_FROM as HEADER_REPLAYED_FROM  # re-exported

_log = get_logger(__name__)

# -- dead letters -------------------------------------------------------------------


class DeadLetter(NamedTuple):
    """One record of the dead-letter topic, with its headers read."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    rejected_ns: int | None
    #: The headers the record had when it was rejected (without the dead-letter ones).
    original_headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def rejected_at_ns(self) -> int:
        """When the consumer set it aside: the header, else the record's timestamp."""
        return self.rejected_ns if self.rejected_ns is not None else self.timestamp_ms * 1_000_000

    @property
    def origin(self) -> str:
        return f"{self.source_topic}/{self.source_partition}/{self.source_offset}"

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "offset": self.offset,
            "reason": self.reason,
            "detail": self.detail,
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "rejected_ns": self.rejected_ns,
            "key": None if self.key is None else self.key.decode(errors="replace"),
            "value_bytes": None if self.value is None else len(self.value),
            "value_preview": preview(self.value),
        }


def parse_dead_letter(record: ConsumerRecord[bytes, bytes]) -> DeadLetter:
    """Read the headers ``DeadLetterSink`` writes; a missing one reads as empty."""
    headers = {k: v.decode(errors="replace") for k, v in record.headers}
    return DeadLetter(
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        key=record.key,
        value=record.value,
        reason=headers.get(HEADER_REASON, "") or "(none)",
        detail=headers.get(HEADER_DETAIL, ""),
        source_topic=headers.get(HEADER_TOPIC, ""),
        source_partition=_int_or_none(headers.get(HEADER_PARTITION)),
        source_offset=_int_or_none(headers.get(HEADER_OFFSET)),
        rejected_ns=_int_or_none(headers.get(HEADER_REJECTED_NS)),
        original_headers=tuple(
            (k, v) for k, v in record.headers if k not in DEAD_LETTER_HEADERS and k != HEADER_REPLAYED_FROM
        ),
    )


def _int_or_none(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def preview(value: bytes | None, width: int = 24) -> str:
    """The length and first bytes of a value, as hex and as a Python literal."""
    if value is None:
        return "(no value)"
    head = value[:width]
    more = "..." if len(value) > width else ""
    return f"{len(value)} bytes  hex {head.hex()}{more}  {head!r}{more}"


# -- replay progress --------------------------------------------------------------------


@dataclass
class ReplayProgress:
    """How far replay has examined one dead-letter partition.

    Every record below ``base`` has been examined; ``ahead`` holds, for
    reasons that runs limited with ``--reason`` examined further, the next
    offset to examine. ``base`` is the group's committed offset and ``ahead``
    its metadata.
    """

    base: int = 0
    ahead: dict[str, int] = field(default_factory=dict)

    def examined(self, offset: int, reason: str) -> bool:
        return offset < self.ahead.get(reason, self.base)

    def advance(self, next_offset: int, reasons: Collection[str] | None) -> None:
        """Record that the run examined the records of ``reasons`` (None: all) below ``next_offset``."""
        if reasons is None:
            self.base = max(self.base, next_offset)
            self.ahead = {r: o for r, o in self.ahead.items() if o > self.base}
        else:
            for reason in reasons:
                if next_offset > self.ahead.get(reason, self.base):
                    self.ahead[reason] = next_offset

    def metadata(self) -> str:
        return json.dumps({"ahead": dict(sorted(self.ahead.items()))}, separators=(",", ":")) if self.ahead else ""

    @classmethod
    def from_committed(cls, committed: OffsetAndMetadata | None) -> ReplayProgress:
        if committed is None or committed.offset < 0:
            return cls()
        ahead: dict[str, int] = {}
        if committed.metadata:
            try:
                raw = json.loads(committed.metadata).get("ahead", {})
                ahead = {str(r): int(o) for r, o in raw.items() if int(o) > committed.offset}
            except (ValueError, AttributeError, TypeError):
                _log.warning("dlq_replay_metadata_unreadable", metadata=committed.metadata[:200])
        return cls(committed.offset, ahead)


async def replay_progress(kafka: KafkaSettings) -> dict[int, ReplayProgress]:
    """The replay group's progress per dead-letter partition (empty ones where it never committed)."""
    admin = _admin(kafka)
    await start_client(admin, kafka)
    try:
        committed = await admin.list_consumer_group_offsets(kafka.dlq_replay_group)
    finally:
        await admin.close()
    return {
        tp.partition: ReplayProgress.from_committed(om)
        for tp, om in committed.items()
        if tp.topic == kafka.dead_letter_topic
    }


def _admin(kafka: KafkaSettings) -> AIOKafkaAdminClient:
    return make_admin(kafka, client_suffix="dlq-admin")
