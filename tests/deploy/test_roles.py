"""The services' login roles (deploy/local and deploy/compose create them): each
reaches its databases, and has no power that would let it step around the
row-level security of its tables."""

from __future__ import annotations

import asyncpg
import pytest

from nexanest.pipeline.settings import Settings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "setting",
    [
        "auth_dsn",
        "portfolio_dsn",
        "portfolio_snapshots_dsn",
        "market_data_dsn",
        "analytics_dsn",
        "analytics_timescale_dsn",
        "notifications_dsn",
    ],
)
async def test_a_service_role_connects_owns_nothing_and_bypasses_nothing(migrated: Settings, setting: str) -> None:
    dsn = migrated.services.dsns()[setting]
    conn = await asyncpg.connect(dsn.get_secret_value(), timeout=10)
    try:
        role = await conn.fetchrow(
            "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication "
            "FROM pg_roles WHERE rolname = current_user"
        )
        assert role is not None
        assert role["rolname"].startswith("nexanest_")
        assert not any(role[k] for k in ("rolsuper", "rolcreaterole", "rolcreatedb", "rolbypassrls", "rolreplication"))
        assert await conn.fetchval("SELECT current_database()") in (
            "auth_test",
            "portfolio_test",
            "analytics_test",
            "notifications_test",
            "timescale_test",
        )
        owned = await conn.fetch(
            "SELECT relname AS name FROM pg_class WHERE relowner = to_regrole(current_user) "
            "UNION ALL SELECT nspname FROM pg_namespace WHERE nspowner = to_regrole(current_user) "
            "UNION ALL SELECT proname FROM pg_proc WHERE proowner = to_regrole(current_user)"
        )
        assert owned == []
        # Nothing may be created in the public schema either (PostgreSQL 15's default, kept).
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE role_probe (x int)")
    finally:
        await conn.close()
