"""The analytics service against the suite's databases (``timescale_test``,
``analytics_test``), Redis database 13 and this test's own cache keys.

``service`` runs the real app in process (its lifespan opens its pools as
``nexanest_analytics``) with signed tokens standing in for the auth service's
sessions, and without the in-process worker (tests drive rounds themselves).
Snapshots are written as the table's owner, as the portfolio service's
snapshot function would write them.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as redis
from pydantic import SecretStr

from nexanest.pipeline.settings import Settings
from nexanest.services.analytics.app import build_app
from nexanest.services.analytics.cache import MetricsCache
from nexanest.services.app import Resource
from nexanest.services.tokens import SignedTokens


@dataclass(frozen=True)
class Snapshot:
    time: datetime
    total_value: Decimal | None
    #: cash + cost_basis - realised: the net contributions.
    contributions: Decimal


@dataclass
class Service:
    settings: Settings
    http: httpx.AsyncClient
    tokens: SignedTokens
    resources: Mapping[str, Any]

    def auth(self, user: uuid.UUID) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.issue(user)}"}

    @property
    def pool(self) -> asyncpg.Pool:
        """The service's own pool on TimescaleDB (role nexanest_analytics)."""
        pool: asyncpg.Pool = self.resources["metrics-db"]
        return pool

    @property
    def reports_pool(self) -> asyncpg.Pool:
        """The service's own pool on the analytics database (role nexanest_analytics)."""
        pool: asyncpg.Pool = self.resources["reports-db"]
        return pool

    @property
    def cache(self) -> MetricsCache:
        client: redis.Redis = self.resources["analytics-redis"]
        return MetricsCache(client, prefix=self.settings.services.analytics_cache_prefix, ttl_s=60)


def service_settings(isolated: Settings, test_id: str, **services: object) -> Settings:
    """No worker in the app; cache keys under the test's prefix (``isolated`` removes them)."""
    update: dict[str, object] = {
        "analytics_worker_in_service": False,
        "analytics_cache_prefix": f"test.{test_id}:analytics:",
        **services,
    }
    return isolated.model_copy(update={"services": isolated.services.model_copy(update=update)})


@pytest.fixture
async def service(isolated: Settings, test_id: str) -> AsyncIterator[Service]:
    async with running_service(service_settings(isolated, test_id)) as running:
        yield running


@asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[Service]:
    """The app with ``settings``, its lifespan entered, and a client on it."""
    tokens = SignedTokens(SecretStr(secrets.token_hex(32)), 3600)
    app = build_app(settings, verifier=tokens)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://analytics.test") as http,
    ):
        opened: dict[Resource[Any], Any] = app.state.resources
        yield Service(settings, http, tokens, {r.name: v for r, v in opened.items()})


@pytest.fixture
async def users(migrated: Settings) -> AsyncIterator[list[uuid.UUID]]:
    """Two fresh users (more on demand: append). Their snapshots, metrics and reports
    are removed afterwards, as the owner roles, so the test databases do not grow."""
    made = [uuid.uuid4(), uuid.uuid4()]
    yield made
    conn = await asyncpg.connect(migrated.timescale.admin_dsn.get_secret_value())
    try:
        await conn.execute("DELETE FROM portfolio_snapshots WHERE user_id = ANY($1)", made)
        await conn.execute("DELETE FROM analytics_metrics WHERE user_id = ANY($1)", made)
    finally:
        await conn.close()
    conn = await asyncpg.connect(migrated.postgres.analytics_dsn.get_secret_value())
    try:
        await conn.execute("DELETE FROM saved_reports WHERE user_id = ANY($1)", made)
    finally:
        await conn.close()


async def write_snapshots(
    settings: Settings, portfolio_id: uuid.UUID, user_id: uuid.UUID, snapshots: Sequence[Snapshot]
) -> None:
    """Store ``snapshots`` of the portfolio as the table's owner. Cash holds the
    contributions (no holdings, nothing realised); the market value makes up the
    rest of the total value (None: unpriced)."""
    conn = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value())
    try:
        await conn.executemany(
            "INSERT INTO portfolio_snapshots (time, portfolio_id, user_id, market_value, cost_basis, cash, "
            "unrealised, realised, total_value, positions, unpriced) "
            "VALUES ($1, $2, $3, $4, 0, $5, $4, 0, $6, 1, $7)",
            [
                (
                    s.time,
                    portfolio_id,
                    user_id,
                    None if s.total_value is None else s.total_value - s.contributions,
                    s.contributions,
                    s.total_value,
                    1 if s.total_value is None else 0,
                )
                for s in snapshots
            ],
        )
    finally:
        await conn.close()
