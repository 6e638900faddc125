"""What the role ``nexanest_analytics`` may do, read from the catalogs as the
owners (integration): exactly the grants of timescale/0007 and analytics/0002-0003,
row-level security forced on its user tables (every table of the analytics
database: the seed's unused ``portfolio_metrics`` is gone, analytics/0004), and
the one way across users, the SECURITY DEFINER function, executable by it alone."""

from __future__ import annotations

import asyncpg
import pytest
from pydantic import SecretStr

from nexanest.pipeline.settings import Settings
from tests.services.analytics.catalog import CROSSING_FUNCTION, function_facts, row_security
from tests.services.analytics.conftest import running_service, service_settings
from tests.services.row_security import unguarded_tables

pytestmark = pytest.mark.integration

ROLE = "nexanest_analytics"
PRIVILEGES = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]
#: The schemas of the chunks of the hypertables under row-level security.
CHUNK_SCHEMAS = ["portfolio_snapshot_chunks", "analytics_metric_chunks"]
#: Top-level relations and what the role may do with them (TimescaleDB's chunks and
#: internal storage inherit from their hypertables: left out).
GRANTED = {
    "timescale": {
        *(
            (relation, "SELECT")
            for relation in (
                "stock_prices",
                "market_indices",
                "ohlcv_1m",
                "ohlcv_5m",
                "ohlcv_1h",
                "ohlcv_1d",
                "portfolio_snapshots",
                "analytics_metrics",
            )
        ),
        ("analytics_metrics", "INSERT"),
    },
    "analytics": {
        *(("saved_reports", p) for p in ("SELECT", "INSERT", "DELETE")),
        *(("report_runs", p) for p in ("SELECT", "INSERT")),
    },
}


async def granted(dsn: SecretStr) -> set[tuple[str, str]]:
    conn = await asyncpg.connect(dsn.get_secret_value())
    try:
        rows = await conn.fetch(
            "SELECT c.relname, p.privilege FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, "
            "unnest($2::text[]) AS p(privilege) "
            "WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') AND has_table_privilege($1, c.oid, p.privilege) "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE '\\_timescaledb%' "
            "AND n.nspname NOT LIKE 'timescaledb\\_%' AND n.nspname <> ALL($3::text[])",
            ROLE,
            PRIVILEGES,
            CHUNK_SCHEMAS,
        )
        # Chunks have the grants, not the policies: their schemas are out of reach.
        reachable = await conn.fetch(
            "SELECT nspname FROM pg_namespace "
            "WHERE nspname = ANY($2::text[]) AND has_schema_privilege($1, oid, 'USAGE')",
            ROLE,
            CHUNK_SCHEMAS,
        )
        assert reachable == []
        return {(r["relname"], r["privilege"]) for r in rows}
    finally:
        await conn.close()


async def test_the_role_holds_exactly_its_grants(migrated: Settings) -> None:
    assert await granted(migrated.timescale.admin_dsn) == GRANTED["timescale"]
    assert await granted(migrated.postgres.analytics_dsn) == GRANTED["analytics"]
    conn = await asyncpg.connect(migrated.postgres.analytics_dsn.get_secret_value())
    try:
        columns = await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'saved_reports'::regclass AND attnum > 0 "
            "AND has_column_privilege($1, attrelid, attnum, 'UPDATE') ORDER BY attname",
            ROLE,
        )
        assert [c["attname"] for c in columns] == ["definition", "name", "schedule", "updated_at"]
        assert await row_security(conn, "saved_reports") == (True, True)
    finally:
        await conn.close()


async def test_every_table_of_the_analytics_database_is_a_user_table_under_forced_rls(migrated: Settings) -> None:
    conn = await asyncpg.connect(migrated.postgres.analytics_dsn.get_secret_value())
    try:
        looked_at, wrong = await unguarded_tables(conn, ROLE)
    finally:
        await conn.close()
    assert looked_at >= {"saved_reports", "report_runs"}  # the query does find the tables
    assert wrong == []


async def test_only_the_role_may_read_every_portfolios_series_and_only_through_the_function(
    migrated: Settings,
) -> None:
    conn = await asyncpg.connect(migrated.timescale.admin_dsn.get_secret_value())
    try:
        series = "analytics_portfolio_series(interval, timestamptz, timestamptz, uuid[])"
        assert await function_facts(conn, series) == CROSSING_FUNCTION
        assert await row_security(conn, "analytics_metrics") == (True, True)
        policies = await conn.fetch(
            "SELECT policyname, cmd FROM pg_policies WHERE tablename = 'analytics_metrics' AND $1 = ANY(roles)", ROLE
        )
        assert {(p["policyname"], p["cmd"]) for p in policies} == {
            ("analytics_metrics_read", "SELECT"),
            ("analytics_metrics_write", "INSERT"),
        }
    finally:
        await conn.close()


async def test_readyz_checks_the_roles_grants(isolated: Settings, test_id: str) -> None:
    async with running_service(service_settings(isolated, test_id)) as service:
        ready = await service.http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["metrics-db"] == "ok"
    # Another service's role (it connects, and lacks the grants of timescale/0007).
    wrong = service_settings(isolated, test_id, analytics_timescale_dsn=isolated.services.market_data_dsn)
    async with running_service(wrong) as service:
        refused = await service.http.get("/readyz")
        assert refused.status_code == 503
        assert refused.json()["checks"]["metrics-db"] == "failed: PermissionError"
