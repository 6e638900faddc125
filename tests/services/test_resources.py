"""PostgreSQL and Redis as a service's resources, against the real test databases
(integration): opened by the lifespan, used by a route, checked by /readyz.

No ``from __future__ import annotations``: routes close over their resources
(see ``Resource`` in services/app.py).
"""

import socket
from typing import Annotated

import asyncpg
import httpx
import pytest
import redis.asyncio as redis
from fastapi import APIRouter, Depends
from pydantic import SecretStr

from nexanest.pipeline.settings import Settings
from nexanest.services.app import ResourceOpenError, create_app
from nexanest.services.resources import postgres_pool, redis_client

pytestmark = pytest.mark.integration


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_ready_when_postgres_and_redis_answer_and_routes_use_them(migrated: Settings) -> None:
    db = postgres_pool("auth-db", migrated.postgres.auth_dsn)
    sessions = redis_client("sessions", migrated.redis.url, db=migrated.redis.db_sessions)
    router = APIRouter()
    pools: list[asyncpg.Pool] = []

    @router.get("/where")
    async def where(
        pool: Annotated[asyncpg.Pool, Depends(db.get)], client: Annotated[redis.Redis, Depends(sessions.get)]
    ) -> dict[str, object]:
        pools.append(pool)
        info = await client.client_info()
        return {"database": await pool.fetchval("SELECT current_database()"), "redis_db": info["db"]}

    app = create_app("auth", resources=[db, sessions], routers=[router])
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://auth.test") as http,
        app.router.lifespan_context(app),
    ):
        ready = await http.get("/readyz")
        where_am_i = (await http.get("/where")).json()
        assert not pools[0].is_closing()
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"auth-db": "ok", "sessions": "ok"}}
    # The test databases, never the user's.
    assert where_am_i == {"database": "auth_test", "redis_db": migrated.redis.db_sessions}
    assert migrated.redis.db_sessions >= 10
    assert pools[0].is_closing(), "the lifespan closes the pool at stop"


async def test_unready_naming_redis_when_it_does_not_answer(migrated: Settings) -> None:
    db = postgres_pool("auth-db", migrated.postgres.auth_dsn)
    nowhere = redis_client("sessions", SecretStr(f"redis://127.0.0.1:{closed_port()}"), db=0, socket_timeout_s=1.0)
    app = create_app("auth", resources=[db, nowhere])
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://auth.test") as http,
        app.router.lifespan_context(app),
    ):
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"auth-db": "ok", "sessions": "failed: ConnectionError"},
    }


async def test_a_database_that_is_down_fails_the_start(migrated: Settings) -> None:
    dsn = SecretStr(f"postgresql://nobody:pw@127.0.0.1:{closed_port()}/auth")
    app = create_app("auth", resources=[postgres_pool("auth-db", dsn, connect_timeout_s=2.0)])
    with pytest.raises(ResourceOpenError, match="cannot open 'auth-db'"):
        async with app.router.lifespan_context(app):
            pytest.fail("started without its database")
