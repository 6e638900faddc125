"""``TimescaleSink``: one binary COPY per batch, offsets in the same transaction.

Writing the consumed offsets (``pipeline/offsets.py``) next to the rows means the database itself knows
how far it has ingested: after a crash the consumer resumes from there, so a
batch is neither lost nor written twice, and the hot path stays a plain COPY.
With rollups on (the Apache edition), the batch's OHLCV bars are merged into
the rollup tables in that same transaction (``pipeline/sinks/ohlcv.py``, ``ohlcv_upsert.py``).

A value the database refuses must not stop the consumer: replayed, the same
batch would fail the same way for ever. Validation rejects everything known to
be unstorable; if a batch still fails with a data error, the rows at fault are
found by bisection (each half tried in a savepoint that is always rolled back)
and handed back in ``RejectedByDatabase``, and the next ``flush`` writes the
rest.

Re-sent ticks never reach the COPY: the loop drops them by their partition's
high-water mark of ``seq`` (``pipeline/runner.py``), so ``stock_prices`` needs
no unique index. The few records that re-send old seqs on purpose (a
publisher's re-send after a failed delivery, a dead letter replayed) come in
through ``write_checked``: before the transaction, each is looked up by
``(symbol, time, source, seq)`` on the (symbol, time DESC) index, and only
those the table does not hold (once each) join the COPY. The lookup may run
outside the transaction because nothing else writes these ticks meanwhile:
a partition has one writer (claims fence any other), and a source belongs to
one topic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Final

import asyncpg

from nexanest.pipeline import metrics
from nexanest.pipeline.db import DATA_ERRORS, RETRYABLE_DB_ERRORS, e9_to_decimal, ns_to_datetime
from nexanest.pipeline.errors import RejectedByDatabase, RetryableError
from nexanest.pipeline.offsets import OffsetStore
from nexanest.pipeline.sinks.copy_binary import COPY_COLUMNS, StockPriceCopyEncoder
from nexanest.pipeline.sinks.ohlcv import RESOLUTIONS, Bars, Resolution, StoredBar, minute_bars, minute_bars_of_ticks
from nexanest.pipeline.sinks.ohlcv_mode import CaggWatermarks
from nexanest.pipeline.sinks.ohlcv_upsert import upsert_bars
from nexanest.pipeline.types import TickEntry
from nexanest.schemas.ticks import Tick

#: The columns the sink writes, in COPY order (the encoder defines them).
COLUMNS: Final = COPY_COLUMNS
StockPriceRow = tuple[datetime, str, Decimal, Decimal, Decimal | None, Decimal | None, str, str, int, int, int]

#: Rows encoded or aggregated between two chances for the event loop to run the
#: consumer's other work (fetching, publishing quotes): a few ms each.
_ROWS_PER_STEP: Final = 2_000

#: How much of the server's message a dead letter carries.
_MAX_REFUSAL_CHARS: Final = 500


def stock_price_row(tick: Tick, partition: int, offset: int) -> StockPriceRow:
    bid, ask = tick.bid_e9, tick.ask_e9
    return (
        ns_to_datetime(tick.ts_ns),
        tick.symbol,
        e9_to_decimal(tick.price_e9),
        e9_to_decimal(tick.size_e9),
        None if bid is None else e9_to_decimal(bid),
        None if ask is None else e9_to_decimal(ask),
        tick.exchange,
        tick.source,
        tick.seq,
        partition,
        offset,
    )


# One index probe per looked-up tick on (symbol, time DESC): the LIMIT keeps the
# lateral subquery a parameterised scan (a semi-join could hash the whole table).
STORED_ALREADY = """
SELECT v.i
  FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::bigint[])
       WITH ORDINALITY AS v(symbol, time, source, seq, i)
 CROSS JOIN LATERAL (SELECT 1 FROM {table} s
                      WHERE s.symbol = v.symbol AND s.time = v.time AND s.source = v.source AND s.source_seq = v.seq
                      LIMIT 1) AS found
"""

_INSERT_SKIPPING_DUPLICATES = """
INSERT INTO {table} ({columns})
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::numeric[], $4::numeric[], $5::numeric[], $6::numeric[],
                     $7::text[], $8::text[], $9::bigint[], $10::int[], $11::bigint[])
ON CONFLICT DO NOTHING
"""


class TimescaleSink:
    """Buffers ``stock_prices`` rows for one transaction per batch.

    ``flush`` is one transaction: COPY the rows, store the batch's offsets
    (``OffsetStore.store``: only for partitions this consumer still holds),
    commit. On a retryable error nothing is committed and the buffer is kept,
    so ``flush`` can be called again. On a data error nothing is committed, the
    refused rows leave the buffer and are raised as ``RejectedByDatabase``:
    dead-letter them, then call ``flush`` again for the rest (and the offsets,
    which move past the refused rows too).

    With ``offsets=None`` no offsets are stored (plain at-least-once, for
    measuring what exactly-once costs).

    With ``rollups=True`` the same transaction also merges the bars of the
    rows it inserted into the OHLCV rollup tables (whatever ``table`` is), so
    bars commit exactly when their ticks do; a tick skipped as a duplicate adds
    nothing to them. The merged bars the upsert returned (latest per symbol and
    resolution) are handed out of the committed transaction by
    ``take_flushed_bars`` (for the Redis bar cache, an after-commit sink).

    ``fresh_resolutions``: the resolutions whose bars can include a tick once
    its transaction commits (``resolutions_current_at_commit``); after each
    commit ``nexanest_rollup_freshness_seconds`` learns the batch's newest tick
    time for them. Default: all four with ``rollups``, none without. With
    ``watermarks`` (continuous aggregates) only for those whose watermarks the
    tick is above: one more query per batch, after the commit; should it fail,
    the batch is not counted (the gauge ages, the rows stay committed).
    """

    name = "timescale"

    def __init__(
        self,
        pool: asyncpg.Pool,
        offsets: OffsetStore | None,
        *,
        table: str = "stock_prices",
        rollups: bool = False,
        fresh_resolutions: Sequence[Resolution] | None = None,
        watermarks: CaggWatermarks | None = None,
    ) -> None:
        self._pool = pool
        self._fresh_resolutions: tuple[Resolution, ...] = tuple(
            (RESOLUTIONS if rollups else ()) if fresh_resolutions is None else fresh_resolutions
        )
        self._watermarks = watermarks
        #: The newest tick time counted in every resolution: an older batch cannot move the gauge.
        self._counted_ns = 0
        self._offsets = offsets
        self._table = table
        self._rollups = rollups
        self._insert_skipping_duplicates = _INSERT_SKIPPING_DUPLICATES.format(table=table, columns=", ".join(COLUMNS))
        if rollups:
            # The bars must count only the rows this statement really inserted.
            self._insert_skipping_duplicates += f"RETURNING {', '.join(COLUMNS)}\n"
        self._stored_already = STORED_ALREADY.format(table=table)
        self._encoder = StockPriceCopyEncoder()
        self._rows: list[TickEntry] = []
        self._checked: list[TickEntry] = []
        self._flushed_bars: list[StoredBar] = []
        #: Set once the buffer's rows were isolated after a data error: the rest
        #: is then written the way the isolation tried it (typed INSERT).
        self._isolated = False

    def write(self, rows: Sequence[TickEntry]) -> None:
        """Buffer ``(tick, partition, offset)`` entries: the COPY stream is encoded
        from the ticks' integers, with no Decimal or datetime per value."""
        self._rows.extend(rows)

    def write_checked(self, rows: Sequence[TickEntry]) -> None:
        """Buffer entries that may be stored already: ``flush`` looks them up and
        writes only the ones the table (and the buffer) does not hold."""
        self._checked.extend(rows)

    def discard(self) -> None:
        """Drop the buffer (after a fence: another consumer owns those records now)."""
        self._rows = []
        self._checked = []
        self._isolated = False
        if self._offsets is not None:
            self._offsets.discard()

    async def flush(self) -> int:
        """Write the buffer in one transaction; returns the rows written.

        Raises ``RetryableError`` (nothing committed, buffer kept),
        ``FencedError`` (nothing committed; call ``discard``) and
        ``RejectedByDatabase`` (nothing committed; the refused rows have left
        the buffer: dead-letter them and flush again).
        """
        if not self._rows and not self._checked and not (self._offsets is not None and self._offsets.pending):
            self._flushed_bars = []
            return 0
        started = time.perf_counter()
        try:
            if self._checked:
                await self._resolve_checked()
            try:
                written, stored = await self._write_buffer()
            except DATA_ERRORS:
                refused = await self._isolate_refused()
                self._isolated = True
                if refused:
                    gone = {id(entry) for entry, _ in refused}
                    self._rows = [e for e in self._rows if id(e) not in gone]
                    raise RejectedByDatabase([(e[1], e[2], message) for e, message in refused]) from None
                # Every row passed on its own, the typed way: write them so.
                written, stored = await self._write_buffer()
        except RETRYABLE_DB_ERRORS as exc:
            raise RetryableError("timescaledb", exc) from exc
        metrics.FLUSH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        metrics.TICKS_WRITTEN.labels(self.name).inc(written)
        newest_ns = max(entry[0].ts_ns for entry in self._rows) if self._fresh_resolutions and self._rows else None
        self._rows = []
        self._isolated = False
        if self._offsets is not None:
            self._offsets.stored()
        # Committed: only now are the merged bars true (a rolled-back attempt's are dropped).
        self._flushed_bars = stored
        if newest_ns is not None:  # last: the batch is done whatever happens here
            await self._observe_freshness(newest_ns)
        return written

    async def _write_buffer(self) -> tuple[int, list[StoredBar]]:
        """The COPY path, falling back to the duplicate-skipping INSERT when the
        buffer's rows were isolated after a data error, or when a table that
        still has a unique index on the ticks refuses one (``stock_prices`` has
        none since migration 0008; copies made with it, as some benchmarks do)."""
        if not self._isolated:
            # Aggregated before taking a connection: no CPU work inside the transaction.
            bars = await self._minute_bars() if self._rollups else None
            try:
                return await self._write(skip_duplicates=False, bars=bars)
            except asyncpg.UniqueViolationError:
                pass
        written, stored = await self._write(skip_duplicates=True, bars=None)
        metrics.DUPLICATES_SKIPPED.inc(len(self._rows) - written)
        return written, stored

    async def _resolve_checked(self) -> None:
        """Move the checked entries the table does not hold into the buffer, each
        (source, seq) once; count the rest as duplicates (module docstring)."""
        checked = self._checked
        in_buffer = {(e[0].source, e[0].seq) for e in self._rows}
        rows = [stock_price_row(*e) for e in checked]
        found = await self._pool.fetch(
            self._stored_already, [r[1] for r in rows], [r[0] for r in rows], [r[7] for r in rows], [r[8] for r in rows]
        )
        stored = {(checked[r["i"] - 1][0].source, checked[r["i"] - 1][0].seq) for r in found}
        fresh = []
        for entry in checked:
            name = (entry[0].source, entry[0].seq)
            if name in stored or name in in_buffer:
                continue
            in_buffer.add(name)
            fresh.append(entry)
        metrics.DUPLICATES_SKIPPED.inc(len(checked) - len(fresh))
        self._rows.extend(fresh)
        self._checked = []

    async def _observe_freshness(self, newest_ns: int) -> None:
        """After a commit: the bars that include the batch's newest tick learn its time
        (nothing to learn, and no query, when no newer tick was counted before)."""
        if newest_ns <= self._counted_ns:
            return
        resolutions = self._fresh_resolutions
        if self._watermarks is not None:
            try:
                resolutions = await self._watermarks.covering(self._pool, newest_ns, resolutions)
            except (*RETRYABLE_DB_ERRORS, asyncpg.PostgresError):
                return  # committed all the same; the gauge never claims a bar it did not see
        for resolution in resolutions:
            metrics.ROLLUP_FRESHNESS_SECONDS.observe((resolution,), newest_ns / 1e9)
        if len(resolutions) == len(self._fresh_resolutions):
            self._counted_ns = newest_ns

    def take_flushed_bars(self) -> list[StoredBar]:
        """The merged bars the last successful ``flush`` committed (latest per symbol
        and resolution among those its batch touched; empty without rollups), once:
        a second call returns nothing until the next flush."""
        bars, self._flushed_bars = self._flushed_bars, []
        return bars

    async def _write(self, *, skip_duplicates: bool, bars: Bars | None) -> tuple[int, list[StoredBar]]:
        """One transaction; returns the rows written and the merged bars. ``bars``:
        the batch's 1m bars for the COPY path; the duplicate path aggregates the
        rows its INSERT returns instead."""
        entries = self._rows
        data = self._copy_stream(entries) if entries and not skip_duplicates else None
        async with self._pool.acquire() as conn, conn.transaction():
            written = 0
            stored: list[StoredBar] = []
            if entries and skip_duplicates:
                written, bars = await self._insert_typed(conn, entries)
            elif data is not None:
                await conn.copy_to_table(self._table, source=data, columns=COLUMNS, format="binary")
                written = len(entries)
            if bars:
                stored = await upsert_bars(conn, bars)
            if self._offsets is not None:
                await self._offsets.store(conn)
        return written, stored

    async def _insert_typed(self, conn: asyncpg.Connection, entries: Sequence[TickEntry]) -> tuple[int, Bars | None]:
        """``INSERT ... ON CONFLICT DO NOTHING`` of typed rows (the rare paths:
        duplicates, isolation); with rollups, the 1m bars of what it inserted."""
        columns = list(map(list, zip(*(stock_price_row(*e) for e in entries), strict=True)))
        if self._rollups:
            inserted = await conn.fetch(self._insert_skipping_duplicates, *columns)
            return len(inserted), minute_bars(inserted)
        status = await conn.execute(self._insert_skipping_duplicates, *columns)
        return int(status.rsplit(" ", 1)[-1]), None

    async def _isolate_refused(self) -> list[tuple[TickEntry, str]]:
        """The buffered rows the database refuses, each with the server's message.

        Bisection in one transaction that is rolled back: a set of rows is tried
        (rows, then their bars) in a savepoint, itself always rolled back, so each
        try sees only what is committed; a set that fails is split in two. One
        refused row among n costs about 2 log2(n) tries, a second or so for a
        20,000-row batch: this path is for what validation did not foresee.
        """
        refused: list[tuple[TickEntry, str]] = []
        async with self._pool.acquire() as conn:
            outer = conn.transaction()
            await outer.start()
            try:
                await self._probe(conn, self._rows, refused)
            finally:
                await outer.rollback()
        return refused

    async def _probe(
        self, conn: asyncpg.Connection, entries: Sequence[TickEntry], refused: list[tuple[TickEntry, str]]
    ) -> None:
        savepoint = conn.transaction()
        await savepoint.start()
        try:
            _, bars = await self._insert_typed(conn, entries)
            if bars:
                await upsert_bars(conn, bars)
        except DATA_ERRORS as exc:
            message = f"{type(exc).__name__}: {exc}"[:_MAX_REFUSAL_CHARS]
        else:
            return
        finally:
            await savepoint.rollback()
        if len(entries) == 1:
            refused.append((entries[0], message))
            return
        before = len(refused)
        half = len(entries) // 2
        await self._probe(conn, entries[:half], refused)
        await self._probe(conn, entries[half:], refused)
        if len(refused) == before:
            # Each half passes alone, the whole does not: refused together.
            refused.extend((e, f"refused with {len(entries)} rows of its batch: {message}") for e in entries)

    async def _minute_bars(self) -> Bars:
        """The batch's 1m bars, aggregated ``_ROWS_PER_STEP`` rows at a time with
        the event loop free in between: the ticks are split by symbol, so no bar
        spans two steps and the parts' bars are simply put together."""
        entries = self._rows
        steps = -(-len(entries) // _ROWS_PER_STEP)
        if steps <= 1:
            return minute_bars_of_ticks(entries)
        groups: list[list[TickEntry]] = [[] for _ in range(steps)]
        for entry in entries:
            groups[hash(entry[0].symbol) % steps].append(entry)
        bars: Bars = {}
        for group in groups:
            await asyncio.sleep(0)
            bars.update(minute_bars_of_ticks(group))
        return bars

    async def _copy_stream(self, entries: Sequence[TickEntry]) -> AsyncIterator[bytes]:
        """The COPY data, encoded ``_ROWS_PER_STEP`` rows at a time as asyncpg
        sends it, with the event loop free between parts (a 20,000-row batch
        encodes in about 60 ms: held at once, it would stall the quotes)."""
        for part in self._encoder.encode_parts(entries, _ROWS_PER_STEP):
            yield part
            await asyncio.sleep(0)

    async def close(self) -> None:
        """The pool belongs to the caller; nothing buffered survives a close."""
        self.discard()
        self._flushed_bars = []
