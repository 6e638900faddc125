"""Taking: the consumer loop's first step, from fetched records to the next ``Batch``.

Each record is decoded and validated (a bad one becomes a ``Rejected`` row,
never an exception), and re-sent ticks are dropped.

Re-sent ticks are dropped here, not by an index. A source's ``seq`` strictly
increases and a partition keeps publish order, so per (topic, partition,
source) the highest ``seq`` taken so far is a high-water mark: a valid tick at
or below it was sent before and is dropped (``nexanest_sink_duplicates_skipped_total``).
The marks start from those committed with the partition's offsets
(``OffsetStore.marks``, read when the partition is claimed), each batch stores
its own with its offsets, and a fenced batch's are forgotten with it (its
partitions start again from the committed ones). Records that re-send old seqs
on purpose carry a header (``LOOKUP_HEADERS``: a publisher's re-send after a
failed delivery, ``nexanest dlq replay``): they neither meet nor move the mark
and go to the sink's ``write_checked``, which looks each up in the table. Without
an offset store (``exactly_once`` off, benchmarks only) nothing is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter
from typing import Final

from aiokafka import TopicPartition

from nexanest.pipeline.batch import Batch
from nexanest.pipeline.kafka_records import RawRecord
from nexanest.pipeline.sinks.dead_letter import Rejected
from nexanest.pipeline.types import ClaimedOffsets
from nexanest.pipeline.validation import TickValidator
from nexanest.schemas.ticks import LOOKUP_HEADERS, Tick

_VALUE: Final = attrgetter("value")
_OFFSET: Final = attrgetter("offset")
_TS_NS: Final = attrgetter("ts_ns")


@dataclass(slots=True)
class Taken:
    """What one fetch added to the batch."""

    #: The valid ticks it added, in fetch order (their quotes go out at once).
    fresh: list[Tick] = field(default_factory=list)
    #: Partitions fetched before this consumer claimed them, each with the offset
    #: to read them again from after the claim (none of their records was taken).
    unclaimed: list[tuple[TopicPartition, int]] = field(default_factory=list)
    #: Re-sent ticks dropped by their partition's high-water mark.
    dropped: int = 0


class Taker:
    """Validates fetched records into a ``Batch`` and keeps the high-water marks
    they are checked against. No I/O: the loop publishes the quotes, seeks the
    unclaimed partitions and counts the dropped ticks."""

    def __init__(self, validator: TickValidator, offsets: ClaimedOffsets | None) -> None:
        self._validator = validator
        self._offsets = offsets
        #: Per (topic, partition): the claim generation and each source's highest seq taken.
        self._taken_marks: dict[tuple[str, int], tuple[int, dict[str, int]]] = {}

    def take(self, batch: Batch, records: dict[TopicPartition, list[RawRecord]], now_ns: int) -> Taken:
        """Validate ``records`` into ``batch``.

        Per partition, not per record: one ``check_many`` over the values, and
        the rows, offsets and tick times gathered by C-level ``zip``/``map``
        (the consumer's CPU per tick is the ceiling of what one process takes)."""
        taken = Taken()
        rows, rejected, fresh = batch.rows, batch.rejected, taken.fresh
        check_many = self._validator.check_many
        batch.fetches.append(records)
        dropped = 0
        for tp, messages in records.items():
            partition = tp.partition
            seen = self._seen(tp)
            if self._offsets is not None and seen is None:
                # aiokafka may fetch a newly assigned partition before our listener
                # has claimed it: leave these records for after the claim.
                taken.unclaimed.append((tp, messages[0].offset))
                continue
            if self._offsets is not None:
                generation = self._offsets.generation((tp.topic, partition))
                if generation is not None:
                    batch.generations.setdefault((tp.topic, partition), generation)
            batch.first_offsets.setdefault(tp, messages[0].offset)
            valid, refused = check_many(map(_VALUE, messages), now_ns)
            kept = messages
            if refused:
                for index, reason, detail in refused:
                    m = messages[index]
                    rejected.append(Rejected(tp.topic, partition, m.offset, m.key, m.value, reason, detail, m.headers))
                gone = {index for index, _, _ in refused}
                kept = [m for index, m in enumerate(messages) if index not in gone]
            valid_from = len(fresh)
            if seen is None:
                rows.extend(zip(valid, repeat(partition), map(_OFFSET, kept), strict=False))  # repeat() is endless
                fresh.extend(valid)
            else:
                before = dict(seen)
                for tick, m in zip(valid, kept, strict=True):
                    if m.headers and any(k in LOOKUP_HEADERS for k, _ in m.headers):
                        batch.checked.append((tick, partition, m.offset))
                        fresh.append(tick)
                        continue
                    if tick.seq <= seen.get(tick.source, -1):
                        dropped += 1
                        continue
                    seen[tick.source] = tick.seq
                    rows.append((tick, partition, m.offset))
                    fresh.append(tick)
                # the sources this fetch moved: only they are stored with the batch
                moved = {source: seq for source, seq in seen.items() if before.get(source) != seq}
                if moved:
                    batch.marks.setdefault((tp.topic, partition), {}).update(moved)
            if len(fresh) > valid_from:
                taken_ticks = fresh[valid_from:]
                oldest, newest = min(map(_TS_NS, taken_ticks)), max(map(_TS_NS, taken_ticks))
                batch.oldest_ns[tp] = min(oldest, batch.oldest_ns.get(tp, oldest))
                batch.newest_ns[tp] = max(newest, batch.newest_ns.get(tp, newest))
            batch.count += len(messages)
            batch.taken[tp] = batch.taken.get(tp, 0) + len(messages)
            batch.next_offsets[tp] = messages[-1].offset + 1
        taken.dropped = dropped
        if fresh:
            batch.ticks.extend(fresh)
        return taken

    def forget(self, tp: TopicPartition) -> None:
        """Drop the marks taken on ``tp``: its batch was fenced, and it is re-read
        from the committed marks."""
        self._taken_marks.pop((tp.topic, tp.partition), None)

    def _seen(self, tp: TopicPartition) -> dict[str, int] | None:
        """The marks ``take`` checks ``tp``'s ticks against and moves (None: not
        claimed, or no offset store). Started from the committed ones at each new
        claim of the partition, and after a fence (``forget``)."""
        offsets = self._offsets
        if offsets is None:
            return None
        key = (tp.topic, tp.partition)
        generation = offsets.generation(key)
        if generation is None:
            return None
        taken = self._taken_marks.get(key)
        if taken is None or taken[0] != generation:
            taken = self._taken_marks[key] = (generation, dict(offsets.marks(key)))
        return taken[1]
