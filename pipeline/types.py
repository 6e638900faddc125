"""The pipeline's small interfaces.

A ``Sink`` buffers rows with ``write`` (no I/O) and makes them durable with
``flush``; the ``BatchSink`` is the one whose transaction a batch commits in;
``ClaimedOffsets`` is the part of the offset store (claims, fencing, marks) the
loop uses, ``PartitionClaimer`` the rebalance listener's claim, and
``BatchObserver`` what watches the batches (system events). The consumer loop
(``runner``) is written against these, so each can be replaced (tests, other
stores) without touching it. The feed adapters' interface lives with them, in
``producers/feeds/adapter.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar

from nexanest.schemas.ticks import Tick

T_contra = TypeVar("T_contra", contravariant=True)
#: A consumed tick with the Kafka partition and offset it came from.
TickEntry = tuple[Tick, int, int]
#: A Kafka partition as the offset store keys it: ``(topic, partition)``.
PartitionKey = tuple[str, int]


class Sink(Protocol[T_contra]):
    name: str

    def write(self, rows: Sequence[T_contra]) -> None:
        """Buffer rows for the next flush. No I/O; never raises for valid rows."""

    async def flush(self) -> int:
        """Make everything written since the last flush durable; return the row count.

        Raises ``RetryableError`` when a dependency is down (the buffer is kept,
        so the same flush can be retried).
        """

    async def close(self) -> None: ...


class AfterCommitSink(Sink[T_contra], Protocol[T_contra]):
    """A sink of derived data that the consumer loop flushes after the batch's
    TimescaleDB transaction committed (``IngestLoop(after_commit=...)``), with
    the loop's retry; a failure there never rolls the ticks back."""

    def discard(self) -> None:
        """Drop what ``write`` buffered: its batch was rolled back (fenced) and
        will be read again, by this consumer or another."""


class BatchSink(Protocol):
    """Where a batch's ticks become durable, in one transaction with the offsets
    they advance to (``TimescaleSink``): the loop commits to Kafka only after it."""

    name: str

    def write(self, rows: Sequence[TickEntry]) -> None:
        """Buffer ``(tick, partition, offset)`` entries. No I/O."""

    def write_checked(self, rows: Sequence[TickEntry]) -> None:
        """Buffer entries that may be stored already (re-sent out of ``seq`` order):
        ``flush`` stores only those the table does not hold. No I/O."""

    async def flush(self) -> int:
        """Commit the buffer; return the rows written. Raises ``RetryableError``
        (buffer kept: call again), ``FencedError`` (another consumer claimed a
        partition: ``discard``) and ``RejectedByDatabase`` (the refused rows left
        the buffer: dead-letter them, call again for the rest)."""

    def discard(self) -> None:
        """Drop the buffer: its batch was fenced and will be read again."""


class ClaimedOffsets(Protocol):
    """The consumer group's offsets as the loop sees them (``pipeline/offsets.OffsetStore``):
    the claims it holds, each source's high-water mark per partition, and the
    offsets the batch being written advances to (stored in that batch's
    transaction by the ``BatchSink``)."""

    def generation(self, tp: PartitionKey) -> int | None:
        """The generation of this consumer's claim on ``tp``; ``None`` when it holds none."""

    def marks(self, tp: PartitionKey) -> Mapping[str, int]:
        """The committed highest ``seq`` of each source on ``tp`` (empty if not claimed)."""

    def advance(
        self,
        next_offsets: Mapping[PartitionKey, int],
        marks: Mapping[PartitionKey, Mapping[str, int]] | None = None,
        generations: Mapping[PartitionKey, int] | None = None,
    ) -> None:
        """Buffer the offsets and marks the batch being written moves to, under
        the claim generations its records were taken under. No I/O."""

    def replace_marks(self, marks: Mapping[PartitionKey, Mapping[str, int]]) -> None:
        """Replace the buffered marks (their batch lost rows the database refused). No I/O."""

    def release(self, partitions: Sequence[PartitionKey]) -> None:
        """Forget the claims on ``partitions``. No I/O."""

    async def stored_offsets(self, topic: str) -> dict[int, int]:
        """The next offset per partition of ``topic`` as the database last committed
        it. Raises ``RetryableError`` while the database is away."""


class PartitionClaimer(Protocol):
    """Claims partitions back after a fence (``pipeline/rebalance.ResumeFromDatabase``)."""

    async def claim_and_seek(self, partitions: list[int], *, fallback_offsets: dict[int, int] | None = None) -> int:
        """Claim ``partitions`` (retrying while the database is away) and seek the
        consumer to each one's stored offset, else to ``fallback_offsets``."""


class BatchObserver(Protocol):
    """Hears of the loop's outages and committed batches (``pipeline/events.BatchMonitor``:
    the ``batch_failed``, ``dlq_burst`` and ``lag_high`` system events). The loop
    awaits each call, so they must not block for long."""

    async def batch_failed(self, step: str, error: str) -> None:
        """The first failure of a batch write to ``step`` (the loop retries it)."""

    async def batch_recovered(self, step: str, retries: int, outage_s: float) -> None:
        """The write to ``step`` succeeded after ``retries`` retries."""

    async def after_batch(
        self,
        *,
        rejected_by_reason: Mapping[str, int],
        lags: Mapping[PartitionKey, int],
        assigned: Sequence[PartitionKey] | set[PartitionKey],
    ) -> None:
        """Figures of one committed batch: dead letters by reason, lag per assigned partition."""
