"""The pipeline's small interfaces.

A ``Sink`` buffers rows with ``write`` (no I/O) and makes them durable with
``flush``; a ``FeedAdapter`` yields ticks. Everything else is plain functions
and the consumer loop in ``runner``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import ClassVar, Protocol, TypeVar

from nexanest.schemas.ticks import Tick

T_contra = TypeVar("T_contra", contravariant=True)


class Sink(Protocol[T_contra]):
    name: str

    def write(self, rows: Sequence[T_contra]) -> None:
        """Buffer rows for the next flush. No I/O; never raises for valid rows."""

    async def flush(self) -> int:
        """Make everything written since the last flush durable; return the row count.

        Raises ``RetryableError`` when a dependency is down (the buffer is kept,
        so the same flush can be retried) and ``Backpressure`` when it cannot
        take more now.
        """

    async def close(self) -> None: ...


class AfterCommitSink(Sink[T_contra], Protocol[T_contra]):
    """A sink of derived data that the consumer loop flushes after the batch's
    TimescaleDB transaction committed (``IngestLoop(after_commit=...)``), with
    the loop's retry; a failure there never rolls the ticks back."""

    def discard(self) -> None:
        """Drop what ``write`` buffered: its batch was rolled back (fenced) and
        will be read again, by this consumer or another."""


class FeedAdapter(Protocol):
    """A source of ticks: an exchange connection, a file replay, a simulator."""

    venue: ClassVar[str]

    def ticks(self) -> AsyncIterator[Sequence[Tick]]:
        """Yield ticks in batches, in the order the venue sent them."""
