"""The market data service (:8003): quotes from Redis, ticks and bars from TimescaleDB, a live quote stream.

It only reads. TimescaleDB is reached as the read-only role
``nexanest_market_data`` (``settings.services.market_data_dsn``; migration
``timescale/0005_market_data_reader.sql`` grants it SELECT on what it reads and
nothing else), quotes in the quotes database of Redis (``settings.redis.db_quotes``,
the keys the consumer writes), and the stream follows the consumer's quote
updates through Redis pub/sub (``hub.py``). Every route needs an access token.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Final

import asyncpg
from fastapi import FastAPI

from nexanest.pipeline.settings import Settings
from nexanest.services.app import Resource, create_app
from nexanest.services.market_data.history import history_router
from nexanest.services.market_data.hub import quote_hub
from nexanest.services.market_data.limits import MarketDataLimits
from nexanest.services.market_data.quotes import quotes_router
from nexanest.services.market_data.stream import stream_router
from nexanest.services.resources import postgres_pool, redis_db
from nexanest.services.sessions import session_store
from nexanest.services.tokens import TokenVerifier

SERVICE: Final = "market-data"
#: Everything the service reads; ``/readyz`` checks the role may read each.
READS: Final = ("stock_prices", "market_indices", "ohlcv_1m", "ohlcv_5m", "ohlcv_1h", "ohlcv_1d")


def build_app(
    settings: Settings, *, verifier: TokenVerifier | None = None, limits: MarketDataLimits | None = None
) -> FastAPI:
    """The service's app. ``verifier`` checks access tokens (``None``: the auth
    service's sessions in Redis, ``settings.redis.db_sessions``); ``limits``
    bounds requests and streams (``None``: the defaults)."""
    limits = limits or MarketDataLimits()
    resources: list[Resource[Any]] = []
    if verifier is None:
        verifier, sessions = session_store(settings)
        resources.append(sessions)
    symbol_rule = re.compile(settings.validation.symbol_pattern)
    key_prefix = settings.redis.quote_key_prefix
    db = _readable(
        postgres_pool(
            "timescale",
            settings.services.market_data_dsn,
            max_size=settings.services.pool_max_size,
            command_timeout_s=limits.query_timeout_s,
        )
    )
    quotes = redis_db("quotes", settings.redis, settings.redis.db_quotes)
    hub = quote_hub("quote-stream", settings.redis, queue_size=limits.stream_queue)
    return create_app(
        SERVICE,
        resources=[db, quotes, hub, *resources],
        routers=[
            quotes_router(quotes, key_prefix=key_prefix, symbol_rule=symbol_rule, verifier=verifier, limits=limits),
            history_router(db, symbol_rule=symbol_rule, verifier=verifier, limits=limits),
            stream_router(
                hub, quotes, key_prefix=key_prefix, symbol_rule=symbol_rule, verifier=verifier, limits=limits
            ),
        ],
        max_body_bytes=settings.services.max_body_bytes,
    )


def _readable(pool: Resource[asyncpg.Pool]) -> Resource[asyncpg.Pool]:
    """``pool`` whose readiness check is that its role may read everything the
    service reads: a missing grant shows in ``/readyz``, not in the first request."""

    async def may_read(opened: asyncpg.Pool) -> None:
        refused = await opened.fetchval(
            "SELECT array_agg(r) FROM unnest($1::text[]) AS r WHERE NOT has_table_privilege(r, 'SELECT')", list(READS)
        )
        if refused:
            raise PermissionError(f"the service's role may not read {', '.join(refused)}")

    return replace(pool, check=may_read)
