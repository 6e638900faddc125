"""Catalog facts the analytics role tests assert: who may run a SECURITY DEFINER
function, and whether a table's row-level security is on and FORCEd."""

from __future__ import annotations

import asyncpg

#: What a function that crosses users must be: a definer's, owned by the owner
#: role, with a pinned search path, executable by the analytics role alone.
CROSSING_FUNCTION = {
    "prosecdef": True,
    "proconfig": ["search_path=pg_catalog, pg_temp"],
    "by_owner": True,
    "analytics": True,
    "portfolio": False,
    "public": False,
}


async def function_facts(conn: asyncpg.Connection, signature: str) -> dict[str, object]:
    """``signature`` as ``regprocedure`` reads it, e.g. ``f(integer)``; ``conn`` as the owner role."""
    row = await conn.fetchrow(
        "SELECT p.prosecdef, p.proconfig, pg_get_userbyid(p.proowner) = current_user AS by_owner, "
        "has_function_privilege('nexanest_analytics', p.oid, 'EXECUTE') AS analytics, "
        "has_function_privilege('nexanest_portfolio', p.oid, 'EXECUTE') AS portfolio, "
        "has_function_privilege('public', p.oid, 'EXECUTE') AS public "
        "FROM pg_proc p WHERE p.oid = $1::regprocedure",
        signature,
    )
    assert row is not None
    return dict(row)


async def row_security(conn: asyncpg.Connection, table: str) -> tuple[bool, bool]:
    """(enabled, forced) of ``table``'s row-level security."""
    row = await conn.fetchrow(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = $1::regclass", table
    )
    assert row is not None
    return (row["relrowsecurity"], row["relforcerowsecurity"])
