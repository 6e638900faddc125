"""``Batch``: the records the consumer loop took from Kafka, validated, waiting
for (or in) their write; and what the loop needs to know of them when the
database refuses some of their rows (their original records, the marks
without them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from nexanest.pipeline.sinks.dead_letter import Rejected
from nexanest.pipeline.types import TickEntry
from nexanest.pipeline.validation import REJECTED_BY_DATABASE
from nexanest.schemas.ticks import Tick


@dataclass
class Batch:
    """Records taken from Kafka and validated, waiting for (or in) their write."""

    rows: list[TickEntry] = field(default_factory=list)
    #: Valid ticks with a ``LOOKUP_HEADERS`` header: stored unless the table has them.
    checked: list[TickEntry] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    #: Per partition: the first offset taken (where a discarded batch is re-read
    #: from), the offset after the last one, and how many records were taken.
    first_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    taken: dict[TopicPartition, int] = field(default_factory=dict)
    #: Per partition: the generation of the claim its first record here was taken
    #: under (a later re-claim by this consumer must not cover older records).
    generations: dict[tuple[str, int], int] = field(default_factory=dict)
    #: Per partition: the tick times (ns) of its oldest and newest valid tick in
    #: the batch, for the tick-to-row latency and the lag in seconds.
    oldest_ns: dict[TopicPartition, int] = field(default_factory=dict)
    newest_ns: dict[TopicPartition, int] = field(default_factory=dict)
    #: Per (topic, partition): the high-water mark of each source after the batch.
    marks: dict[tuple[str, int], dict[str, int]] = field(default_factory=dict)
    count: int = 0
    #: The fetches the batch was taken from, as aiokafka returned them (no copy):
    #: where a row the database refuses finds its record's bytes and headers.
    fetches: list[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]] = field(default_factory=list)

    def records(self, refused: list[tuple[int, int, str]]) -> list[Rejected]:
        """Dead letters of the rows the database refused, from their original records."""
        wanted = {(partition, offset): detail for partition, offset, detail in refused}
        letters = []
        for fetched in self.fetches:
            for tp, messages in fetched.items():
                for m in messages:
                    detail = wanted.pop((tp.partition, m.offset), None)
                    if detail is not None:
                        letter = (tp.topic, tp.partition, m.offset, m.key, m.value, REJECTED_BY_DATABASE, detail)
                        letters.append(Rejected(*letter, m.headers))
        return letters

    def marks_without(self, refused: list[Rejected]) -> dict[tuple[str, int], dict[str, int]]:
        """The batch's marks recomputed without the rows the database refused (a
        source it cannot store must not reach ``ingest_seq_marks`` either): the
        highest seq of each source among the batch's other rows (rare path)."""
        gone = {(r.partition, r.offset) for r in refused}
        ranges = [(tp, first, self.next_offsets[tp]) for tp, first in self.first_offsets.items()]
        marks: dict[tuple[str, int], dict[str, int]] = {}
        for tick, partition, offset in self.rows:
            if (partition, offset) in gone:
                continue
            key = next(
                (tp.topic, p) for tp, first, end in ranges if (p := tp.partition) == partition and first <= offset < end
            )
            by_source = marks.setdefault(key, {})
            if tick.seq > by_source.get(tick.source, -1):
                by_source[tick.source] = tick.seq
        return marks
