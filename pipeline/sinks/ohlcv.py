"""OHLCV bars kept by the pipeline, for TimescaleDB's Apache edition.

The community edition keeps bars in continuous aggregates by itself
(``schemas/sql/timescale/0003_ohlcv.timescale.sql``); the Apache edition has
none, so ``TimescaleSink`` maintains rollup tables (``0003_ohlcv.apache.sql``)
inside the transaction that COPYs the ticks: a batch's bars commit with its
rows and offsets, or not at all, so bars are exactly-once like the rows.

Per batch: one pass over the rows in Python builds the 1 minute bars
(``minute_bars``), and one statement (``ohlcv_upsert.upsert_bars``, one round trip) folds the
5m, 1h and 1d bars from those in SQL and upserts all four resolutions, each
``ON CONFLICT`` merging the batch into what is stored: open/close by
(tick time, source_seq), high/low by greatest/least, volume, trade count and
sum(price * size) by addition. (The form it replaced, 5m/1h/1d folded in Python
and one statement per resolution, lives on in
``tests/pipeline/sinks/ohlcv_reference.py`` as the second implementation the
tests compare this one with.) Merging is commutative and associative, so batches may bring ticks of any
bucket in any order; a late tick updates its past bar however long ago that
bar closed.

This module holds the bars themselves (resolutions, ``Bar``, the 1 minute bars
of a batch); ``ohlcv_upsert`` the statement that merges them into the rollup
tables; ``ohlcv_mode`` who keeps the bars on this database (the pipeline or
continuous aggregates) and when a committed tick is in them. ``nexanest bars
repair`` (``ops/bars_repair.py``) recomputes every bar of a range from ``stock_prices``.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal

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
