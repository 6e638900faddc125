"""The pipeline's small interfaces.

A ``Sink`` buffers rows with ``write`` (no I/O) and makes them durable with
``flush``; the ``BatchSink`` is the one whose transaction a batch commits in.
The consumer loop (``runner``) is written against these, so each can be
replaced (tests, other stores) without touching it. The feed adapters' interface lives with them, in
``producers/feeds/adapter.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from nexanest.schemas.ticks import Tick

T_contra = TypeVar("T_contra", contravariant=True)
#: A consumed tick with the Kafka partition and offset it came from.
TickEntry = tuple[Tick, int, int]


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
