"""The latest metrics of each subject, cached in Redis (``settings.redis.db_analytics``).

The worker stores a subject's answer (the JSON body ``GET /analytics/...``
returns) after it wrote the rows; the routes answer a hit without touching the
database. A portfolio's key names its owner as well, and is only ever written
by a computation that ran as that owner, so a hit never shows one user's
portfolio to another: another user's key is never asked for. Entries expire
after a few worker intervals, so a stopped worker's figures do not pose as
current for ever (a miss reads the table).
"""

from __future__ import annotations

import uuid

import redis.asyncio as redis


class MetricsCache:
    """Redis errors propagate; callers treat the cache as optional."""

    def __init__(self, client: redis.Redis, *, prefix: str, ttl_s: float) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl_ms = max(1000, int(ttl_s * 1000))

    def portfolio_key(self, user_id: uuid.UUID, portfolio_id: uuid.UUID) -> str:
        return f"{self._prefix}portfolio:{user_id}:{portfolio_id}"

    def symbol_key(self, symbol: str) -> str:
        return f"{self._prefix}symbol:{symbol}"

    async def get(self, key: str) -> bytes | None:
        body: bytes | str | None = await self._client.get(key)
        return body.encode() if isinstance(body, str) else body

    async def put(self, key: str, body: bytes) -> None:
        await self._client.set(key, body, px=self._ttl_ms)
