"""How far a replay is: the rows read and, for the progress bar's ETA, the total.

Parquet files state their row count; a CSV file does not, and
counting its lines first would read it twice. So while a CSV is involved the
total is estimated (``estimate_total_rows``) from the rows read so far and the
share of the files' bytes they took (``replay_files.record_batches`` says how
many bytes each batch stands for).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nexanest.producers.feeds.replay_files import row_count


def estimate_total_rows(rows_done: int, bytes_done: float, bytes_total: int) -> int | None:
    """The rows of files of ``bytes_total`` bytes, extrapolated from the ``rows_done``
    that took their first ``bytes_done`` bytes; None before any row is read. Never
    below ``rows_done``; exact once every byte is read."""
    if rows_done <= 0 or bytes_done <= 0:
        return None
    if bytes_done >= bytes_total:
        return rows_done
    return max(rows_done, round(rows_done * bytes_total / bytes_done))


@dataclass(slots=True)
class ReplayProgress:
    """The rows a replay has read and the share of its files' bytes they took."""

    #: Rows of all the files when every one states its count (Parquet), else None.
    known_rows: int | None = None
    bytes_total: int = 0
    sizes: dict[Path, int] = field(default_factory=dict)
    #: The share of ``bytes_total`` that ``rows_done`` took.
    bytes_done: float = 0.0
    #: Rows read (including those skipped by a checkpoint, and malformed ones).
    rows_done: int = 0

    def measure(self, files: Sequence[Path]) -> None:
        """Take the files' sizes and, where they state it, row counts (before reading)."""
        totals = [row_count(path) for path in files]
        self.known_rows = None if None in totals else sum(t for t in totals if t is not None)
        self.sizes = {path: path.stat().st_size for path in files}
        self.bytes_total = sum(self.sizes.values())

    def add_bytes(self, n_bytes: float) -> None:
        self.bytes_done += n_bytes

    @property
    def total_rows(self) -> int | None:
        """Exact from Parquet metadata, else (a CSV among the files) estimated from the bytes read so far."""
        if self.known_rows is not None:
            return self.known_rows
        return estimate_total_rows(self.rows_done, self.bytes_done, self.bytes_total)

    @property
    def total_estimated(self) -> bool:
        return self.known_rows is None
