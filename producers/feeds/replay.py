"""``replay``: ticks from CSV and Parquet files, for backfill or a paced replay.

Streaming, never the whole file in memory: Parquet is read batch by batch
within its row groups (``ParquetFile.iter_batches``), CSV in blocks
(``pyarrow.csv.open_csv``). Each record batch becomes ticks column by column
through ``producers/normalise.py``: prices and sizes exact from their text
(CSV columns are read as strings for that reason), timestamps to UTC ns.

Identity, sequence numbers and resuming
---------------------------------------
A file's identity is a hash of its size and its first and last MiB
(``file_identity``): it survives a rename or a copy, and a changed file gets a
new one. Every tick of the file has ``source = "replay:<identity>"`` and
``seq`` = its row number (0-based, header excluded), so the same row always
becomes the same ``(source, seq)``.

The checkpoint, ``<state dir>/<identity>.json``, records how many rows Kafka
has acknowledged (``rows``): it is written (atomically: a temporary file, fsync,
rename) only from ``acknowledged``, which the feed runner calls after Kafka
acknowledged a whole batch, in order. A run after Ctrl-C or ``kill -9`` starts
at that row: nothing before it can be missing, and the rows after it that had
reached Kafka already are sent again with the same ``(source, seq)``; the
consumer drops them: their ``seq`` is at or below the highest one stored from
their partition (``pipeline/runner.py``). No gap, no duplicate.

History goes to the backfill topic
----------------------------------
The adapter declares ``backfill = True``, so ``nexanest feed run replay``
publishes to ``kafka.backfill_topic`` (``ticks.backfill``) unless ``--live``
is given. The consumer reads that topic in a loop and consumer group of its own
with every validation rule but ``stale_timestamp`` (see
``consumers/ticks_to_timescale.py``): a backfill never delays the live ticks
behind it, and a broken live feed sending old data is still refused.

Pace: ``--speed max`` (default) publishes as fast as Kafka acknowledges;
``--speed 1`` at the file's original pace, ``--speed N`` N times faster, by
tick time from the first row replayed.

Progress: Parquet files state their row count; a CSV file does not, and
counting its lines first would read it twice. So while a CSV is involved the
total is estimated (``estimate_total_rows``) from the rows read so far and the
share of the files' bytes they took: the CSV reader cuts a file into blocks of
``CSV_BLOCK_BYTES`` at line ends and makes one record batch of each, so a batch
covers one block (the last one the rest of the file).

Symbols: ``--symbol-map VENUE=CANONICAL,...`` renames a file's symbols (looked
up by their upper-case form); the others keep their upper-case form.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from nexanest.producers.feeds.adapter import FeedHealth, FeedObserver
from nexanest.producers.normalise import (
    NormaliseError,
    Normaliser,
    add_symbol_map_argument,
    check_symbols,
    decimal_e9,
    ts_ns_from_iso,
    ts_ns_from_ms,
    ts_ns_from_s,
    ts_ns_from_us,
)
from nexanest.schemas.ticks import Tick

if TYPE_CHECKING:
    from nexanest.pipeline.settings import Settings

#: The tick fields a column can be mapped to (``--columns field=column,...``).
FIELDS: Final = ("ts", "symbol", "price", "size", "bid", "ask", "exchange")
REQUIRED: Final = ("ts", "symbol", "price", "size")
TS_FORMATS: Final = ("auto", "iso", "s", "ms", "us", "ns")
#: Rows per record batch read, and per batch published when not paced.
BATCH_ROWS: Final = 10_000
#: Rows per batch when paced, so that pacing is smooth.
PACED_BATCH_ROWS: Final = 200
_IDENTITY_BYTES: Final = 1 << 20
#: The CSV reader's block: one record batch each (see "Progress" above).
CSV_BLOCK_BYTES: Final = 4 << 20
_CHECKPOINT_EVERY_S: Final = 0.25
#: When paced, ticks due within this much wall time of each other go out together.
_PACE_STEP_S: Final = 0.01
_TS_FROM_INT: Final[Mapping[str, Callable[[int], int]]] = {
    "s": ts_ns_from_s,
    "ms": ts_ns_from_ms,
    "us": ts_ns_from_us,
    "ns": lambda v: v,
}


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


def parse_columns(text: str) -> dict[str, str]:
    """``ts=time,price=px`` -> ``{"ts": "time", "price": "px"}`` over the defaults (field = column)."""
    mapping = {field: field for field in FIELDS}
    for item in filter(None, (part.strip() for part in text.split(","))):
        field, sep, column = item.partition("=")
        if not sep or field not in FIELDS or not column:
            raise argparse.ArgumentTypeError(
                f"--columns takes FIELD=COLUMN with FIELD in {', '.join(FIELDS)}: {item!r}"
            )
        mapping[field] = column
    return mapping


def parse_speed(text: str) -> float | None:
    """``max`` -> None (as fast as possible); a positive number: times the original pace."""
    if text == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        speed = -1.0
    if not speed > 0:
        raise argparse.ArgumentTypeError(f"--speed is max or a positive number, not {text!r}")
    return speed


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    files: tuple[Path, ...]
    state_dir: Path
    columns: Mapping[str, str]
    ts_format: str = "auto"
    speed: float | None = None  # None: as fast as possible
    exchange: str = "replay"
    restart: bool = False  # ignore existing checkpoints
    #: Integer price/size/bid/ask columns hold whole "units" or are already x 1e9 ("e9").
    int_scale: str = "units"
    batch_rows: int = BATCH_ROWS
    #: A file's symbol (upper case) -> canonical symbol; unmapped symbols keep their upper-case form.
    symbol_map: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Checkpoint:
    """How far a file's replay is acknowledged by Kafka."""

    identity: str
    path: str
    rows: int = 0
    total_rows: int | None = None

    @property
    def done(self) -> bool:
        return self.total_rows is not None and self.rows >= self.total_rows


def checkpoint_path(state_dir: Path, identity: str) -> Path:
    return state_dir / f"{identity}.json"


def read_checkpoint(state_dir: Path, identity: str) -> Checkpoint | None:
    try:
        data = json.loads(checkpoint_path(state_dir, identity).read_text())
    except FileNotFoundError:
        return None
    return Checkpoint(identity, str(data["path"]), int(data["rows"]), data.get("total_rows"))


def write_checkpoint(state_dir: Path, checkpoint: Checkpoint) -> None:
    """Replace the checkpoint atomically: a crash leaves the old one or the new one, whole."""
    state_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(state_dir, checkpoint.identity)
    tmp = final.with_suffix(".json.tmp")
    body = {
        "identity": checkpoint.identity,
        "path": checkpoint.path,
        "rows": checkpoint.rows,
        "total_rows": checkpoint.total_rows,
        "updated": datetime.now(UTC).isoformat(),
    }
    with tmp.open("w") as f:
        json.dump(body, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(final)


def estimate_total_rows(rows_done: int, bytes_done: float, bytes_total: int) -> int | None:
    """The rows of files of ``bytes_total`` bytes, extrapolated from the ``rows_done``
    that took their first ``bytes_done`` bytes; None before any row is read. Never
    below ``rows_done``; exact once every byte is read."""
    if rows_done <= 0 or bytes_done <= 0:
        return None
    if bytes_done >= bytes_total:
        return rows_done
    return max(rows_done, round(rows_done * bytes_total / bytes_done))


def _by_magnitude(value: int) -> int:
    """Epoch integer to ns, its unit guessed from a value near today: s < 1e11 <= ms < 1e14 <= us < 1e17 <= ns."""
    n = abs(value)
    unit = "s" if n < 10**11 else "ms" if n < 10**14 else "us" if n < 10**17 else "ns"
    return _TS_FROM_INT[unit](value)


def _auto_text(value: str) -> int:
    """CSV text under ``--ts-format auto``: digits are an epoch integer, anything else RFC 3339."""
    if value.lstrip("-").isdigit():
        return _by_magnitude(int(value))
    return ts_ns_from_iso(value)


def _ts_converter(column: pa.ChunkedArray | pa.Array, ts_format: str) -> Callable[[Any], int]:
    """How to turn one value of the timestamp column into ns, from its Arrow type and ``ts_format``."""
    kind = column.type
    if ts_format == "iso":
        return ts_ns_from_iso
    if ts_format in _TS_FROM_INT:
        unit = _TS_FROM_INT[ts_format]
        return lambda v: unit(int(v))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _auto_text
    if pa.types.is_integer(kind):
        return lambda v: _by_magnitude(int(v))
    raise ValueError(f"cannot read timestamps of type {kind} (see --ts-format)")


def _e9_converter(kind: pa.DataType, int_scale: str) -> Callable[[Any], int]:
    """Exact e9 integers from decimal text, Arrow decimals, integers (whole units, or
    already e9 with ``int_scale="e9"``) or (by their shortest repr, which is what
    was written) floats."""
    if pa.types.is_integer(kind):
        return int if int_scale == "e9" else lambda v: decimal_e9(str(v))
    if pa.types.is_floating(kind):
        return lambda v: decimal_e9(repr(float(v)))
    if pa.types.is_decimal(kind):
        return lambda v: decimal_e9(format(v, "f") if isinstance(v, Decimal) else str(v))
    return decimal_e9


class ReplayFeed:
    """Replays files, one after another, each from its checkpoint (a ``FeedAdapter``)."""

    name: ClassVar[str] = "replay"
    venue: ClassVar[str] = "replay"
    backfill: ClassVar[bool] = True

    def __init__(self, config: ReplayConfig) -> None:
        missing = [f for f in REQUIRED if not config.columns.get(f)]
        if missing:
            raise ValueError(f"no column mapped to {', '.join(missing)}")
        self.config = config
        self._observer: FeedObserver | None = None
        self._stopping = False
        self._health = FeedHealth()
        #: Per batch yielded and not yet acknowledged: its file's checkpoint and the row to resume at after it.
        self._unacknowledged: deque[tuple[Checkpoint, int]] = deque()
        self._checkpointed_at = 0.0
        self.current: Checkpoint | None = None
        #: Rows of all the files when every one states its count (Parquet), else None.
        self._known_rows: int | None = None
        self._bytes_total = 0
        self._sizes: dict[Path, int] = {}
        #: The share of ``_bytes_total`` that ``rows_done`` took (see "Progress" above).
        self._bytes_done = 0.0
        self.rows_done = 0  # rows read (including skipped by a checkpoint, and malformed)
        #: The tick-time range (ns) of the ticks yielded: what a bars refresh must cover.
        self.ts_range: tuple[int, int] | None = None

    async def start(self, observer: FeedObserver) -> None:
        self._observer = observer
        totals = [self._row_count(path) for path in self.config.files]
        self._known_rows = None if None in totals else sum(t for t in totals if t is not None)
        self._sizes = {path: path.stat().st_size for path in self.config.files}
        self._bytes_total = sum(self._sizes.values())
        self._health.connected = True
        await observer.connected(f"{len(self.config.files)} file(s): {', '.join(str(f) for f in self.config.files)}")

    async def stop(self) -> None:
        self._stopping = True

    def stopping(self) -> bool:
        return self._stopping

    def health(self) -> FeedHealth:
        return self._health

    @property
    def total_rows(self) -> int | None:
        """Rows of all the files: exact from Parquet metadata, else (a CSV among
        them) estimated from the bytes read so far (``total_estimated``)."""
        if self._known_rows is not None:
            return self._known_rows
        return estimate_total_rows(self.rows_done, self._bytes_done, self._bytes_total)

    @property
    def total_estimated(self) -> bool:
        return self._known_rows is None

    @staticmethod
    def _row_count(path: Path) -> int | None:
        if path.suffix.lower() in (".parquet", ".pq"):
            return int(pq.ParquetFile(path).metadata.num_rows)
        return None

    async def ticks(self) -> AsyncIterator[Sequence[Tick]]:
        for path in self.config.files:
            if self._stopping:
                return
            async for batch in self._replay_file(path):
                yield batch

    async def _replay_file(self, path: Path) -> AsyncIterator[Sequence[Tick]]:
        c = self.config
        identity = file_identity(path)
        saved = None if c.restart else read_checkpoint(c.state_dir, identity)
        checkpoint = Checkpoint(identity, str(path), saved.rows if saved else 0, self._row_count(path))
        self.current = checkpoint
        start_row = checkpoint.rows
        self.rows_done += start_row
        self._health.detail = f"{path.name}: from row {start_row:,}"
        if checkpoint.done:
            self._bytes_done += self._sizes.get(path, 0)
            return
        norm = Normaliser(c.exchange, f"replay:{identity}", seq_start=start_row, renames=c.symbol_map)
        pace = _Pace(c.speed)
        row = start_row
        step = PACED_BATCH_ROWS if c.speed is not None else c.batch_rows
        for record_batch, batch_bytes in self._record_batches(path, start_row):
            if self._stopping:
                return
            for offset in range(0, record_batch.num_rows, step):
                chunk = record_batch.slice(offset, step)
                ticks = await self._convert(chunk, norm, row)
                row += chunk.num_rows
                self.rows_done += chunk.num_rows
                self._bytes_done += batch_bytes * chunk.num_rows / record_batch.num_rows
                for due in pace.groups(ticks):  # one group flat out; groups due together when paced
                    await pace.wait(due[0].ts_ns)
                    self._unacknowledged.append((checkpoint, row if due[-1] is ticks[-1] else due[-1].seq + 1))
                    self._health.ticks += len(due)
                    self._health.last_tick_ns = due[-1].ts_ns
                    self._extend_range(due)
                    yield due
                    if self.stopping():
                        return
        # Rows after the last tick (malformed ones) are done once that tick is acknowledged.
        if self._unacknowledged and self._unacknowledged[-1][0] is checkpoint:
            last_checkpoint, _ = self._unacknowledged.pop()
            self._unacknowledged.append((last_checkpoint, row))
        elif row > checkpoint.rows:  # nothing of this file awaits Kafka: done now
            checkpoint.rows = row
            write_checkpoint(c.state_dir, checkpoint)

    def _extend_range(self, ticks: Sequence[Tick]) -> None:
        low = min(t.ts_ns for t in ticks)
        high = max(t.ts_ns for t in ticks)
        if self.ts_range is not None:
            low, high = min(low, self.ts_range[0]), max(high, self.ts_range[1])
        self.ts_range = (low, high)

    def _record_batches(self, path: Path, start_row: int) -> Iterator[tuple[pa.RecordBatch, float]]:
        """The file's record batches from ``start_row`` on, reading only the mapped
        columns, each with the bytes of the file it stands for (the rows skipped to
        reach ``start_row`` are counted in ``_bytes_done`` here)."""
        c = self.config
        size = path.stat().st_size
        wanted = list(dict.fromkeys(column for column in c.columns.values() if column))
        if path.suffix.lower() in (".parquet", ".pq"):
            pf = pq.ParquetFile(path)
            names = set(pf.schema_arrow.names)
            columns = [col for col in wanted if col in names]
            self._check_required(names, path)
            groups, first = [], 0
            for i in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(i).num_rows
                if first + n > start_row:
                    groups.append(i)
                else:
                    first += n
            skip = start_row - first
            row_bytes = size / max(1, pf.metadata.num_rows)
            self._bytes_done += first * row_bytes
            for batch in pf.iter_batches(batch_size=c.batch_rows, row_groups=groups, columns=columns):
                self._bytes_done += min(skip, batch.num_rows) * row_bytes
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
        self._check_required(names, path)
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
                    self._bytes_done += block
                    continue
                self._bytes_done += block * skip / batch.num_rows
                kept = batch.slice(skip) if skip else batch
                yield kept, block * kept.num_rows / batch.num_rows
                skip = 0
        finally:
            reader.close()

    def _check_required(self, names: set[str], path: Path) -> None:
        absent = [f"{f}={self.config.columns[f]}" for f in REQUIRED if self.config.columns[f] not in names]
        if absent:
            raise ValueError(f"{path}: no column for {', '.join(absent)} (columns: {', '.join(sorted(names))})")

    async def _convert(self, batch: pa.RecordBatch, norm: Normaliser, first_row: int) -> list[Tick]:
        """The batch's rows as ticks (``seq`` = row number); malformed rows reported and skipped."""
        c = self.config
        present = set(batch.schema.names)

        def column(field: str) -> list[Any] | None:
            name = c.columns.get(field)
            return batch.column(name).to_pylist() if name and name in present else None

        ts_column = batch.column(c.columns["ts"])
        if pa.types.is_timestamp(ts_column.type):
            as_ns = pc.cast(ts_column, pa.timestamp("ns", tz=ts_column.type.tz)).cast(pa.int64())
            ts_values: list[Any] = as_ns.to_pylist()
            to_ns: Callable[[Any], int] = int
        else:
            ts_values = ts_column.to_pylist()
            to_ns = _ts_converter(ts_column, c.ts_format)
        converters = {
            f: _e9_converter(batch.column(c.columns[f]).type, c.int_scale)
            for f in ("price", "size", "bid", "ask")
            if c.columns.get(f) in present
        }
        symbols, prices, sizes = column("symbol"), column("price"), column("size")
        if symbols is None or prices is None or sizes is None:
            raise ValueError("a required column is missing")  # checked by _check_required
        bids, asks, exchanges = column("bid"), column("ask"), column("exchange")
        price_of, size_of = converters["price"], converters["size"]
        bid_of, ask_of = converters.get("bid"), converters.get("ask")
        known: dict[str, str | None] = {}

        def row_tick(i: int) -> Tick | str:
            """Row ``i`` as a tick, or the reason it cannot be one."""
            raw_symbol = symbols[i]
            if raw_symbol is None or ts_values[i] is None or prices[i] is None or sizes[i] is None:
                return "missing_value"
            symbol = known.get(raw_symbol)
            if symbol is None:
                symbol = known[raw_symbol] = norm.symbol(str(raw_symbol))
                if symbol is None:
                    return "bad_symbol"
            bid = bids[i] if bids is not None else None
            ask = asks[i] if asks is not None else None
            exchange = exchanges[i] if exchanges is not None else None
            return norm.tick(
                symbol,
                price_of(prices[i]),
                size_of(sizes[i]),
                to_ns(ts_values[i]),
                bid_e9=None if bid is None or bid_of is None else bid_of(bid),
                ask_e9=None if ask is None or ask_of is None else ask_of(ask),
                exchange=str(exchange) if exchange else None,
                seq=first_row + i,
            )

        out: list[Tick] = []
        for i in range(batch.num_rows):
            try:
                result = row_tick(i)
            except NormaliseError as exc:
                result = exc.reason
            except (ValueError, TypeError, msgspec.ValidationError) as exc:  # a value no converter takes
                result = f"bad_value: {exc}"
            if isinstance(result, Tick):
                out.append(result)
            else:
                await self._malformed(result, batch.slice(i, 1).to_pylist()[0], first_row + i)
        return out

    async def _malformed(self, reason: str, row: Mapping[str, Any], number: int) -> None:
        self._health.rejected += 1
        if self._observer is not None:
            await self._observer.malformed(reason, f"row {number}: {row}")

    async def acknowledged(self, ticks: Sequence[Tick]) -> None:
        """Kafka holds ``ticks`` (the oldest batch in flight): move its file's checkpoint."""
        checkpoint, resume_at = self._unacknowledged.popleft()
        checkpoint.rows = resume_at
        now = time.monotonic()
        last_of_file = not any(pending is checkpoint for pending, _ in self._unacknowledged)
        if last_of_file or now - self._checkpointed_at >= _CHECKPOINT_EVERY_S:
            write_checkpoint(self.config.state_dir, checkpoint)
            self._checkpointed_at = now


class _Pace:
    """Sleeps so that tick time advances ``speed`` times as fast as wall time."""

    def __init__(self, speed: float | None) -> None:
        self._speed = speed
        self._origin: tuple[int, float] | None = None

    def groups(self, ticks: list[Tick]) -> list[list[Tick]]:
        """``ticks`` cut where the next one is due more than ``_PACE_STEP_S`` of wall time later."""
        if not ticks:
            return []
        if self._speed is None:
            return [ticks]
        step_ns = _PACE_STEP_S * 1e9 * self._speed
        out: list[list[Tick]] = [[ticks[0]]]
        for tick in ticks[1:]:
            if tick.ts_ns - out[-1][0].ts_ns > step_ns:
                out.append([tick])
            else:
                out[-1].append(tick)
        return out

    async def wait(self, ts_ns: int) -> None:
        if self._speed is None:
            await asyncio.sleep(0)  # let the publisher's acknowledgements in
            return
        if self._origin is None:
            self._origin = (ts_ns, time.monotonic())
        first_ns, started = self._origin
        delay = started + (ts_ns - first_ns) / 1e9 / self._speed - time.monotonic()
        await asyncio.sleep(max(0.0, delay))


class ReplayPlugin:
    """``nexanest feed run replay FILE...``: the ``nexanest.feeds`` entry point of this feed."""

    name = "replay"
    summary = "replay or backfill CSV/Parquet files of ticks (resumable; history goes to the backfill topic)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="CSV or Parquet (.parquet) files")
        parser.add_argument(
            "--columns",
            type=parse_columns,
            default=parse_columns(""),
            metavar="FIELD=COLUMN,...",
            help=f"column of each tick field (default: same name); fields: {', '.join(FIELDS)}",
        )
        parser.add_argument(
            "--ts-format",
            choices=TS_FORMATS,
            default="auto",
            help="timestamp column: RFC 3339 text (iso), epoch s/ms/us/ns integers; auto: Arrow timestamps as "
            "they are, text as iso, integers by magnitude (default auto)",
        )
        parser.add_argument(
            "--speed",
            type=parse_speed,
            default=None,
            metavar="max|N",
            help="max: as fast as Kafka takes it (default); N: N times the original pace (1 = original)",
        )
        parser.add_argument(
            "--int-scale",
            choices=("units", "e9"),
            default="units",
            help="integer price/size/bid/ask columns: whole units, or already x 1e9 (default units)",
        )
        parser.add_argument("--exchange", default="replay", help="exchange of rows without one (default replay)")
        add_symbol_map_argument(
            parser, "rename the file's symbols: BTCUSDT=BTC-USDT,... (default: each symbol's upper-case form)"
        )
        parser.add_argument(
            "--state-dir",
            type=Path,
            default=None,
            help="checkpoint directory (default: settings feed_state_dir, .nexanest/feeds)",
        )
        parser.add_argument("--restart", action="store_true", help="ignore checkpoints: replay from the first row")

    def create(self, args: argparse.Namespace, settings: Settings) -> ReplayFeed:
        for path in args.files:
            if not path.is_file():
                raise ValueError(f"no such file: {path}")
        check_symbols(args.symbol_map.values(), settings.validation.symbol_pattern)
        return ReplayFeed(
            ReplayConfig(
                files=tuple(args.files),
                state_dir=(args.state_dir or settings.feed_state_dir).expanduser(),
                columns=args.columns,
                ts_format=args.ts_format,
                speed=args.speed,
                exchange=args.exchange,
                restart=args.restart,
                int_scale=args.int_scale,
                symbol_map=args.symbol_map,
            )
        )
