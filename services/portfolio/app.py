"""The portfolio service (:8002): portfolios, their ledger, valuation at live
quotes, and history from snapshots.

``nexanest serve portfolio`` runs ``build_app(settings)``. It connects as the
service's own role ``nexanest_portfolio`` (owns nothing, bypasses nothing) to the
portfolio database and to TimescaleDB (snapshots), and to two Redis databases:
the pipeline's quotes (read only) and ``db_portfolio`` for its cache. With
``portfolio_snapshots_in_service`` (the default) it also runs the snapshot
worker (``snapshots.py``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from nexanest.pipeline.settings import Settings
from nexanest.services.app import Resource, create_app
from nexanest.services.portfolio.routes import build_router
from nexanest.services.portfolio.snapshots import snapshot_worker
from nexanest.services.resources import postgres_pool, redis_db
from nexanest.services.sessions import session_store
from nexanest.services.tokens import TokenVerifier


def build_app(settings: Settings, *, verifier: TokenVerifier | None = None) -> FastAPI:
    """The portfolio service. ``verifier`` checks bearer tokens; None means the
    auth service's sessions in Redis (``settings.redis.db_sessions``)."""
    s = settings.services
    db = postgres_pool("portfolio-db", s.portfolio_dsn, max_size=s.pool_max_size)
    snapshots_db = postgres_pool("snapshots-db", s.portfolio_snapshots_dsn, max_size=s.pool_max_size)
    quotes = redis_db("quotes-redis", settings.redis, settings.redis.db_quotes)
    cache = redis_db("portfolio-redis", settings.redis, settings.redis.db_portfolio)
    resources: list[Resource[Any]] = [db, snapshots_db, quotes, cache]
    if verifier is None:
        verifier, sessions = session_store(settings)
        resources.append(sessions)
    if s.portfolio_snapshots_in_service:
        resources.append(snapshot_worker(settings))
    router = build_router(settings, verifier=verifier, db=db, snapshots_db=snapshots_db, quotes=quotes, cache=cache)
    return create_app("portfolio", resources=resources, routers=[router], max_body_bytes=s.max_body_bytes)
