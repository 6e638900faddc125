"""The series the metrics are computed from, read from TimescaleDB as the
analytics role, in parameterised SQL.

- Portfolio values: through ``analytics_portfolio_series`` (timescale/0007), a
  SECURITY DEFINER function that answers, per portfolio and bucket, the last
  priced snapshot's total value and net contributions, and the owner's id; the
  worker needs every user's in one round, which row-level security would not
  show the role.
- Bars: ``ops/bars.fetch_bars`` on the views ``ohlcv_*`` (the same on both editions).
- Index values: the last value of each bucket in ``market_indices``.
- Spreads: sums over ``stock_prices`` (the bars carry no bid or ask).

Each reader fetches, per resolution, from the earliest start of the windows of
that resolution minus one bucket (so the anchor is there) up to ``end``
(exclusive). Decimals become doubles here, once (``metrics.py``: precision).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import asyncpg

from nexanest.ops.bars import fetch_bars
from nexanest.services.analytics.metrics import (
    RESOLUTION_WIDTHS,
    SPREAD_WINDOWS,
    WINDOWS,
    Bar,
    Point,
    Resolution,
    SpreadSum,
    WindowName,
)

RESOLUTIONS: Final[tuple[Resolution, ...]] = tuple(RESOLUTION_WIDTHS)


def since(resolution: Resolution, end: datetime) -> datetime:
    """The first bucket a reader of ``resolution`` needs, for windows ending at ``end``."""
    starts = [w.start(end) for w in WINDOWS.values() if w.resolution == resolution]
    return min(starts) - RESOLUTION_WIDTHS[resolution]


@dataclass
class PortfolioSeries:
    user_id: uuid.UUID
    points: dict[Resolution, list[Point]] = field(default_factory=dict)


async def portfolio_series(
    conn: asyncpg.Connection | asyncpg.Pool, end: datetime, portfolio_ids: Sequence[uuid.UUID] | None = None
) -> dict[uuid.UUID, PortfolioSeries]:
    """Every portfolio's (or those of ``portfolio_ids``) value series at each resolution."""
    out: dict[uuid.UUID, PortfolioSeries] = {}
    for resolution in RESOLUTIONS:
        rows = await conn.fetch(
            "SELECT portfolio_id, user_id, bucket, total_value, contributions "
            "FROM analytics_portfolio_series($1, $2, $3, $4)",
            RESOLUTION_WIDTHS[resolution],
            since(resolution, end),
            end,
            None if portfolio_ids is None else list(portfolio_ids),
        )
        for r in rows:
            series = out.setdefault(r["portfolio_id"], PortfolioSeries(r["user_id"]))
            series.points.setdefault(resolution, []).append(
                Point(r["bucket"], float(r["total_value"]), float(r["contributions"]))
            )
    return out


async def index_series(
    conn: asyncpg.Connection | asyncpg.Pool, index_name: str, end: datetime
) -> dict[Resolution, list[Point]]:
    """The last value of ``index_name`` in each bucket, at each resolution."""
    out: dict[Resolution, list[Point]] = {}
    for resolution in RESOLUTIONS:
        rows = await conn.fetch(
            "SELECT time_bucket($1::interval, time) AS bucket, last(value, time) AS value FROM market_indices "
            "WHERE index_name = $2 AND time >= $3 AND time < $4 GROUP BY bucket ORDER BY bucket",
            RESOLUTION_WIDTHS[resolution],
            index_name,
            since(resolution, end),
            end,
        )
        out[resolution] = [Point(r["bucket"], float(r["value"])) for r in rows]
    return out


async def symbol_bars(conn: Any, symbol: str, end: datetime) -> dict[Resolution, list[Bar]]:
    """The bars of ``symbol`` at each resolution the windows use, with buckets before ``end``."""
    out: dict[Resolution, list[Bar]] = {}
    for resolution in RESOLUTIONS:
        start = since(resolution, end)
        rows = await fetch_bars(conn, symbol, resolution, start, end)
        out[resolution] = [
            Bar(r.bucket, float(r.close), float(r.volume), None if r.vwap is None else float(r.vwap))
            for r in rows
            if r.bucket >= start
        ]
    return out


async def spread_sums(
    conn: asyncpg.Connection | asyncpg.Pool, symbol: str, end: datetime
) -> dict[WindowName, SpreadSum]:
    """Sum and count of ``ask - bid`` over the ticks of ``symbol`` in each spread window."""
    out: dict[WindowName, SpreadSum] = {}
    for name in SPREAD_WINDOWS:
        window = WINDOWS[name]
        row = await conn.fetchrow(
            "SELECT coalesce(sum(ask - bid), 0) AS total, count(*) AS n FROM stock_prices "
            "WHERE symbol = $1 AND time >= $2 AND time < $3 AND bid IS NOT NULL AND ask IS NOT NULL",
            symbol,
            window.start(end),
            end,
        )
        out[window.name] = SpreadSum(float(row["total"]), int(row["n"]))
    return out


async def active_symbols(conn: asyncpg.Connection | asyncpg.Pool, end: datetime, limit: int) -> list[str]:
    """Symbols with an hourly bar in the day before ``end``, at most ``limit``, by name."""
    rows = await conn.fetch(
        "SELECT DISTINCT symbol FROM ohlcv_1h WHERE bucket >= $1 AND bucket < $2 ORDER BY symbol LIMIT $3",
        WINDOWS["1d"].start(end) - RESOLUTION_WIDTHS["1h"],
        end,
        limit,
    )
    return [r["symbol"] for r in rows]
