"""The catalog check that every table of a service database is a user table under
FORCEd row-level security: read from ``pg_class`` and ``pg_policies``, so that a
table added later without it fails the service's tests, not a review."""

from __future__ import annotations

from typing import Final

import asyncpg

#: Tables without user data: the migrations' ledger (``ops/migrate.py``).
NO_USER_DATA: Final = frozenset({"nexanest_migrations"})


async def unguarded_tables(conn: asyncpg.Connection, role: str) -> tuple[set[str], list[str]]:
    """(the tables looked at, what is wrong with them) for every ordinary or
    partitioned table outside the system schemas but those of ``NO_USER_DATA``. A
    table is guarded when it has a ``user_id`` column, ENABLEs and FORCEs
    row-level security, has a policy for ``role``, and every policy that applies
    to ``role`` (its own or PUBLIC's: permissive policies add up) tests
    ``app.user_id`` in ``USING`` and, where it lets rows in, in ``WITH CHECK``."""
    tables = await conn.fetch(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
        "       EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'user_id' "
        "               AND NOT a.attisdropped) AS has_user_id "
        "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "   AND n.nspname NOT LIKE 'pg\\_toast%' AND c.relpersistence <> 't' AND NOT c.relispartition "
        "   AND c.relname <> ALL($1::text[])",
        sorted(NO_USER_DATA),
    )
    policies = await conn.fetch(
        "SELECT tablename, policyname, cmd, qual, with_check FROM pg_policies "
        "WHERE $1 = ANY(roles) OR 'public' = ANY(roles)",
        role,
    )
    wrong: list[str] = []
    for table in tables:
        name = table["relname"]
        if not table["has_user_id"]:
            wrong.append(f"{name}: no user_id column")
        if not (table["relrowsecurity"] and table["relforcerowsecurity"]):
            wrong.append(
                f"{name}: row-level security enabled={table['relrowsecurity']} forced={table['relforcerowsecurity']}"
            )
        applying = [p for p in policies if p["tablename"] == name]
        if not applying:
            wrong.append(f"{name}: no policy for {role}")
        for p in applying:
            if "app.user_id" not in (p["qual"] or ""):
                wrong.append(f"{name}.{p['policyname']}: USING does not test app.user_id")
            if p["cmd"] in ("ALL", "INSERT", "UPDATE") and "app.user_id" not in (p["with_check"] or ""):
                wrong.append(f"{name}.{p['policyname']}: WITH CHECK does not test app.user_id")
    return {t["relname"] for t in tables}, wrong
