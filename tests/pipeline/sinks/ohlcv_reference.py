"""A second implementation of the pipeline's rollups, for tests only.

Production (``pipeline/sinks/ohlcv.py``) builds 1m bars in Python and folds
5m/1h/1d from them in SQL, in one statement per batch (``upsert_bars``). This is
the form it replaced: the coarser bars folded in Python (``all_resolutions``)
and one ``INSERT ... ON CONFLICT`` per resolution (``upsert_bars_per_resolution``).
Nothing in the pipeline calls it; ``test_ohlcv_upsert.py`` checks that both
store and return the same bars, and ``test_ohlcv.py`` that folding in Python
agrees with ``time_bucket``. The ON CONFLICT merge (``_MERGE``) is production's.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

import asyncpg

from nexanest.pipeline.sinks.ohlcv import (
    _EXACT,
    RESOLUTIONS,
    ROLLUP_COLUMNS,
    ROLLUP_TABLES,
    Bar,
    Bars,
    Resolution,
    StoredBar,
)
from nexanest.pipeline.sinks.ohlcv_upsert import _MERGE


def merge(into: Bar, other: Bar) -> None:
    """Fold ``other`` (same symbol and bucket) into ``into``; ``_MERGE`` is the SQL twin."""
    if (other.open_time, other.open_seq) < (into.open_time, into.open_seq):
        into.open, into.open_time, into.open_seq = other.open, other.open_time, other.open_seq
    if (other.close_time, other.close_seq) > (into.close_time, into.close_seq):
        into.close, into.close_time, into.close_seq = other.close, other.close_time, other.close_seq
    into.high = max(into.high, other.high)
    into.low = min(into.low, other.low)
    into.volume += other.volume
    into.trade_count += other.trade_count
    into.pv += other.pv


# time_bucket's default origin (2000-01-03, a Monday, midnight UTC) lies on every grid
# below, so flooring the UTC fields gives the same buckets.
_FLOOR: Final[Mapping[Resolution, Callable[[datetime], datetime]]] = {
    "1m": lambda b: b,
    "5m": lambda b: b.replace(minute=b.minute - b.minute % 5),
    "1h": lambda b: b.replace(minute=0),
    "1d": lambda b: b.replace(hour=0, minute=0),
}


def coarser_bars(bars: Bars, resolution: Resolution) -> Bars:
    """Fold finer bars (any resolution that divides ``resolution``) into ``resolution``."""
    floor = _FLOOR[resolution]
    out: Bars = {}
    with decimal.localcontext(_EXACT):
        for (symbol, bucket), bar in bars.items():
            key = (symbol, floor(bucket))
            into = out.get(key)
            if into is None:
                out[key] = replace(bar)
            else:
                merge(into, bar)
    return out


def all_resolutions(minute: Bars) -> dict[Resolution, Bars]:
    """1m bars and the 5m, 1h and 1d bars folded from them, each from the one below."""
    out: dict[Resolution, Bars] = {"1m": minute}
    finer = minute
    for resolution in RESOLUTIONS[1:]:
        finer = out[resolution] = coarser_bars(finer, resolution)
    return out


# Decimals travel as text: asyncpg's binary numeric encoding costs several
# microseconds a value, str() and the server's numeric_in a fraction of that.
_UPSERT: Final = f"""
INSERT INTO {{table}} AS r ({ROLLUP_COLUMNS})
SELECT symbol, bucket, open::numeric, open_time, open_seq, high::numeric, low::numeric, close::numeric,
       close_time, close_seq, volume::numeric, trade_count, pv::numeric
  FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::timestamptz[], $5::bigint[],
              $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::bigint[],
              $11::text[], $12::bigint[], $13::text[])
       AS u(symbol, bucket, open, open_time, open_seq, high, low, close, close_time, close_seq,
            volume, trade_count, pv)
{_MERGE}"""
# The upsert as a data-modifying CTE whose RETURNING gives the merged rows as
# stored, of which only the latest bucket per symbol leaves the server.
_UPSERT_RETURNING_LATEST: Final = f"""
WITH merged AS (
{_UPSERT}
)
SELECT DISTINCT ON (symbol) symbol, bucket, open, high, low, close, volume, trade_count,
       (pv / NULLIF(volume, 0))::NUMERIC(20, 9) AS vwap
  FROM merged
 ORDER BY symbol, bucket DESC
"""
_UPSERTS: Final[Mapping[Resolution, str]] = {
    r: _UPSERT_RETURNING_LATEST.format(table=ROLLUP_TABLES[r]) for r in RESOLUTIONS
}


def _columns(bars: Bars) -> list[list[Any]]:
    items = sorted(bars.items(), key=lambda kv: kv[0])
    return [
        [k[0] for k, _ in items],
        [k[1] for k, _ in items],
        [str(b.open) for _, b in items],
        [b.open_time for _, b in items],
        [b.open_seq for _, b in items],
        [str(b.high) for _, b in items],
        [str(b.low) for _, b in items],
        [str(b.close) for _, b in items],
        [b.close_time for _, b in items],
        [b.close_seq for _, b in items],
        [str(b.volume) for _, b in items],
        [b.trade_count for _, b in items],
        [str(b.pv) for _, b in items],
    ]


async def upsert_bars_per_resolution(conn: asyncpg.Connection, minute: Bars) -> list[StoredBar]:
    """What ``upsert_bars`` does, the way it was done before: the coarser bars
    folded in Python and one statement per resolution, 1m first. Same contract
    and, the tests check, the same result."""
    if not minute:
        return []
    out: list[StoredBar] = []
    for resolution, bars in all_resolutions(minute).items():
        rows = await conn.fetch(_UPSERTS[resolution], *_columns(bars))
        out.extend(StoredBar(resolution, *r) for r in rows)
    return out
