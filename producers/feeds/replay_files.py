"""Reading the replay's tick files: CSV and Parquet, streamed, and a file's identity.

Never the whole file in memory: Parquet is read batch by batch within its row
groups (``ParquetFile.iter_batches``), CSV in blocks (``pyarrow.csv.open_csv``),
only the mapped columns of either. CSV columns are read as text, so that prices
and sizes stay exact whatever they look like (``replay_columns.py`` converts).

A file's identity is a hash of its size and its first and last MiB
(``file_identity``): it survives a rename or a copy, and a changed file gets a
new one; the replay names its ticks' source and its checkpoint after it.

Progress needs the bytes each record batch stands for: Parquet files state
their row count, so a row is ``size / rows`` bytes; a CSV file does not, but
the reader cuts it into blocks of ``CSV_BLOCK_BYTES`` at line ends and makes
one record batch of each, so a batch covers one block (the last one the rest of
the file).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from nexanest.producers.feeds.replay_columns import check_required

_IDENTITY_BYTES: Final = 1 << 20
#: The CSV reader's block: one record batch each (see "Progress" above).
CSV_BLOCK_BYTES: Final = 4 << 20


def file_identity(path: Path) -> str:
    """16 hex digits naming the file's content: its size and first and last MiB."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with path.open("rb") as f:
        digest.update(f.read(_IDENTITY_BYTES))
        if size > _IDENTITY_BYTES:
            f.seek(max(_IDENTITY_BYTES, size - _IDENTITY_BYTES))
            digest.update(f.read(_IDENTITY_BYTES))
    return digest.hexdigest()[:16]


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def row_count(path: Path) -> int | None:
    """The rows a Parquet file states in its metadata; None for CSV (counting would read it twice)."""
    if is_parquet(path):
        return int(pq.ParquetFile(path).metadata.num_rows)
    return None


def record_batches(
    path: Path,
    columns: Mapping[str, str],
    start_row: int,
    batch_rows: int,
    skipped: Callable[[float], None],
) -> Iterator[tuple[pa.RecordBatch, float]]:
    """The file's record batches from ``start_row`` on, reading only the mapped
    ``columns`` (field -> column), each with the bytes of the file it stands for.
    The bytes of the rows skipped to reach ``start_row`` are passed to ``skipped``
    as they are passed over. Raises ``ValueError`` when the file lacks a required
    column."""
    size = path.stat().st_size
    wanted = list(dict.fromkeys(column for column in columns.values() if column))
    if is_parquet(path):
        pf = pq.ParquetFile(path)
        names = set(pf.schema_arrow.names)
        present = [col for col in wanted if col in names]
        check_required(columns, names, path)
        groups, first = [], 0
        for i in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(i).num_rows
            if first + n > start_row:
                groups.append(i)
            else:
                first += n
        skip = start_row - first
        row_bytes = size / max(1, pf.metadata.num_rows)
        skipped(first * row_bytes)
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=present):
            skipped(min(skip, batch.num_rows) * row_bytes)
            if skip >= batch.num_rows:
                skip -= batch.num_rows
                continue
            kept = batch.slice(skip) if skip else batch
            yield kept, kept.num_rows * row_bytes
            skip = 0
        return
    header = pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=1 << 16))
    names = set(header.schema.names)
    header.close()
    check_required(columns, names, path)
    # Every mapped column as text: exact, whatever the values look like (--ts-format reads the times).
    text_columns = {col: pa.string() for col in wanted if col in names}
    reader = pa_csv.open_csv(
        path,
        read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
        convert_options=pa_csv.ConvertOptions(
            column_types=text_columns,
            include_columns=[col for col in wanted if col in names],
            strings_can_be_null=True,
        ),
    )
    skip, read = start_row, 0.0
    try:
        for batch in reader:
            block = min(CSV_BLOCK_BYTES, size - read)  # one block per record batch, the last one shorter
            read += block
            if skip >= batch.num_rows:
                skip -= batch.num_rows
                skipped(block)
                continue
            skipped(block * skip / batch.num_rows)
            kept = batch.slice(skip) if skip else batch
            yield kept, block * kept.num_rows / batch.num_rows
            skip = 0
    finally:
        reader.close()
