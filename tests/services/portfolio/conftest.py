"""The portfolio service against the suite's databases (``portfolio_test``,
``timescale_test``), Redis databases 10-14 and this test's own quote keys.

``service`` runs the real app in process (its lifespan opens its pools as
``nexanest_portfolio``) with signed tokens standing in for the auth service's
sessions, and without the in-process snapshot worker (the snapshot tests drive
rounds themselves).
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as redis
from pydantic import SecretStr

from nexanest.pipeline.settings import Settings
from nexanest.services.app import Resource
from nexanest.services.portfolio.app import build_app
from nexanest.services.tokens import SignedTokens


@dataclass
class Service:
    settings: Settings
    http: httpx.AsyncClient
    tokens: SignedTokens
    resources: Mapping[str, Any]
    quotes: redis.Redis

    def auth(self, user: uuid.UUID) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.issue(user)}"}

    @property
    def pool(self) -> asyncpg.Pool:
        """The service's own pool on the portfolio database (role nexanest_portfolio)."""
        pool: asyncpg.Pool = self.resources["portfolio-db"]
        return pool

    @property
    def snapshots_pool(self) -> asyncpg.Pool:
        """The service's own pool on TimescaleDB (role nexanest_portfolio)."""
        pool: asyncpg.Pool = self.resources["snapshots-db"]
        return pool

    async def create(self, user: uuid.UUID, name: str = "main", **extra: str) -> str:
        response = await self.http.post("/portfolios", json={"name": name, **extra}, headers=self.auth(user))
        assert response.status_code == 201, response.text
        portfolio_id: str = response.json()["id"]
        return portfolio_id

    async def book(self, user: uuid.UUID, portfolio_id: str, **body: str) -> httpx.Response:
        return await self.http.post(f"/portfolios/{portfolio_id}/transactions", json=body, headers=self.auth(user))

    async def quote(self, symbol: str, price: str, *, age_s: float = 0.0) -> None:
        """Write ``symbol``'s quote as the pipeline would, under this test's prefix."""
        ts_ns = time.time_ns() - int(age_s * 1e9)
        await self.quotes.hset(
            self.settings.redis.quote_key_prefix + symbol,
            mapping={"price": price, "ts_ns": str(ts_ns), "seq": "1", "updated_ns": str(ts_ns)},
        )


def service_settings(isolated: Settings, **services: object) -> Settings:
    update: dict[str, object] = {"portfolio_snapshots_in_service": False, **services}
    return isolated.model_copy(update={"services": isolated.services.model_copy(update=update)})


@pytest.fixture
async def service(isolated: Settings, quotes_redis: redis.Redis) -> AsyncIterator[Service]:
    async with running_service(service_settings(isolated), quotes_redis) as running:
        yield running


@asynccontextmanager
async def running_service(settings: Settings, quotes: redis.Redis) -> AsyncIterator[Service]:
    """The app with ``settings``, its lifespan entered, and a client on it."""
    tokens = SignedTokens(SecretStr(secrets.token_hex(32)), 3600)
    app = build_app(settings, verifier=tokens)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://portfolio.test") as http,
    ):
        opened: dict[Resource[Any], Any] = app.state.resources
        yield Service(settings, http, tokens, {r.name: v for r, v in opened.items()}, quotes)


@pytest.fixture
async def users(migrated: Settings) -> AsyncIterator[list[uuid.UUID]]:
    """Two fresh users (more on demand: append). Their portfolios and snapshots are
    removed afterwards, as the owner roles, so the test databases do not grow."""
    made = [uuid.uuid4(), uuid.uuid4()]
    yield made
    conn = await asyncpg.connect(migrated.postgres.portfolio_dsn.get_secret_value())
    try:
        await conn.execute("DELETE FROM portfolios WHERE user_id = ANY($1)", made)
    finally:
        await conn.close()
    conn = await asyncpg.connect(migrated.timescale.admin_dsn.get_secret_value())
    try:
        await conn.execute("DELETE FROM portfolio_snapshots WHERE user_id = ANY($1)", made)
    finally:
        await conn.close()


def d(text: str) -> Decimal:
    return Decimal(text)
