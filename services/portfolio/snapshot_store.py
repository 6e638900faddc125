"""The ``portfolio_snapshots`` hypertable (timescale/0006), in parameterised SQL.

Reads and deletes run inside ``acting_as`` on the snapshots pool, so row-level
security limits them to the acting user's rows. Writes go through the
migration's ``record_portfolio_snapshots`` function: a round holds the rows of
many users, and row-level security admits one acting user per statement.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    portfolio_id: uuid.UUID
    user_id: uuid.UUID
    #: None while an open holding lacks a fresh quote (``unpriced`` > 0).
    market_value: Decimal | None
    cost_basis: Decimal
    cash: Decimal
    realised: Decimal
    positions: int
    unpriced: int


async def record_snapshots(conn: asyncpg.Connection | asyncpg.Pool, at: datetime, rows: Sequence[SnapshotRow]) -> int:
    """Write ``rows`` as the snapshots at ``at``, in one statement; returns how
    many were new (a portfolio already snapshotted at ``at`` keeps its row)."""
    if not rows:
        return 0
    written: int = await conn.fetchval(
        "SELECT record_portfolio_snapshots($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        at,
        [r.portfolio_id for r in rows],
        [r.user_id for r in rows],
        [r.market_value for r in rows],
        [r.cost_basis for r in rows],
        [r.cash for r in rows],
        [r.realised for r in rows],
        [r.positions for r in rows],
        [r.unpriced for r in rows],
    )
    return written


async def history(
    conn: asyncpg.Connection, portfolio_id: uuid.UUID, start: datetime, end: datetime, bucket: timedelta
) -> list[asyncpg.Record]:
    """The last snapshot of each ``bucket`` (``time_bucket``, UTC) in [start, end)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT time_bucket($4::interval, time) AS bucket, "
        "last(market_value, time) AS market_value, last(cost_basis, time) AS cost_basis, "
        "last(cash, time) AS cash, last(unrealised, time) AS unrealised, last(realised, time) AS realised, "
        "last(total_value, time) AS total_value, last(unpriced, time) AS unpriced "
        "FROM portfolio_snapshots WHERE portfolio_id = $1 AND time >= $2 AND time < $3 "
        "GROUP BY bucket ORDER BY bucket",
        portfolio_id,
        start,
        end,
        bucket,
    )
    return rows


async def delete_snapshots(conn: asyncpg.Connection, portfolio_id: uuid.UUID) -> int:
    """Delete a portfolio's snapshots (its history goes with it)."""
    status: str = await conn.execute("DELETE FROM portfolio_snapshots WHERE portfolio_id = $1", portfolio_id)
    return int(status.rsplit(" ", 1)[-1])
