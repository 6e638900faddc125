"""``replay``: ticks from CSV and Parquet files, for backfill or a paced replay.

This module is the feed itself (``ReplayFeed``, a ``FeedAdapter``) and its
``nexanest feed run replay`` plugin; the parts it is made of live beside it:

* ``replay_files.py``: the files read in record batches, streamed (never the
  whole file in memory), and a file's identity;
* ``replay_columns.py``: ``--columns`` and how a row becomes a tick (prices
  and sizes exact, timestamps to UTC ns, malformed rows a reason);
* ``replay_checkpoints.py``: the rows of a file Kafka has acknowledged;
* ``replay_progress.py``: the rows read and the (for CSV estimated) total;
* ``replay_pace.py``: ``--speed``.

Identity, sequence numbers and resuming
---------------------------------------
Every tick of a file has ``source = "replay:<identity>"`` and ``seq`` = its row
number (0-based, header excluded), so the same row always becomes the same
``(source, seq)``.

The checkpoint, ``<state dir>/<identity>.json``, records how many rows Kafka
has acknowledged (``rows``): it is written only from ``acknowledged``, which
the feed runner calls after Kafka acknowledged a whole batch, in order. A run
after Ctrl-C or ``kill -9`` starts at that row: nothing before it can be
missing, and the rows after it that had reached Kafka already are sent again
with the same ``(source, seq)``; the consumer drops them: their ``seq`` is at
or below the highest one stored from their partition (``pipeline/runner.py``).
No gap, no duplicate.

History goes to the backfill topic
----------------------------------
The adapter declares ``backfill = True``, so ``nexanest feed run replay``
publishes to ``kafka.backfill_topic`` (``ticks.backfill``) unless ``--live``
is given. The consumer reads that topic in a loop and consumer group of its own
with every validation rule but ``stale_timestamp`` (see
``consumers/ticks_to_timescale.py``): a backfill never delays the live ticks
behind it, and a broken live feed sending old data is still refused.

Symbols: ``--symbol-map VENUE=CANONICAL,...`` renames a file's symbols (looked
up by their upper-case form); the others keep their upper-case form.
"""

from __future__ import annotations

import argparse
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

import pyarrow as pa

from nexanest.producers.feeds.adapter import FeedHealth, FeedObserver
from nexanest.producers.feeds.replay_checkpoints import Checkpoint, read_checkpoint, write_checkpoint
from nexanest.producers.feeds.replay_columns import FIELDS, TS_FORMATS, parse_columns, row_reader, unmapped_required
from nexanest.producers.feeds.replay_files import file_identity, record_batches, row_count
from nexanest.producers.feeds.replay_pace import Pace, parse_speed
from nexanest.producers.feeds.replay_progress import ReplayProgress
from nexanest.producers.normalise import Normaliser, add_symbol_map_argument, check_symbols
from nexanest.schemas.ticks import Tick

if TYPE_CHECKING:
    from nexanest.pipeline.settings import Settings

#: Rows per record batch read, and per batch published when not paced.
BATCH_ROWS: Final = 10_000
#: Rows per batch when paced, so that pacing is smooth.
PACED_BATCH_ROWS: Final = 200
_CHECKPOINT_EVERY_S: Final = 0.25


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


class ReplayFeed:
    """Replays files, one after another, each from its checkpoint (a ``FeedAdapter``)."""

    name: ClassVar[str] = "replay"
    venue: ClassVar[str] = "replay"
    backfill: ClassVar[bool] = True

    def __init__(self, config: ReplayConfig) -> None:
        missing = unmapped_required(config.columns)
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
        self._progress = ReplayProgress()
        #: The tick-time range (ns) of the ticks yielded: what a bars refresh must cover.
        self.ts_range: tuple[int, int] | None = None

    async def start(self, observer: FeedObserver) -> None:
        self._observer = observer
        self._progress.measure(self.config.files)
        self._health.connected = True
        await observer.connected(f"{len(self.config.files)} file(s): {', '.join(str(f) for f in self.config.files)}")

    async def stop(self) -> None:
        self._stopping = True

    def stopping(self) -> bool:
        return self._stopping

    def health(self) -> FeedHealth:
        return self._health

    @property
    def rows_done(self) -> int:
        """Rows read (including those skipped by a checkpoint, and malformed ones)."""
        return self._progress.rows_done

    @property
    def total_rows(self) -> int | None:
        """Rows of all the files: exact from Parquet metadata, else (a CSV among
        them) estimated from the bytes read so far (``total_estimated``)."""
        return self._progress.total_rows

    @property
    def total_estimated(self) -> bool:
        return self._progress.total_estimated

    async def ticks(self) -> AsyncIterator[Sequence[Tick]]:
        for path in self.config.files:
            if self._stopping:
                return
            async for batch in self._replay_file(path):
                yield batch

    async def _replay_file(self, path: Path) -> AsyncIterator[Sequence[Tick]]:
        c = self.config
        progress = self._progress
        identity = file_identity(path)
        saved = None if c.restart else read_checkpoint(c.state_dir, identity)
        checkpoint = Checkpoint(identity, str(path), saved.rows if saved else 0, row_count(path))
        self.current = checkpoint
        start_row = checkpoint.rows
        progress.rows_done += start_row
        self._health.detail = f"{path.name}: from row {start_row:,}"
        if checkpoint.done:
            progress.bytes_done += progress.sizes.get(path, 0)
            return
        norm = Normaliser(c.exchange, f"replay:{identity}", seq_start=start_row, renames=c.symbol_map)
        pace = Pace(c.speed)
        row = start_row
        step = PACED_BATCH_ROWS if c.speed is not None else c.batch_rows
        batches = record_batches(path, c.columns, start_row, c.batch_rows, progress.add_bytes)
        for record_batch, batch_bytes in batches:
            if self._stopping:
                return
            for offset in range(0, record_batch.num_rows, step):
                chunk = record_batch.slice(offset, step)
                ticks = await self._convert(chunk, norm, row)
                row += chunk.num_rows
                progress.rows_done += chunk.num_rows
                progress.bytes_done += batch_bytes * chunk.num_rows / record_batch.num_rows
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

    async def _convert(self, batch: pa.RecordBatch, norm: Normaliser, first_row: int) -> list[Tick]:
        """The batch's rows as ticks (``seq`` = row number); malformed rows reported and skipped."""
        c = self.config
        read_row = row_reader(batch, c.columns, c.ts_format, c.int_scale, norm, first_row)
        out: list[Tick] = []
        for i in range(batch.num_rows):
            result = read_row(i)
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
