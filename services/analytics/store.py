"""The ``analytics_metrics`` hypertable (timescale/0007), in parameterised SQL.

Every function takes a connection; portfolio rows are read and written inside
``acting_as`` (``services/rls.py``) as their owner, since row-level security
shows the role a portfolio's rows only while ``app.user_id`` names the owner,
and admits a written one only under that identity (and only for a portfolio
whose snapshots name the owner). Symbol rows need no identity.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from nexanest.services.analytics.metrics import MetricValue, SubjectKind


async def write_metrics(
    conn: asyncpg.Connection,
    kind: SubjectKind,
    subject_id: str,
    user_id: uuid.UUID | None,
    at: datetime,
    values: Sequence[MetricValue],
) -> int:
    """Store ``values`` as the subject's metrics at ``at``, in one statement;
    returns how many were new (a (metric, window) already stored at ``at`` keeps its row)."""
    if not values:
        return 0
    written: int = await conn.fetchval(
        "WITH written AS ("
        " INSERT INTO analytics_metrics (time, subject_kind, subject_id, user_id, metric, time_window, value)"
        " SELECT $1, $2, $3, $4, m.metric, m.time_window, m.value"
        " FROM unnest($5::text[], $6::text[], $7::float8[]) AS m(metric, time_window, value)"
        " ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM written",
        at,
        kind,
        subject_id,
        user_id,
        [v.metric for v in values],
        [v.window for v in values],
        [v.value for v in values],
    )
    return written


async def latest(conn: asyncpg.Connection, kind: SubjectKind, subject_id: str) -> list[asyncpg.Record]:
    """The subject's metrics of its latest time (a round writes all of them at once)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT time, metric, time_window, value, computed_at FROM analytics_metrics "
        "WHERE subject_kind = $1 AND subject_id = $2 AND time = ("
        " SELECT max(time) FROM analytics_metrics WHERE subject_kind = $1 AND subject_id = $2) "
        "ORDER BY metric, time_window",
        kind,
        subject_id,
    )
    return rows


async def history(
    conn: asyncpg.Connection,
    kind: SubjectKind,
    subject_id: str,
    *,
    metric: str | None,
    window: str | None,
    start: datetime,
    end: datetime,
    limit: int,
) -> list[asyncpg.Record]:
    """The subject's stored values in [start, end), oldest first, at most ``limit``;
    ``metric`` and ``window`` narrow them when given."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT time, metric, time_window, value FROM analytics_metrics "
        "WHERE subject_kind = $1 AND subject_id = $2 AND time >= $3 AND time < $4 "
        "AND ($5::text IS NULL OR metric = $5) AND ($6::text IS NULL OR time_window = $6) "
        "ORDER BY time, metric, time_window LIMIT $7",
        kind,
        subject_id,
        start,
        end,
        metric,
        window,
        limit,
    )
    return rows


async def owns_portfolio(conn: asyncpg.Connection, portfolio_id: uuid.UUID) -> bool:
    """Whether the acting user's snapshots include the portfolio (row-level
    security shows the role no other user's): the analytics service's proof of
    ownership, as it has no access to the portfolio database."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM portfolio_snapshots WHERE portfolio_id = $1)", portfolio_id
    )
    return found
