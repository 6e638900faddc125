"""How a service acts for a user on a table with row-level security.

Every RLS policy of the service databases compares a row's ``user_id`` with the
setting ``app.user_id``. ``acting_as`` sets it for one transaction only
(``set_config(..., is_local => true)``): when the transaction ends, commit or
rollback, the setting is gone, so a pooled connection handed to the next
request carries no trace of the previous user. Setting it for the session
instead would leak one user's identity into another's request the moment a
route forgot to reset it.

The service roles own nothing and the tables ``FORCE ROW LEVEL SECURITY``, so
the policies bind the service too: a query that forgets ``acting_as`` sees no
rows at all rather than everyone's.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


@asynccontextmanager
async def acting_as(pool: asyncpg.Pool, user_id: uuid.UUID) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside a transaction whose acting user is ``user_id``.

    The transaction commits when the block ends and rolls back when it raises.
    """
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT set_config('app.user_id', $1, true)", str(user_id))
        yield conn


async def count_under_lock(conn: asyncpg.Connection, table: str, lock_key: str, *, seed: int = 0) -> int:
    """How many rows of ``table`` the acting user has, after taking the advisory
    lock ``(lock_key, seed)`` until the transaction ends.

    A per-user limit is checked this way just before an insert: a parallel
    creation by the same user waits on the lock, then counts the committed row,
    so two cannot pass the limit together. The lock and the count are two
    statements on purpose: a count in the locking statement would read a
    snapshot taken before the lock was granted. ``table`` is the caller's
    constant, never input."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, $2))", lock_key, seed)
    count: int = await conn.fetchval(f"SELECT count(*) FROM {table}")
    return count
