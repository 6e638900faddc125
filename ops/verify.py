"""``nexanest verify``: does TimescaleDB hold every tick Kafka holds, exactly once?

For the ticks whose ``ts_ns`` lies in ``[from_ns, to_ns)``, ``verify`` reads the
ticks topic and ``stock_prices`` and compares them tick by tick, a tick being
named by ``(source, seq)`` (``source_seq`` in the table):

* **missing**: distinct ticks in Kafka that are not in the table;
* **duplicates**: rows beyond the first of each ``(source, seq)`` in the table;
* **unexpected**: distinct ``(source, seq)`` in the table that Kafka does not
  hold (retention deleted them, or something else wrote the table).

The result is ``ok`` when nothing is missing or duplicated. Per Kafka
partition and per symbol it also reports counts and exact price sums, so a
difference can be located.

What it reads, and how the sides are lined up:

* Kafka: a group-less reader (nothing is committed, no group is disturbed)
  over every partition, from the first record whose Kafka timestamp is at or
  after ``from_ns - validation.max_future_s`` (a valid tick can be stamped that
  far ahead of the record) up to the end offsets captured at the start. Each
  record is checked with the pipeline's ``TickValidator`` (without the
  ``stale_timestamp`` rule on the backfill topic, as the consumer); one that fails is
  counted under ``invalid`` by reason (the consumer set it aside in the
  dead-letter topic), not as missing. The time-window rules are judged against
  the record's Kafka timestamp, the nearest thing to when the consumer judged
  it: a verify run next week must not call this week's ticks stale. A tick
  that is in the topic more than once (a dead letter replayed after a rule
  change, a producer that retried without idempotence) counts once, and the
  extra copies are counted as ``kafka_repeats``.
* TimescaleDB: ``(kafka_partition, source, source_seq, symbol, price)`` of the
  rows in the window for the sources seen in Kafka (or ``source``), streamed
  with a server-side cursor as the ingest role. The table does not record the
  topic, so rows are matched by ``source``: sources must not be shared between
  topics.
* The window is applied at microsecond resolution, that of
  ``stock_prices.time``: a tick is inside if ``ts_ns // 1000`` lies in
  ``[from_ns // 1000, to_ns // 1000)``, on both sides alike.

Ticks the consumer has not reached yet are missing, so choose ``to_ns`` behind
the consumer's lag. Memory is one set of ``seq`` integers per source for Kafka
and one ``array`` of them for the table (a few tens of bytes per tick), plus
small per-partition and per-symbol counters.
"""

from __future__ import annotations

import time
from array import array
from datetime import UTC, datetime, timedelta
from typing import Final

import asyncpg
import msgspec
from aiokafka.errors import KafkaError

from nexanest.ops.times import format_ns
from nexanest.ops.topic_reader import BoundedReader, Progress, ProgressThrottle
from nexanest.ops.verify_report import SeqRange, Tally, VerifyReport
from nexanest.pipeline.errors import ConfigurationError, PipelineError
from nexanest.pipeline.settings import Settings
from nexanest.pipeline.validation import TickValidator
from nexanest.schemas.ticks import Tick, decode_tick

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_DB_PREFETCH: Final = 10_000

# -- verify -------------------------------------------------------------------------


async def verify(
    settings: Settings,
    topic: str,
    from_ns: int,
    to_ns: int,
    source: str | None = None,
    *,
    progress: Progress | None = None,
    sample_ranges: int = 20,
) -> VerifyReport:
    """Compare ``topic`` with ``stock_prices`` for ticks in ``[from_ns, to_ns)``.

    Read-only on both sides. ``progress`` receives a line every few seconds
    during long reads. Raises ``ValueError`` for an empty window and
    ``ConfigurationError`` when the topic does not exist or TimescaleDB cannot
    be reached, ``PipelineError`` when either side fails mid-way.
    """
    if from_ns >= to_ns:
        raise ValueError(f"empty window: from {format_ns(from_ns)} is not before to {format_ns(to_ns)}")
    started = time.monotonic()
    try:
        return await _verify(settings, topic, from_ns, to_ns, source, progress, sample_ranges, started)
    except KafkaError as exc:
        raise PipelineError(f"verify: reading {topic} failed: {exc!r}") from exc
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise PipelineError(f"verify: reading stock_prices failed: {type(exc).__name__}: {exc}") from exc


async def _verify(
    settings: Settings,
    topic: str,
    from_ns: int,
    to_ns: int,
    source: str | None,
    progress: Progress | None,
    sample_ranges: int,
    started: float,
) -> VerifyReport:
    report = VerifyReport(
        topic, from_ns, to_ns, sources=[] if source is None else [source], sample_ranges=sample_ranges
    )
    kafka_seqs = await _read_kafka(settings, report, source, progress)
    if source is None:
        report.sources = sorted(kafka_seqs)
    db_seqs = await _read_db(settings, report, progress)
    _compare(report, kafka_seqs, db_seqs)
    report.elapsed_s = time.monotonic() - started
    return report


async def _read_kafka(
    settings: Settings, report: VerifyReport, only_source: str | None, progress: Progress | None
) -> dict[str, set[int]]:
    """Tally the topic's ticks in the window; return the distinct seqs per source."""
    # The backfill topic's ticks are history: judged as the consumer's backfill loop does.
    check = TickValidator(settings.validation, stale=report.topic != settings.kafka.backfill_topic).check
    from_us, to_us = report.from_ns // 1_000, report.to_ns // 1_000
    slack_ms = int(settings.validation.max_future_s * 1_000) + 1_000
    seqs: dict[str, set[int]] = {}
    partitions, symbols, invalid = report.partitions, report.symbols, report.invalid
    throttle = ProgressThrottle(progress)
    async with BoundedReader(
        settings.kafka, report.topic, from_ms=report.from_ns // 1_000_000 - slack_ms, client_suffix="verify"
    ) as reader:
        report.truncated_partitions = sorted(p for p, r in reader.ranges.items() if r.truncated)
        for p in reader.ranges:
            partitions.setdefault(p, Tally())
        total = reader.total
        async for batch in reader.batches():
            for record in batch:
                judged_at_ns = record.timestamp * 1_000_000 if record.timestamp > 0 else time.time_ns()
                result = check(record.value, judged_at_ns)
                if not isinstance(result, Tick):
                    if _invalid_in_window(record.value, record.timestamp, report, only_source):
                        invalid[result[0]] = invalid.get(result[0], 0) + 1
                    continue
                if not from_us <= result.ts_ns // 1_000 < to_us:
                    continue
                if only_source is not None and result.source != only_source:
                    continue
                seen = seqs.get(result.source)
                if seen is None:
                    seen = seqs[result.source] = set()
                if result.seq in seen:
                    report.kafka_repeats += 1
                    continue
                seen.add(result.seq)
                cell = partitions[record.partition]
                cell.kafka += 1
                cell.kafka_sum_e9 += result.price_e9
                cell = symbols.get(result.symbol) or symbols.setdefault(result.symbol, Tally())
                cell.kafka += 1
                cell.kafka_sum_e9 += result.price_e9
            throttle(f"verify: kafka {reader.read:,}/{total:,} records read")
        report.kafka_records = reader.read
    report.kafka_ticks = sum(len(s) for s in seqs.values())
    return seqs


def _invalid_in_window(value: bytes | None, timestamp_ms: int, report: VerifyReport, only_source: str | None) -> bool:
    """Whether a record that failed validation belongs to the window: by its
    own ``ts_ns`` and ``source`` where it decodes, else by its Kafka timestamp
    (such a record names no source, so ``only_source`` cannot exclude it)."""
    try:
        tick = decode_tick(value or b"")
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return report.from_ns // 1_000_000 <= timestamp_ms < -(-report.to_ns // 1_000_000)
    if only_source is not None and tick.source != only_source:
        return False
    return report.from_ns // 1_000 <= tick.ts_ns // 1_000 < report.to_ns // 1_000


async def _read_db(settings: Settings, report: VerifyReport, progress: Progress | None) -> dict[str, array[int]]:
    """Tally the table's rows in the window; return all seqs per source (with repeats)."""
    seqs: dict[str, array[int]] = {s: array("q") for s in report.sources}
    if not report.sources:
        return seqs
    ts = settings.timescale
    try:
        conn = await asyncpg.connect(
            ts.dsn.get_secret_value(), timeout=ts.connect_timeout_s, command_timeout=ts.command_timeout_s
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConfigurationError(f"cannot connect to TimescaleDB ({type(exc).__name__}: {exc})") from exc
    from_dt = _EPOCH + timedelta(microseconds=report.from_ns // 1_000)
    to_dt = _EPOCH + timedelta(microseconds=report.to_ns // 1_000)
    partitions, symbols = report.partitions, report.symbols
    throttle = ProgressThrottle(progress)
    rows = 0
    try:
        async with conn.transaction(readonly=True):
            cursor = conn.cursor(
                "SELECT kafka_partition, source, source_seq, symbol, price FROM stock_prices"
                " WHERE time >= $1 AND time < $2 AND source = ANY($3::text[])",
                from_dt,
                to_dt,
                report.sources,
                prefetch=_DB_PREFETCH,
            )
            async for partition, source, seq, symbol, price in cursor:
                seqs[source].append(seq)
                price_e9 = int(price.scaleb(9))
                cell = partitions.get(partition) or partitions.setdefault(partition, Tally())
                cell.db += 1
                cell.db_sum_e9 += price_e9
                cell = symbols.get(symbol) or symbols.setdefault(symbol, Tally())
                cell.db += 1
                cell.db_sum_e9 += price_e9
                rows += 1
                if rows % _DB_PREFETCH == 0:
                    throttle(f"verify: timescaledb {rows:,} rows read")
    finally:
        await conn.close()
    report.db_rows = rows
    return seqs


class _RangeSample:
    """Counts values and keeps the first ``cap`` runs of consecutive ones as ranges."""

    def __init__(self, cap: int, into: list[SeqRange]) -> None:
        self._cap = cap
        self._into = into
        self._source = ""
        self._first = self._last = 0
        self._open = False

    def begin(self, source: str) -> None:
        self._flush()
        self._source = source

    def add(self, seq: int) -> None:
        if self._open and seq == self._last + 1:
            self._last = seq
            return
        self._flush()
        self._first = self._last = seq
        self._open = True

    def end(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if self._open and len(self._into) < self._cap:
            self._into.append(SeqRange(self._source, self._first, self._last))
        self._open = False


def _compare(report: VerifyReport, kafka: dict[str, set[int]], db: dict[str, array[int]]) -> None:
    """Walk the sorted seqs of each source on both sides at once."""
    cap = report.sample_ranges
    missing = _RangeSample(cap, report.missing_sample)
    dups = _RangeSample(cap, report.duplicate_sample)
    unexpected = _RangeSample(cap, report.unexpected_sample)
    for source in sorted(set(kafka) | set(db)):
        for sample in (missing, dups, unexpected):
            sample.begin(source)
        ks = sorted(kafka.get(source, ()))
        ds = sorted(db.get(source, ()))
        i = j = 0
        nk, nd = len(ks), len(ds)
        while i < nk or j < nd:
            if j >= nd or (i < nk and ks[i] < ds[j]):
                report.missing += 1
                missing.add(ks[i])
                i += 1
                continue
            seq = ds[j]
            run = _run_length(ds, j)
            j += run
            if run > 1:
                report.duplicates += run - 1
                dups.add(seq)
            if i < nk and ks[i] == seq:
                i += 1
            else:
                report.unexpected += 1
                unexpected.add(seq)
        del ks, ds
    for sample in (missing, dups, unexpected):
        sample.end()


def _run_length(values: list[int], start: int) -> int:
    end = start + 1
    while end < len(values) and values[end] == values[start]:
        end += 1
    return end - start
