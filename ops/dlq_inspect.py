"""``nexanest dlq inspect``: read the whole dead-letter topic without a consumer
group and count its records by reason (the ``nexanest.reason`` header that
``pipeline/sinks/dead_letter.py`` sets), with a few samples of each: where the
record came from, the validator's detail, and the start of its bytes; and how
many no ``nexanest dlq replay`` has examined yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import KafkaError

from nexanest.ops.dead_letters import DeadLetter, parse_dead_letter, preview, replay_progress
from nexanest.ops.topic_reader import BoundedReader, Progress, ProgressThrottle
from nexanest.pipeline.errors import PipelineError
from nexanest.pipeline.settings import Settings

# -- inspect ------------------------------------------------------------------------


@dataclass
class ReasonSummary:
    count: int = 0
    #: Records no replay has examined yet.
    not_replayed: int = 0
    samples: list[DeadLetter] = field(default_factory=list)


@dataclass
class InspectReport:
    topic: str
    replay_group: str
    records: int = 0
    by_reason: dict[str, ReasonSummary] = field(default_factory=dict)
    #: Partitions whose oldest records retention has deleted.
    truncated_partitions: list[int] = field(default_factory=list)

    @property
    def not_replayed(self) -> int:
        return sum(s.not_replayed for s in self.by_reason.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "replay_group": self.replay_group,
            "records": self.records,
            "not_replayed": self.not_replayed,
            "by_reason": {
                reason: {
                    "count": s.count,
                    "not_replayed": s.not_replayed,
                    "samples": [d.to_json() for d in s.samples],
                }
                for reason, s in sorted(self.by_reason.items())
            },
            "truncated_partitions": self.truncated_partitions,
        }


async def inspect(settings: Settings, *, limit: int = 3, progress: Progress | None = None) -> InspectReport:
    """Count the dead-letter topic's records by reason, keeping the first
    ``limit`` of each as samples. Read-only; joins no group."""
    try:
        return await _inspect(settings, limit, progress)
    except KafkaError as exc:
        raise PipelineError(f"dlq inspect: Kafka failed: {exc!r}") from exc


async def _inspect(settings: Settings, limit: int, progress: Progress | None) -> InspectReport:
    kafka = settings.kafka
    report = InspectReport(kafka.dead_letter_topic, kafka.dlq_replay_group)
    done = await replay_progress(kafka)
    throttle = ProgressThrottle(progress)
    async with BoundedReader(kafka, kafka.dead_letter_topic, client_suffix="dlq-inspect") as reader:
        report.truncated_partitions = sorted(p for p, r in reader.ranges.items() if r.truncated)
        total = reader.total
        async for batch in reader.batches():
            for record in batch:
                letter = parse_dead_letter(record)
                summary = report.by_reason.get(letter.reason) or report.by_reason.setdefault(
                    letter.reason, ReasonSummary()
                )
                summary.count += 1
                state = done.get(letter.partition)
                if state is None or not state.examined(letter.offset, letter.reason):
                    summary.not_replayed += 1
                if len(summary.samples) < limit:
                    summary.samples.append(letter)
            throttle(f"dlq inspect: {reader.read:,}/{total:,} records read")
        report.records = reader.read
    return report


def format_inspect(report: InspectReport) -> str:
    out = [f"dead-letter topic {report.topic}: {report.records:,} records"]
    if not report.records:
        return out[0]
    width = max(len(r) for r in report.by_reason)
    out.append(f"{'reason'.ljust(width)}  {'count':>9}  {'not replayed':>12}")
    ranked = sorted(report.by_reason.items(), key=lambda item: (-item[1].count, item[0]))
    out.extend(f"{reason.ljust(width)}  {s.count:>9,}  {s.not_replayed:>12,}" for reason, s in ranked)
    for reason, s in ranked:
        out.append("")
        out.append(f"{reason}: {len(s.samples)} of {s.count:,}")
        for d in s.samples:
            out.append(f"  {report.topic}/{d.partition}/{d.offset}  from {d.origin}  key {d.key!r}")
            out.append(f"    detail  {d.detail}")
            out.append(f"    value   {preview(d.value)}")
    out.append("")
    out.append(f"not yet examined by `nexanest dlq replay` (group {report.replay_group}): {report.not_replayed:,}")
    if report.truncated_partitions:
        out.append(f"note: retention has deleted the oldest records of partitions {report.truncated_partitions}")
    return "\n".join(out)
