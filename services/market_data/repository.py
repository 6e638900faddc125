"""The market data service's reads from TimescaleDB: parameterised SQL through asyncpg.

Everything here runs on the pool of the read-only role ``nexanest_market_data``
(``schemas/sql/timescale/0005_market_data_reader.sql``), which may SELECT from
``stock_prices``, ``market_indices`` and the bar views and do nothing else. The
only names put into SQL text are the bar views, taken from a constant mapping
by a validated interval (``ops/bars.py``, shared with ``nexanest bars show``);
every value is a bind parameter.

Ranges are half-open, ``[start, end)``, and every query is bounded by the
caller (``limits.py``): a page size, or a range whose bar count is capped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from nexanest.ops import bars
from nexanest.pipeline.sinks.ohlcv import Resolution
from nexanest.services.market_data.models import (
    Bar,
    IndexValue,
    TickRow,
    decimal_text,
    optional_decimal_text,
)

# Keyset pagination on (time, source, source_seq): the row comparison starts the
# page right after the last row of the previous one. The (symbol, time DESC)
# index serves the range; ties within one time are sorted in memory (few).
_TICK_COLUMNS: Final = "time, price, size, bid, ask, exchange, source, source_seq"
_TICKS_FIRST: Final = f"""
SELECT {_TICK_COLUMNS}
  FROM stock_prices
 WHERE symbol = $1 AND time >= $2 AND time < $3
 ORDER BY time, source, source_seq
 LIMIT $4
"""
_TICKS_AFTER: Final = f"""
SELECT {_TICK_COLUMNS}
  FROM stock_prices
 WHERE symbol = $1 AND time >= $2 AND time < $3 AND (time, source, source_seq) > ($2, $4, $5)
 ORDER BY time, source, source_seq
 LIMIT $6
"""
# (index_name, time) is unique (0004), so time alone continues a listing.
_INDEX_VALUES: Final = """
SELECT time, value, constituents, method
  FROM market_indices
 WHERE index_name = $1 AND time >= $2 AND time < $3 AND time > $4
 ORDER BY time
 LIMIT $5
"""
_INDEX_VALUES_FIRST: Final = """
SELECT time, value, constituents, method
  FROM market_indices
 WHERE index_name = $1 AND time >= $2 AND time < $3
 ORDER BY time
 LIMIT $4
"""


async def fetch_ticks(
    db: Any, symbol: str, start: datetime, end: datetime, limit: int, after: tuple[str, int] | None = None
) -> list[TickRow]:
    """At most ``limit`` ticks of ``symbol`` in ``[start, end)``, oldest first. With
    ``after`` (the ``source`` and ``seq`` of the last tick seen, whose time is
    ``start``), the listing continues right after that tick. ``db``: a pool or a
    connection."""
    if after is None:
        rows = await db.fetch(_TICKS_FIRST, symbol, start, end, limit)
    else:
        rows = await db.fetch(_TICKS_AFTER, symbol, start, end, after[0], after[1], limit)
    return [
        TickRow(
            time=r["time"],
            price=decimal_text(r["price"]),
            size=decimal_text(r["size"]),
            bid=optional_decimal_text(r["bid"]),
            ask=optional_decimal_text(r["ask"]),
            exchange=r["exchange"],
            source=r["source"],
            seq=r["source_seq"],
        )
        for r in rows
    ]


async def fetch_index_values(
    db: Any, name: str, start: datetime, end: datetime, limit: int, after: datetime | None = None
) -> list[IndexValue]:
    """At most ``limit`` values of index ``name`` in ``[start, end)`` (and later than
    ``after``, when given), oldest first."""
    if after is None:
        rows = await db.fetch(_INDEX_VALUES_FIRST, name, start, end, limit)
    else:
        rows = await db.fetch(_INDEX_VALUES, name, start, end, after, limit)
    return [
        IndexValue(time=r["time"], value=decimal_text(r["value"]), constituents=r["constituents"], method=r["method"])
        for r in rows
    ]


async def fetch_bars(db: Any, symbol: str, interval: Resolution, start: datetime, end: datetime) -> list[Bar]:
    """The ``interval`` bars of ``symbol`` whose bucket overlaps ``[start, end)``,
    oldest first, read as ``nexanest bars show`` reads them (``ops/bars.py``: the
    query surface both editions share). The caller bounds the range (its bar count)."""
    return [
        Bar(
            bucket=r.bucket,
            open=decimal_text(r.open),
            high=decimal_text(r.high),
            low=decimal_text(r.low),
            close=decimal_text(r.close),
            volume=decimal_text(r.volume),
            trade_count=r.trade_count,
            vwap=optional_decimal_text(r.vwap),
        )
        for r in await bars.fetch_bars(db, symbol, interval, start, end)
    ]
