"""OHLCV bars kept by the pipeline, for TimescaleDB's Apache edition.

The community edition keeps bars in continuous aggregates by itself
(``schemas/sql/timescale/0003_ohlcv.timescale.sql``); the Apache edition has
none, so ``TimescaleSink`` maintains rollup tables (``0003_ohlcv.apache.sql``)
inside the transaction that COPYs the ticks: a batch's bars commit with its
rows and offsets, or not at all, so bars are exactly-once like the rows.

Per batch: one pass over the rows in Python builds the 1 minute bars
(``minute_bars``), and one statement (``upsert_bars``, one round trip) folds the
5m, 1h and 1d bars from those in SQL and upserts all four resolutions, each
``ON CONFLICT`` merging the batch into what is stored: open/close by
(tick time, source_seq), high/low by greatest/least, volume, trade count and
sum(price * size) by addition. (The form it replaced, 5m/1h/1d folded in Python
and one statement per resolution, lives on in
``tests/pipeline/sinks/ohlcv_reference.py`` as the second implementation the
tests compare this one with.) Merging is commutative and associative, so batches may bring ticks of any
bucket in any order; a late tick updates its past bar however long ago that
bar closed.

``repair`` recomputes every bar of a range from ``stock_prices``.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal

import asyncpg
import msgspec

from nexanest.pipeline.edition import Edition, detect_edition
from nexanest.pipeline.errors import ConfigurationError
from nexanest.schemas.ticks import Tick

Resolution = Literal["1m", "5m", "1h", "1d"]
RESOLUTIONS: Final[tuple[Resolution, ...]] = ("1m", "5m", "1h", "1d")
WIDTHS: Final[Mapping[Resolution, timedelta]] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
#: The query surface (same name and columns on both editions).
VIEWS: Final[Mapping[Resolution, str]] = {r: f"ohlcv_{r}" for r in RESOLUTIONS}
#: The Apache edition's tables behind the views.
ROLLUP_TABLES: Final[Mapping[Resolution, str]] = {r: f"ohlcv_{r}_rollup" for r in RESOLUTIONS}
#: The community edition's continuous aggregates behind the views.
CAGGS: Final[Mapping[Resolution, str]] = {r: f"ohlcv_{r}_cagg" for r in RESOLUTIONS}

RollupSetting = Literal["auto", "pipeline", "native", "off"]
RollupMode = Literal["pipeline", "native", "off"]

# Positions in a stock_prices row (pipeline.sinks.timescale.COLUMNS order, which is
# also the order of the duplicate path's RETURNING).
_TIME, _SYMBOL, _PRICE, _SIZE, _SEQ = 0, 1, 2, 3, 8

# Prices and sizes have up to 20 digits, their products 40, sums more: far past the
# default 28-digit context. Bars must be exact, so any rounding raises instead.
_EXACT: Final = decimal.Context(prec=100, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])


@dataclass(slots=True)
class Bar:
    """One symbol's bucket, with what later merges need: the (time, seq) that
    chose open and close, and pv = sum(price * size) for the VWAP."""

    open: Decimal
    open_time: datetime
    open_seq: int
    high: Decimal
    low: Decimal
    close: Decimal
    close_time: datetime
    close_seq: int
    volume: Decimal
    trade_count: int
    pv: Decimal


BarKey = tuple[str, datetime]  # (symbol, bucket start, UTC)
Bars = dict[BarKey, Bar]


def minute_bars(rows: Iterable[Sequence[Any]]) -> Bars:
    """The 1 minute bars of ``rows`` (``stock_prices`` rows, COLUMNS order), in one pass.

    Raises ``decimal.Inexact`` rather than round (it cannot with NUMERIC(20, 9) inputs).
    """
    # Keyed by the minute's fields while aggregating: reading them is ~5x cheaper
    # per row than datetime.replace(); the bucket datetime is built once per bar.
    by_minute: dict[tuple[str, int, int, int, int, int], Bar] = {}
    with decimal.localcontext(_EXACT):
        for row in rows:
            t: datetime = row[_TIME]
            seq: int = row[_SEQ]
            price: Decimal = row[_PRICE]
            size: Decimal = row[_SIZE]
            # Stored times are UTC datetimes; time_bucket's minute grid is the UTC one.
            key = (row[_SYMBOL], t.year, t.month, t.day, t.hour, t.minute)
            bar = by_minute.get(key)
            if bar is None:
                by_minute[key] = Bar(price, t, seq, price, price, price, t, seq, size, 1, price * size)
                continue
            if t < bar.open_time or (t == bar.open_time and seq < bar.open_seq):
                bar.open, bar.open_time, bar.open_seq = price, t, seq
            if t > bar.close_time or (t == bar.close_time and seq > bar.close_seq):
                bar.close, bar.close_time, bar.close_seq = price, t, seq
            if price > bar.high:
                bar.high = price
            elif price < bar.low:
                bar.low = price
            bar.volume += size
            bar.trade_count += 1
            bar.pv += price * size
    return {(k[0], datetime(k[1], k[2], k[3], k[4], k[5], tzinfo=UTC)): bar for k, bar in by_minute.items()}


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def minute_bars_of_ticks(entries: Iterable[tuple[Tick, int, int]]) -> Bars:
    """The 1 minute bars of ``(tick, partition, offset)`` entries, as ``minute_bars``
    would give for their rows, but aggregated on the wire's integers: Decimal and
    datetime objects are built once per bar, not per tick (the consumer's hot path).
    Times are truncated to microseconds first, as the table stores them."""
    # Per bar: open_us, open_seq, open_e9, high, low, close_us, close_seq, close_e9, volume_e9, count, pv_e18
    acc: dict[tuple[str, int], list[int]] = {}
    for tick, _, _ in entries:
        us = tick.ts_ns // 1000
        seq, price, size = tick.seq, tick.price_e9, tick.size_e9
        key = (tick.symbol, us // _MINUTE_US)
        bar = acc.get(key)
        if bar is None:
            acc[key] = [us, seq, price, price, price, us, seq, price, size, 1, price * size]
            continue
        if us < bar[0] or (us == bar[0] and seq < bar[1]):
            bar[0], bar[1], bar[2] = us, seq, price
        if us > bar[5] or (us == bar[5] and seq > bar[6]):
            bar[5], bar[6], bar[7] = us, seq, price
        if price > bar[3]:
            bar[3] = price
        elif price < bar[4]:
            bar[4] = price
        bar[8] += size
        bar[9] += 1
        bar[10] += price * size
    out: Bars = {}
    with decimal.localcontext(_EXACT):
        for (symbol, minute), b in acc.items():
            out[(symbol, _EPOCH + timedelta(microseconds=minute * _MINUTE_US))] = _bar_of(b)
    return out


def _bar_of(b: list[int]) -> Bar:
    return Bar(
        open=Decimal(b[2]).scaleb(-9),
        open_time=_EPOCH + timedelta(microseconds=b[0]),
        open_seq=b[1],
        high=Decimal(b[3]).scaleb(-9),
        low=Decimal(b[4]).scaleb(-9),
        close=Decimal(b[7]).scaleb(-9),
        close_time=_EPOCH + timedelta(microseconds=b[5]),
        close_seq=b[6],
        volume=Decimal(b[8]).scaleb(-9),
        trade_count=b[9],
        pv=Decimal(b[10]).scaleb(-18),
    )


_MINUTE_US: Final = 60_000_000


ROLLUP_COLUMNS: Final = (
    "symbol, bucket, open, open_time, open_seq, high, low, close, close_time, close_seq, volume, trade_count, pv"
)

# How a stored bar (r) absorbs a batch's partial bar of the same key (EXCLUDED); the
# Python twin is ``merge`` in tests/pipeline/sinks/ohlcv_reference.py. Every SET
# expression reads the stored row as it was, so the CASEs compare old to new.
_MERGE: Final = """
ON CONFLICT (symbol, bucket) DO UPDATE SET
    open = CASE WHEN (EXCLUDED.open_time, EXCLUDED.open_seq) < (r.open_time, r.open_seq)
                THEN EXCLUDED.open ELSE r.open END,
    open_time = CASE WHEN (EXCLUDED.open_time, EXCLUDED.open_seq) < (r.open_time, r.open_seq)
                     THEN EXCLUDED.open_time ELSE r.open_time END,
    open_seq = CASE WHEN (EXCLUDED.open_time, EXCLUDED.open_seq) < (r.open_time, r.open_seq)
                    THEN EXCLUDED.open_seq ELSE r.open_seq END,
    high = GREATEST(r.high, EXCLUDED.high),
    low = LEAST(r.low, EXCLUDED.low),
    close = CASE WHEN (EXCLUDED.close_time, EXCLUDED.close_seq) > (r.close_time, r.close_seq)
                 THEN EXCLUDED.close ELSE r.close END,
    close_time = CASE WHEN (EXCLUDED.close_time, EXCLUDED.close_seq) > (r.close_time, r.close_seq)
                      THEN EXCLUDED.close_time ELSE r.close_time END,
    close_seq = CASE WHEN (EXCLUDED.close_time, EXCLUDED.close_seq) > (r.close_time, r.close_seq)
                     THEN EXCLUDED.close_seq ELSE r.close_seq END,
    volume = r.volume + EXCLUDED.volume,
    trade_count = r.trade_count + EXCLUDED.trade_count,
    pv = r.pv + EXCLUDED.pv
RETURNING symbol, bucket, open, high, low, close, volume, trade_count, pv
"""

# -- one statement per batch (upsert_bars) -------------------------------------
#
# Measured on 5,000-tick batches over 300 symbols, the bars already stored (as in
# a running consumer): the previous form, four statements with 5m/1h/1d folded in
# Python (now tests/pipeline/sinks/ohlcv_reference.py), took
# ~83 ms a batch, of which the server executed ~6 ms per statement. The rest was
# client work: folding 5m/1h/1d in Python (~9 ms), building 4 x 13 argument
# arrays (~3 ms), asyncpg encoding them element by element (~5.5 ms per statement;
# a timestamptz element ~3 us, text ~1.3 us) and decoding 4 x 300 returned rows
# into Decimals (~2-3 ms per statement); the 4 round trips were the least of it
# (0.15 ms each). This statement takes the 1m bars only, folds the coarser ones in
# SQL (a few tenths of a ms for 900 groups), merges all four resolutions and returns
# the latest merged bar per symbol and resolution as one JSON value: ~54 ms a batch,
# of which the server's execution is now ~39 ms (1,200 conflicting upserts).

# Times travel as epoch microseconds: an interval times a float8 below 2**53 is
# exact, so this is exact for times within ~285 years of 1970 (the tick validator
# accepts a window of days around now). Seconds-only intervals: adding days to a
# timestamptz would depend on the session time zone.
_US_TO_TIMESTAMPTZ: Final = "(TIMESTAMPTZ 'epoch' + {us} * INTERVAL '1 microsecond')"


def _fold_into(table: str, width: str) -> str:
    """The coarser bars of the batch's 1m bars ``u``, merged into ``table``.

    Open and close by (time, seq) with ordered aggregates: the 1m bars of one
    symbol have distinct open (and close) times, so there are no ties."""
    return f"""
INSERT INTO {table} AS r ({ROLLUP_COLUMNS})
SELECT symbol, time_bucket(INTERVAL '{width}', bucket) AS coarse,
       (array_agg(open ORDER BY open_time, open_seq))[1], min(open_time),
       (array_agg(open_seq ORDER BY open_time, open_seq))[1],
       max(high), min(low),
       (array_agg(close ORDER BY close_time DESC, close_seq DESC))[1], max(close_time),
       (array_agg(close_seq ORDER BY close_time DESC, close_seq DESC))[1],
       sum(volume), sum(trade_count), sum(pv)
  FROM u
 GROUP BY symbol, coarse
 ORDER BY symbol, coarse
{_MERGE}"""


def _latest(resolution: Resolution, cte: str) -> str:
    return f"(SELECT DISTINCT ON (symbol) '{resolution}' AS resolution, * FROM {cte} ORDER BY symbol, bucket DESC)"


_BATCH_CTES: Final[Mapping[Resolution, str]] = {"1m": "m1", "5m": "m5", "1h": "h1", "1d": "d1"}

# Order matters twice. The rollup tables appear 1m, 5m, 1h, 1d: PostgreSQL takes
# their ROW EXCLUSIVE locks at the start of the statement in that order, the order of
# repair's LOCK TABLE, so neither can deadlock the other. And ``latest`` reads the
# CTEs in that order, so their upserts run one after the other in it (each input
# sorted by key: concurrent writers lock rows in the same order).
# Numbers (bigint and numeric columns) travel as the text of an array literal:
# PostgreSQL's array_in parses it in C, where asyncpg's array codec spends about a
# microsecond per element. A number never needs quoting; symbols travel as a real text[].
_UPSERT_BATCH: Final = f"""
WITH u AS MATERIALIZED (
    SELECT symbol,
           {_US_TO_TIMESTAMPTZ.format(us="bucket_us")} AS bucket,
           open::NUMERIC(20, 9) AS open,
           {_US_TO_TIMESTAMPTZ.format(us="open_us")} AS open_time,
           open_seq,
           high::NUMERIC(20, 9) AS high,
           low::NUMERIC(20, 9) AS low,
           close::NUMERIC(20, 9) AS close,
           {_US_TO_TIMESTAMPTZ.format(us="close_us")} AS close_time,
           close_seq,
           volume::NUMERIC(40, 9) AS volume,
           trade_count,
           pv::NUMERIC(60, 18) AS pv
      FROM unnest($1::text[], $2::text::bigint[], $3::text::text[], $4::text::bigint[], $5::text::bigint[],
                  $6::text::text[], $7::text::text[], $8::text::text[], $9::text::bigint[], $10::text::bigint[],
                  $11::text::text[], $12::text::bigint[], $13::text::text[])
           AS b(symbol, bucket_us, open, open_us, open_seq, high, low, close, close_us, close_seq,
                volume, trade_count, pv)
),
m1 AS (
INSERT INTO {ROLLUP_TABLES["1m"]} AS r ({ROLLUP_COLUMNS})
SELECT {ROLLUP_COLUMNS} FROM u ORDER BY symbol, bucket
{_MERGE}),
m5 AS ({_fold_into(ROLLUP_TABLES["5m"], "5 minutes")}),
h1 AS ({_fold_into(ROLLUP_TABLES["1h"], "1 hour")}),
d1 AS ({_fold_into(ROLLUP_TABLES["1d"], "1 day")}),
latest AS (
    {" UNION ALL ".join(_latest(r, _BATCH_CTES[r]) for r in RESOLUTIONS)}
)
SELECT json_agg(json_build_array(
           resolution, symbol, (extract(epoch FROM bucket - TIMESTAMPTZ 'epoch') * 1000000)::bigint,
           open, high, low, close, volume, trade_count, (pv / NULLIF(volume, 0))::NUMERIC(20, 9)))::text
  FROM latest
"""

# One returned bar: resolution, symbol, bucket (epoch us), open, high, low, close,
# volume, trade_count, vwap. JSON numbers decode to Decimal exactly, with the
# scale PostgreSQL printed (as asyncpg's numeric decoding gives it).
_BatchRow = tuple[Resolution, str, int, Decimal, Decimal, Decimal, Decimal, Decimal, int, Decimal | None]
_BATCH_ROWS: Final = msgspec.json.Decoder(list[_BatchRow])


def _literal(values: Iterable[object]) -> str:
    """An array literal of numbers (ints or Decimals: never anything to quote)."""
    return "{" + ",".join(map(str, values)) + "}"


def _epoch_us(t: datetime) -> int:
    return (t - _EPOCH) // _MICROSECOND


_MICROSECOND: Final = timedelta(microseconds=1)


def _batch_arguments(minute: Bars) -> list[str | list[str]]:
    # Sorted keys: concurrent writers (a fenced consumer still finishing, a
    # rebalance overlap) then lock rows in the same order and cannot deadlock.
    items = sorted(minute.items(), key=lambda kv: kv[0])
    bars = [b for _, b in items]
    return [
        [k[0] for k, _ in items],
        _literal(_epoch_us(k[1]) for k, _ in items),
        _literal(b.open for b in bars),
        _literal(_epoch_us(b.open_time) for b in bars),
        _literal(b.open_seq for b in bars),
        _literal(b.high for b in bars),
        _literal(b.low for b in bars),
        _literal(b.close for b in bars),
        _literal(_epoch_us(b.close_time) for b in bars),
        _literal(b.close_seq for b in bars),
        _literal(b.volume for b in bars),
        _literal(b.trade_count for b in bars),
        _literal(b.pv for b in bars),
    ]


@dataclass(frozen=True, slots=True)
class StoredBar:
    """A bar as the rollup table holds it after a batch's merge (the ``ohlcv_*``
    views' columns); ``vwap`` is None for a bar of zero volume."""

    resolution: Resolution
    symbol: str
    bucket: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trade_count: int
    vwap: Decimal | None


async def upsert_bars(conn: asyncpg.Connection, minute: Bars) -> list[StoredBar]:
    """Merge a batch's 1m bars, and the 5m, 1h and 1d bars folded from them, into
    the rollup tables: one statement (one round trip) in the caller's
    transaction, tables locked and written 1m first (the order of ``repair``'s lock).

    Returns, per resolution, the latest bar of each symbol the batch touched, as
    merged and stored (not the batch's partial bar). They are only true once the
    caller's transaction commits."""
    if not minute:
        return []
    data = await conn.fetchval(_UPSERT_BATCH, *_batch_arguments(minute))
    return [
        StoredBar(res, symbol, _EPOCH + timedelta(microseconds=us), o, h, lo, c, v, n, vwap)
        for res, symbol, us, o, h, lo, c, v, n, vwap in _BATCH_ROWS.decode(data)
    ]


async def resolve_rollups(conn: Any, setting: RollupSetting) -> RollupMode:
    """Who keeps the bars for this database (``conn``: a connection or pool).

    ``auto`` is ``native`` on the community edition and ``pipeline`` elsewhere.
    Raises ``ConfigurationError`` for a choice the database cannot serve:
    ``native`` without continuous aggregates, ``pipeline`` without the rollup
    tables (not migrated, or migrated as the community edition).
    """
    if setting == "off":
        return "off"
    edition: Edition = await detect_edition(conn)
    mode: RollupMode = ("native" if edition == "timescale" else "pipeline") if setting == "auto" else setting
    if mode == "native" and edition != "timescale":
        raise ConfigurationError(
            "consumer.rollups = native needs continuous aggregates, which this TimescaleDB "
            f"edition ({edition}) does not have; use auto or pipeline"
        )
    if mode == "pipeline" and await conn.fetchval("SELECT to_regclass($1)", ROLLUP_TABLES["1m"]) is None:
        raise ConfigurationError(
            f"consumer.rollups = pipeline needs the {ROLLUP_TABLES['1m']} table: run `nexanest migrate` "
            "(on the community edition the migration builds continuous aggregates instead; use auto or native)"
        )
    return mode


_REALTIME_CAGGS = """
SELECT view_name FROM timescaledb_information.continuous_aggregates
 WHERE view_schema = current_schema() AND view_name = ANY($1::text[]) AND NOT materialized_only
"""


async def resolutions_current_at_commit(conn: Any, mode: RollupMode) -> tuple[Resolution, ...]:
    """The resolutions whose view (``ohlcv_<r>``) can include a tick as soon as its
    transaction commits: those ``nexanest_rollup_freshness_seconds`` is reported
    for, so that it means the same on both editions (now minus the newest
    committed tick the bars include).

    - ``pipeline``: all four (the consumer merges the bars in the tick's transaction).
    - ``native``: the continuous aggregates with real-time aggregation
      (``materialized_only = false`` in the documented view
      ``timescaledb_information.continuous_aggregates``; the migration creates
      them so). A query answers above the materialization watermark from the
      level below, so a tick newer than the watermarks is in the bars at commit
      (``CaggWatermarks`` checks that per batch). A materialized-only aggregate
      shows a tick only after a refresh the consumer does not see: no series.
    - ``off``: none.

    One query, at start; ``conn`` is a connection or pool.
    """
    if mode == "pipeline":
        return RESOLUTIONS
    if mode == "off":
        return ()
    rows = await conn.fetch(_REALTIME_CAGGS, list(CAGGS.values()))
    realtime = {row["view_name"] for row in rows}
    return tuple(r for r in RESOLUTIONS if CAGGS[r] in realtime)


# The watermark of each aggregate, in microseconds since the epoch: the value
# _timescaledb_functions.cagg_watermark() returns (TimescaleDB's documented way
# to see it), read from the catalog table that function reads, because the
# function also wants SELECT on the aggregate itself, which the ingest role
# lacks (it reads the views). An aggregate never refreshed has the minimum time.
_WATERMARKS = """
SELECT c.user_view_name, w.watermark
  FROM _timescaledb_catalog.continuous_agg c
  JOIN _timescaledb_catalog.continuous_aggs_watermark w USING (mat_hypertable_id)
 WHERE c.user_view_schema = current_schema() AND c.user_view_name = ANY($1::text[])
"""


class CaggWatermarks:
    """Which real-time continuous aggregates include a committed tick.

    Below its watermark an aggregate answers from materialized buckets only, so
    a tick committed there shows once the next refresh runs (the policy's
    schedule); above it the real-time part reads the level below. The levels
    are hierarchical (5m over 1m, ...), so a tick is in the bars of ``r`` when
    it is at or above the watermarks of ``r`` and of every level beneath, and
    all of them answer in real time.
    """

    async def covering(self, conn: Any, tick_ns: int, resolutions: Sequence[Resolution]) -> tuple[Resolution, ...]:
        """The ``resolutions`` whose bars include a tick of ``tick_ns`` committed
        before the call: one query (``conn``: a connection or pool). Read after
        the commit, so a watermark that passed the tick meanwhile counts against
        it (the bars may lack it until the next refresh): the answer errs
        towards "not yet"."""
        rows = await conn.fetch(_WATERMARKS, list(CAGGS.values()))
        marks = {row["user_view_name"]: int(row["watermark"]) for row in rows}
        tick_us = tick_ns // 1_000
        covered: list[Resolution] = []
        highest: int | None = None
        for resolution in RESOLUTIONS:  # bottom-up: a level reads the one beneath
            mark = marks.get(CAGGS[resolution])
            if mark is None or resolution not in resolutions:
                break  # no real-time part here: nor in the levels above
            highest = mark if highest is None else max(highest, mark)
            if tick_us < highest:
                break
            covered.append(resolution)
        return tuple(covered)
