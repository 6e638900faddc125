"""A brief cache of valuations in Redis (``settings.redis.db_portfolio``).

A valuation is cached under its user, its portfolio and the portfolio's
**generation**, a counter that every booked transaction (and a deletion)
increments after its commit. A reader takes the generation before it reads the
database and stores what it computed under that generation, so a valuation
computed from holdings a transaction has since changed lands under a
generation nobody asks for any more: a commit followed by a valuation never
answers the old holdings, even when a slow reader stores its result late.
Entries expire after ``ttl_s`` (the quotes move on); the counters a day after
their last change, far beyond any entry made under them, so a counter that
expired and restarts at 0 meets no entry of its previous life.

The key names the user as well: an entry is only ever made after the database
showed that user the portfolio, so a hit never shows it to anyone else.
"""

from __future__ import annotations

import uuid
from typing import Final

import redis.asyncio as redis

#: GET the generation and the entry under it, in one round trip.
_LOOKUP: Final = """
local generation = redis.call('GET', KEYS[1]) or '0'
return {generation, redis.call('GET', ARGV[1] .. generation)}
"""
_GENERATION_TTL_S: Final = 24 * 3600


class ValuationCache:
    """``ttl_s`` 0 turns the cache off (``lookup`` always misses, ``store`` does
    nothing; ``invalidate`` still counts). Redis errors propagate."""

    def __init__(self, client: redis.Redis, ttl_s: float, *, key_prefix: str = "portfolio:valuation:") -> None:
        self._client = client
        self._ttl_ms = int(ttl_s * 1000)
        self._prefix = key_prefix
        self._lookup = client.register_script(_LOOKUP)

    async def lookup(self, user_id: uuid.UUID, portfolio_id: uuid.UUID) -> tuple[str, bytes | None]:
        """The portfolio's current generation, and the valuation cached under it (None: a miss)."""
        if self._ttl_ms <= 0:
            return "0", None
        generation, body = await self._lookup(
            keys=[self._generation_key(portfolio_id)], args=[self._entry_prefix(user_id, portfolio_id)]
        )
        return _text(generation), body

    async def store(self, user_id: uuid.UUID, portfolio_id: uuid.UUID, generation: str, body: bytes) -> None:
        if self._ttl_ms > 0:
            await self._client.set(self._entry_prefix(user_id, portfolio_id) + generation, body, px=self._ttl_ms)

    async def invalidate(self, portfolio_id: uuid.UUID) -> None:
        """Call after the commit that changed the portfolio."""
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.incr(self._generation_key(portfolio_id))
            pipe.expire(self._generation_key(portfolio_id), _GENERATION_TTL_S)
            await pipe.execute()

    def _generation_key(self, portfolio_id: uuid.UUID) -> str:
        return f"{self._prefix}generation:{portfolio_id}"

    def _entry_prefix(self, user_id: uuid.UUID, portfolio_id: uuid.UUID) -> str:
        return f"{self._prefix}{user_id}:{portfolio_id}:"


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode()
