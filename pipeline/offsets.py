"""``OffsetStore``: the consumed offsets kept in TimescaleDB, fenced by claims.

The consumer stores how far it has read in ``ingest_offsets``, in the same
transaction as the rows (``TimescaleSink`` calls ``store`` inside its COPY
transaction): after a crash the database itself says where to resume, so a
batch is neither lost nor written twice. Claiming a partition increments its
``generation``; every store checks the generation its claim returned, so a
consumer that lost a partition (rebalance, long pause) cannot commit a batch
for it afterwards: its transaction fails with ``FencedError`` and rolls back.

The store also keeps, per claimed partition, the **high-water mark** of each
source: the highest ``seq`` of that source stored from the partition
(``ingest_seq_marks``), moved in the same transaction and behind the same
generation check as the offsets. A source's ``seq`` strictly increases and a
partition keeps publish order, so a later record of the partition with a
``seq`` at or below the mark was sent before: the loop drops it before COPY
(``pipeline/runner.py``), and ``stock_prices`` needs no unique index. The marks
are per partition, not per source: one source's ticks spread over partitions
(keyed by symbol), each in order only within its own partition.

Every store also checks that the stored offset is still the one this consumer
last committed there. It is not after a failover of an asynchronously replicated
database (deploy/local/timescale-ha.sh) that lost the last transactions: their
rows went, and their offsets with them. The store then fails the same way, and
the runner claims the partition again and re-reads it from the offset the
database holds, so the lost ticks are written again, once (the marks, lost
in the same transactions, are read back with the claim).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import asyncpg

from nexanest.pipeline import metrics
from nexanest.pipeline.db import RETRYABLE_DB_ERRORS
from nexanest.pipeline.errors import FencedError, RetryableError
from nexanest.pipeline.log import get_logger

TopicPartition = tuple[str, int]
_log = get_logger("pipeline.offsets")

_CLAIM: Final = """
INSERT INTO ingest_offsets (consumer_group, topic, partition, next_offset, generation)
SELECT $1, $2, p, NULL, 1 FROM unnest($3::int[]) AS p
ON CONFLICT (consumer_group, topic, partition)
DO UPDATE SET generation = ingest_offsets.generation + 1, updated_at = now()
RETURNING partition, next_offset, generation
"""

_STORE_FENCED: Final = """
WITH moved AS (
    UPDATE ingest_offsets AS o
       SET next_offset = v.next_offset, updated_at = now()
      FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[], $6::bigint[])
           AS v(topic, partition, next_offset, generation, expected)
     WHERE o.consumer_group = $1 AND o.topic = v.topic AND o.partition = v.partition
       AND o.generation = v.generation AND o.next_offset IS NOT DISTINCT FROM v.expected
 RETURNING o.topic, o.partition
)
SELECT topic, partition FROM moved
"""

_MARKS: Final = """
SELECT partition, source, max_seq FROM ingest_seq_marks
 WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3::int[])
"""

# Only called after _STORE_FENCED moved every pending offset: the claim holds.
_STORE_MARKS: Final = """
INSERT INTO ingest_seq_marks AS m (consumer_group, topic, partition, source, max_seq)
SELECT $1, t, p, s, q FROM unnest($2::text[], $3::int[], $4::text[], $5::bigint[]) AS v(t, p, s, q)
ON CONFLICT (consumer_group, topic, partition, source)
DO UPDATE SET max_seq = greatest(m.max_seq, excluded.max_seq)
"""

_FOUND: Final = """
SELECT topic, partition, next_offset, generation FROM ingest_offsets
 WHERE consumer_group = $1 AND (topic, partition) IN (SELECT * FROM unnest($2::text[], $3::int[]))
"""

_STORED: Final = """
SELECT partition, next_offset FROM ingest_offsets
 WHERE consumer_group = $1 AND topic = $2 AND next_offset IS NOT NULL
"""


class OffsetStore:
    """One consumer group's offsets: its claims, and the offsets the batch being
    written advances to (buffered by ``advance``, stored by ``store`` inside the
    writer's transaction, forgotten by ``stored`` once that commits)."""

    def __init__(self, pool: asyncpg.Pool, consumer_group: str) -> None:
        self._pool = pool
        self._group = consumer_group
        self._generations: dict[TopicPartition, int] = {}
        #: The next offset this consumer knows the database holds per claimed
        #: partition (None: never written), from the claim and each committed store.
        self._committed: dict[TopicPartition, int | None] = {}
        self._pending: dict[TopicPartition, int] = {}
        #: The claim generation each pending partition's records were taken under.
        self._pending_generations: dict[TopicPartition, int] = {}
        #: Per claimed partition, the committed high-water mark of each source.
        self._marks: dict[TopicPartition, dict[str, int]] = {}
        self._pending_marks: dict[TopicPartition, dict[str, int]] = {}

    async def claim(self, topic: str, partitions: Sequence[int]) -> dict[int, int | None]:
        """Claim partitions for this consumer; return the stored next offset of each.

        Incrementing the generation fences whoever held them before: a batch it
        is still writing will fail its generation check and roll back.
        """
        if not partitions:
            return {}
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(_CLAIM, self._group, topic, list(partitions))
                # Read after the claim: no earlier owner can move them any more.
                marks = await conn.fetch(_MARKS, self._group, topic, list(partitions))
        except RETRYABLE_DB_ERRORS as exc:
            raise RetryableError("timescaledb", exc) from exc
        for r in rows:
            self._generations[(topic, r["partition"])] = r["generation"]
            self._marks[(topic, r["partition"])] = {}
            self._committed[(topic, r["partition"])] = r["next_offset"]
        for m in marks:
            self._marks[(topic, m["partition"])][m["source"]] = m["max_seq"]
        return {r["partition"]: r["next_offset"] for r in rows}

    def marks(self, tp: TopicPartition) -> dict[str, int]:
        """The committed high-water mark of each source on ``tp`` (empty if not claimed)."""
        return self._marks.get(tp, {})

    def generation(self, tp: TopicPartition) -> int | None:
        """The generation of this consumer's claim on ``tp``, if it holds one."""
        return self._generations.get(tp)

    def release(self, partitions: Sequence[TopicPartition]) -> None:
        for tp in partitions:
            self._generations.pop(tp, None)
            self._marks.pop(tp, None)
            self._committed.pop(tp, None)

    def advance(
        self,
        next_offsets: Mapping[TopicPartition, int],
        marks: Mapping[TopicPartition, Mapping[str, int]] | None = None,
        generations: Mapping[TopicPartition, int] | None = None,
    ) -> None:
        """Record that the batch being written consumes the log up to ``next_offsets``
        and stores each source's ticks up to ``marks`` (highest seq) per partition.

        ``generations``: the claim each partition's records were taken under. A
        partition can be revoked and claimed again by this same consumer while
        records taken under the old claim still wait in a batch; meanwhile
        another consumer may have written them. Stored under the claim they were
        taken under, they are fenced (the generation moved on) instead of being
        written a second time."""
        self._pending.update(next_offsets)
        if generations:
            self._pending_generations.update(generations)
        for tp, by_source in (marks or {}).items():
            pending = self._pending_marks.setdefault(tp, {})
            for source, seq in by_source.items():
                if seq > pending.get(source, -1):
                    pending[source] = seq

    def replace_marks(self, marks: Mapping[TopicPartition, Mapping[str, int]]) -> None:
        """Replace the pending marks (their batch lost rows the database refused)."""
        self._pending_marks = {tp: dict(by_source) for tp, by_source in marks.items()}

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def discard(self) -> None:
        """Forget the pending offsets (their batch was fenced and is read again)."""
        self._pending = {}
        self._pending_generations = {}
        self._pending_marks = {}

    def stored(self) -> None:
        """The transaction that stored the pending offsets committed."""
        self._committed.update(self._pending)
        self._pending = {}
        self._pending_generations = {}
        for tp, by_source in self._pending_marks.items():
            committed = self._marks.get(tp)
            if committed is None:  # released meanwhile: its next claim reads them back
                continue
            for source, seq in by_source.items():
                if seq > committed.get(source, -1):
                    committed[source] = seq
        self._pending_marks = {}

    async def store(self, conn: asyncpg.Connection) -> None:
        """Move the pending offsets in the caller's transaction, each only if this
        consumer's claim on it still holds and the stored offset is the one it
        last committed; raises ``FencedError`` (roll back) otherwise. A stored
        offset behind the committed one (a failover lost transactions) is logged
        as ``stored_offsets_regressed`` with how many offsets went back."""
        items = list(self._pending.items())
        if not items:
            return
        unclaimed = [tp for tp, _ in items if tp not in self._generations]
        gens = {**self._generations, **self._pending_generations}
        if unclaimed:
            raise FencedError(unclaimed)
        moved = await conn.fetch(
            _STORE_FENCED,
            self._group,
            [t for (t, _), _ in items],
            [p for (_, p), _ in items],
            [off for _, off in items],
            [gens[tp] for tp, _ in items],
            [self._committed.get(tp) for tp, _ in items],
        )
        if len(moved) != len(items):
            done = {(r["topic"], r["partition"]) for r in moved}
            lost = [tp for tp, _ in items if tp not in done]
            await self._report_regressed(conn, lost)
            raise FencedError(lost, {tp: gens[tp] for tp in lost})
        marks = [(tp, src, seq) for tp, by_source in self._pending_marks.items() for src, seq in by_source.items()]
        if marks:
            await conn.execute(
                _STORE_MARKS,
                self._group,
                [t for (t, _), _, _ in marks],
                [p for (_, p), _, _ in marks],
                [source for _, source, _ in marks],
                [seq for _, _, seq in marks],
            )

    async def _report_regressed(self, conn: asyncpg.Connection, partitions: list[TopicPartition]) -> None:
        """Log the partitions (of a failed store) whose stored offset is behind the
        committed one under this consumer's claim, or whose claim itself is gone
        back to an older generation: the database lost committed transactions. (An
        offset ahead is a commit whose acknowledgement was lost: nothing to report.)"""
        found = await conn.fetch(_FOUND, self._group, [t for t, _ in partitions], [p for _, p in partitions])
        regressed = {}
        for r in found:
            tp = (r["topic"], r["partition"])
            ours, expected, now = self._generations.get(tp), self._committed.get(tp), r["next_offset"]
            if ours is None or r["generation"] > ours:
                continue  # another consumer's claim: a fence, not a loss
            if r["generation"] < ours or (expected is not None and (now is None or now < expected)):
                regressed[f"{tp[0]}[{tp[1]}]"] = (expected or 0) - (now or 0)
        if regressed:
            metrics.OFFSETS_REGRESSED.inc(len(regressed))
            _log.warning("stored_offsets_regressed", offsets_back=regressed)

    async def stored_offsets(self, topic: str) -> dict[int, int]:
        """The next offset to read per partition, as the database last committed it."""
        try:
            rows = await self._pool.fetch(_STORED, self._group, topic)
        except RETRYABLE_DB_ERRORS as exc:
            raise RetryableError("timescaledb", exc) from exc
        return {r["partition"]: r["next_offset"] for r in rows}

    def close(self) -> None:
        self._pending = {}
        self._pending_generations = {}
        self._generations = {}
        self._marks = {}
        self._pending_marks = {}
        self._committed = {}
