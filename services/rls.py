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
