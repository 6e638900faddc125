"""``nexanest bars repair``: recompute the OHLCV bars of a range from the raw ticks.

Under the Apache edition the pipeline keeps the rollup tables (``pipeline/sinks/ohlcv.py``);
a repair rebuilds them per day from ``stock_prices``. Under the community edition
it refreshes the continuous aggregates instead, up to each refresh policy's end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg

from nexanest.pipeline.edition import Edition, detect_edition
from nexanest.pipeline.sinks.ohlcv import CAGGS, RESOLUTIONS, ROLLUP_COLUMNS, ROLLUP_TABLES, WIDTHS, Resolution

# The rollups are merged by every batch; a repair that read ticks while a batch
# was between its COPY and its upsert could miss that batch's ticks and then
# overwrite its bars. SHARE ROW EXCLUSIVE conflicts with the batches' ROW
# EXCLUSIVE: in-flight batches finish first, new ones wait for the repair.
# Same table order as upsert_bars, so neither side can deadlock the other.
_LOCK: Final = f"LOCK TABLE {', '.join(ROLLUP_TABLES[r] for r in RESOLUTIONS)} IN SHARE ROW EXCLUSIVE MODE"

_DELETE: Final = "DELETE FROM {table} WHERE bucket >= $1 AND bucket < $2{symbol}"

# 1m from the ticks, in one set-based statement; tick_order() (from the migration)
# packs (time, source_seq) into one exact value, so first()/last() break ties by seq.
_REBUILD_1M: Final = f"""
INSERT INTO {ROLLUP_TABLES["1m"]} ({ROLLUP_COLUMNS})
SELECT symbol, time_bucket(INTERVAL '1 minute', time),
       first(price, tick_order(time, source_seq)), min(time), first(source_seq, tick_order(time, source_seq)),
       max(price), min(price),
       last(price, tick_order(time, source_seq)), max(time), last(source_seq, tick_order(time, source_seq)),
       sum(size), count(*), sum(price * size)
  FROM stock_prices
 WHERE time >= $1 AND time < $2{{symbol}}
 GROUP BY symbol, time_bucket(INTERVAL '1 minute', time)
"""

# Each coarser resolution from the one below it, as the continuous aggregates do.
_REBUILD_FROM_FINER: Final = f"""
INSERT INTO {{table}} ({ROLLUP_COLUMNS})
SELECT symbol, time_bucket(INTERVAL '{{width}}', bucket),
       first(open, tick_order(open_time, open_seq)), min(open_time), first(open_seq, tick_order(open_time, open_seq)),
       max(high), min(low),
       last(close, tick_order(close_time, close_seq)), max(close_time),
       last(close_seq, tick_order(close_time, close_seq)),
       sum(volume), sum(trade_count), sum(pv)
  FROM {{finer}}
 WHERE bucket >= $1 AND bucket < $2{{symbol}}
 GROUP BY symbol, time_bucket(INTERVAL '{{width}}', bucket)
"""
_WIDTH_SQL: Final[Mapping[Resolution, str]] = {"1m": "1 minute", "5m": "5 minutes", "1h": "1 hour", "1d": "1 day"}

_DAY: Final = timedelta(days=1)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class RepairReport:
    #: The range actually recomputed: the requested one widened to whole UTC days.
    start: datetime
    end: datetime
    symbol: str | None
    edition: Edition
    #: Bars written per resolution (the Apache path; the native path refreshes instead).
    bars: dict[Resolution, int]
    #: Bars that existed before, per resolution (the Apache path).
    replaced: dict[Resolution, int]
    #: Where each continuous aggregate's refresh ended (the community path): the end
    #: of the range, or earlier where its policy leaves the newest buckets open.
    refreshed_to: dict[Resolution, datetime] = field(default_factory=dict)


# Where a refresh of a continuous aggregate may end now: as its refresh policy does,
# end_offset before now() (the server's clock), or one bucket ($2) without a policy.
_REFRESH_END: Final = """
SELECT now() - coalesce((j.config->>'end_offset')::interval, $2::interval)
  FROM timescaledb_information.continuous_aggregates c
  LEFT JOIN timescaledb_information.jobs j
    ON j.hypertable_schema = c.materialization_hypertable_schema
   AND j.hypertable_name = c.materialization_hypertable_name
   AND j.proc_name = 'policy_refresh_continuous_aggregate'
 WHERE c.view_name = $1
 ORDER BY j.job_id
 LIMIT 1
"""


def repair_range(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """``[start, end)`` widened to whole UTC days: the 1d grid contains every finer
    one, so every bar touching the range is recomputed whole, at every resolution."""
    lo = _EPOCH + (start - _EPOCH) // _DAY * _DAY
    hi = _EPOCH + -((_EPOCH - end) // _DAY) * _DAY
    return lo, max(hi, lo + _DAY)


def _sql(template: str, symbol: str | None, **names: str) -> str:
    return template.format(symbol="" if symbol is None else " AND symbol = $3", **names)


async def repair(admin: asyncpg.Connection, start: datetime, end: datetime, symbol: str | None = None) -> RepairReport:
    """Recompute every bar of ``[start, end)`` (widened to whole days) from ``stock_prices``.

    ``admin`` is a connection as the owner role (the ingest role may not delete
    bars). On the Apache edition each day is one transaction: lock the rollup
    tables against concurrent batches, then per resolution DELETE the day's bars
    and INSERT them recomputed, 1m from the ticks and each coarser one from the
    one below. Batches wait for at most one day's repair. On the community
    edition it refreshes the continuous aggregates over the range, lowest level
    first (``symbol`` cannot narrow a refresh there), each only up to its refresh
    policy's end offset before now: a refresh materialises the buckets still
    filling and moves the watermark past them, so ticks arriving later would be
    missing from them (real-time aggregation only covers what lies above the
    watermark) until the policy got round to them again.
    """
    lo, hi = repair_range(start, end)
    edition = await detect_edition(admin)
    written: dict[Resolution, int] = dict.fromkeys(RESOLUTIONS, 0)
    replaced: dict[Resolution, int] = dict.fromkeys(RESOLUTIONS, 0)
    if edition == "timescale":
        refreshed_to: dict[Resolution, datetime] = {}
        for resolution in RESOLUTIONS:
            cap = await admin.fetchval(_REFRESH_END, CAGGS[resolution], WIDTHS[resolution])
            end = hi if cap is None else min(hi, cap)
            refreshed_to[resolution] = max(lo, end)
            if end <= lo:
                continue  # every bucket of the range is still open: real-time aggregation serves it
            # A refresh commits as it goes, so it must not run in a transaction (nor in a
            # prepared statement's): a plain query, with our own datetimes as literals.
            await admin.execute(
                f"CALL refresh_continuous_aggregate('{CAGGS[resolution]}',"
                f" TIMESTAMPTZ '{lo.isoformat()}', TIMESTAMPTZ '{end.isoformat()}')"
            )
        return RepairReport(lo, hi, symbol, edition, {}, {}, refreshed_to)
    args: tuple[Any, ...] = () if symbol is None else (symbol,)
    day = lo
    while day < hi:
        async with admin.transaction():
            await admin.execute(_LOCK)
            finer = ""
            for resolution in RESOLUTIONS:
                table = ROLLUP_TABLES[resolution]
                deleted = await admin.execute(_sql(_DELETE, symbol, table=table), day, day + _DAY, *args)
                if resolution == "1m":
                    insert = _sql(_REBUILD_1M, symbol)
                else:
                    insert = _sql(_REBUILD_FROM_FINER, symbol, table=table, finer=finer, width=_WIDTH_SQL[resolution])
                inserted = await admin.execute(insert, day, day + _DAY, *args)
                replaced[resolution] += int(deleted.rsplit(" ", 1)[-1])
                written[resolution] += int(inserted.rsplit(" ", 1)[-1])
                finer = table
        day += _DAY
    return RepairReport(lo, hi, symbol, edition, written, replaced)
