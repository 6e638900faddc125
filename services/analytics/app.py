"""The analytics service (:8005): portfolio and symbol metrics, and saved reports.

``nexanest serve analytics`` runs ``build_app(settings)``. It connects as the
service's own role ``nexanest_analytics`` (owns nothing, bypasses nothing) to
TimescaleDB (``analytics_timescale_dsn``: it reads bars, ticks, index values and
snapshots, and writes ``analytics_metrics``), to the analytics database
(``analytics_dsn``: saved reports), and to Redis ``db_analytics`` (the latest
metrics). With ``analytics_worker_in_service`` (the default) it also runs the
worker (``worker.py``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

import asyncpg
from fastapi import FastAPI

from nexanest.pipeline.settings import Settings
from nexanest.services.analytics.routes import build_router
from nexanest.services.analytics.worker import analytics_worker
from nexanest.services.app import Resource, create_app
from nexanest.services.resources import postgres_pool, redis_db
from nexanest.services.sessions import session_store
from nexanest.services.tokens import TokenVerifier

#: What the service needs of TimescaleDB (timescale/0007); ``/readyz`` checks each.
NEEDS: Final = (
    "has_table_privilege('analytics_metrics', 'INSERT')",
    "has_table_privilege('portfolio_snapshots', 'SELECT')",
    "has_table_privilege('stock_prices', 'SELECT')",
    "has_table_privilege('market_indices', 'SELECT')",
    "has_table_privilege('ohlcv_1m', 'SELECT') AND has_table_privilege('ohlcv_1h', 'SELECT')"
    " AND has_table_privilege('ohlcv_1d', 'SELECT')",
    "has_function_privilege('analytics_portfolio_series(interval, timestamptz, timestamptz, uuid[])', 'EXECUTE')",
)


def build_app(settings: Settings, *, verifier: TokenVerifier | None = None) -> FastAPI:
    """The analytics service. ``verifier`` checks bearer tokens; None means the
    auth service's sessions in Redis (``settings.redis.db_sessions``)."""
    s = settings.services
    metrics_db = _migrated(postgres_pool("metrics-db", s.analytics_timescale_dsn, max_size=s.pool_max_size))
    reports_db = postgres_pool("reports-db", s.analytics_dsn, max_size=s.pool_max_size)
    cache = redis_db("analytics-redis", settings.redis, settings.redis.db_analytics)
    resources: list[Resource[Any]] = [metrics_db, reports_db, cache]
    if verifier is None:
        verifier, sessions = session_store(settings)
        resources.append(sessions)
    if s.analytics_worker_in_service:
        resources.append(analytics_worker(settings))
    router = build_router(settings, verifier=verifier, metrics_db=metrics_db, reports_db=reports_db, cache=cache)
    return create_app("analytics", resources=resources, routers=[router], max_body_bytes=s.max_body_bytes)


def _migrated(pool: Resource[asyncpg.Pool]) -> Resource[asyncpg.Pool]:
    """``pool`` whose readiness check is that its role holds what timescale/0007
    grants: a database not migrated, or a missing grant, shows in ``/readyz``
    (``failed: <error type>``), not in the first request."""

    async def may_work(opened: asyncpg.Pool) -> None:
        held = await opened.fetchval(f"SELECT {' AND '.join(f'({n})' for n in NEEDS)}")
        if not held:
            raise PermissionError("the service's role lacks a grant of timescale/0007")

    return replace(pool, check=may_work)
