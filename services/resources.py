"""The resources most services hold: a PostgreSQL pool and a Redis client,
each with the readiness check ``/readyz`` asks (``services/app.py``).

They take their sub-settings' values, never the environment, and never log a
DSN or URL (both carry passwords).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import redis.asyncio as redis
from pydantic import SecretStr

from nexanest.pipeline.settings import RedisSettings
from nexanest.services.app import Resource


def postgres_pool(
    name: str,
    dsn: SecretStr,
    *,
    min_size: int = 1,
    max_size: int = 4,
    command_timeout_s: float = 60.0,
    connect_timeout_s: float = 10.0,
) -> Resource[asyncpg.Pool]:
    """An asyncpg pool on ``dsn``. Opening connects ``min_size`` connections, so
    a database that is down fails the start; afterwards the pool reconnects by
    itself and ``/readyz`` reports it while it cannot."""

    @asynccontextmanager
    async def open_pool() -> AsyncIterator[asyncpg.Pool]:
        pool = await asyncpg.create_pool(
            dsn.get_secret_value(),
            min_size=min_size,
            max_size=max_size,
            command_timeout=command_timeout_s,
            timeout=connect_timeout_s,
        )
        try:
            yield pool
        finally:
            await pool.close()

    async def select_one(pool: asyncpg.Pool) -> None:
        await pool.fetchval("SELECT 1")

    return Resource(name, open_pool, select_one)


def redis_client(name: str, url: SecretStr, *, db: int, socket_timeout_s: float = 5.0) -> Resource[redis.Redis]:
    """A Redis client on database ``db`` of ``url``, made when the app starts. It
    connects on first use, so opening never fails; ``/readyz`` sends PING."""

    @asynccontextmanager
    async def open_client() -> AsyncIterator[redis.Redis]:
        async with _closing(_new_redis(url, db, socket_timeout_s)) as client:
            yield client

    return Resource(name, open_client, _ping)


def redis_db(name: str, settings: RedisSettings, db: int) -> Resource[redis.Redis]:
    """``redis_client`` on database ``db`` of the project's Redis, with its
    socket timeout (``settings.url``, ``settings.socket_timeout_s``)."""
    return redis_client(name, settings.url, db=db, socket_timeout_s=settings.socket_timeout_s)


def redis_client_now(
    name: str, url: SecretStr, *, db: int, socket_timeout_s: float = 5.0
) -> tuple[redis.Redis, Resource[redis.Redis]]:
    """As ``redis_client``, with the client made at once, for what must hold it
    before the app starts (a token verifier given to a route's dependency); the
    resource closes it when the app stops."""
    client = _new_redis(url, db, socket_timeout_s)
    return client, Resource(name, lambda: _closing(client), _ping)


def _new_redis(url: SecretStr, db: int, socket_timeout_s: float) -> redis.Redis:
    return redis.Redis.from_url(
        url.get_secret_value(), db=db, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
    )


@asynccontextmanager
async def _closing(client: redis.Redis) -> AsyncIterator[redis.Redis]:
    try:
        yield client
    finally:
        await client.aclose()


async def _ping(client: redis.Redis) -> None:
    await client.ping()
