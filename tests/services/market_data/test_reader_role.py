"""The market data service's role after migration 0005, on both TimescaleDB editions
(integration): it may SELECT exactly what the service reads, change nothing
anywhere, and owns nothing in the whole cluster."""

from __future__ import annotations

import asyncpg
import pytest
from pydantic import SecretStr

from nexanest.pipeline.settings import Settings
from nexanest.services.market_data.app import READS
from tests.conftest import COMMUNITY_TEST_DATABASE, community_dsn

pytestmark = pytest.mark.integration

ROLE = "nexanest_market_data"
#: The hypertables whose chunks inherit the role's SELECT (TimescaleDB copies grants to chunks).
HYPERTABLES = {"stock_prices", "market_indices"}
WRITES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


@pytest.fixture(params=["apache", pytest.param("community", marks=pytest.mark.timescale_license)])
def edition_dsns(request: pytest.FixtureRequest) -> tuple[SecretStr, SecretStr]:
    """(owner DSN, service role DSN) of the test database on each edition's cluster.
    Not async: it asks for the session's async fixtures by name, outside the loop."""
    if request.param == "apache":
        settings: Settings = request.getfixturevalue("migrated")
        return settings.timescale.admin_dsn, settings.services.market_data_dsn
    settings = request.getfixturevalue("community")
    return settings.timescale.admin_dsn, community_dsn(settings.services.market_data_dsn, COMMUNITY_TEST_DATABASE)


async def test_the_role_may_read_exactly_what_the_service_reads_and_write_nothing(
    edition_dsns: tuple[SecretStr, SecretStr],
) -> None:
    owner_dsn, _ = edition_dsns
    owner = await asyncpg.connect(owner_dsn.get_secret_value(), timeout=10)
    try:
        # What was granted to the role itself, and what it can read at all outside the
        # catalogs (TimescaleDB grants its own catalog tables to PUBLIC: every role reads them).
        granted = await owner.fetch(
            """
            SELECT c.oid::regclass::text AS relation, a.privilege_type AS privilege, h.hypertable_name
              FROM pg_class c
              JOIN pg_namespace n ON n.oid = c.relnamespace
              CROSS JOIN LATERAL aclexplode(c.relacl) AS a
              LEFT JOIN timescaledb_information.chunks h
                ON h.chunk_schema = n.nspname AND h.chunk_name = c.relname
             WHERE a.grantee = to_regrole($1)
            """,
            ROLE,
        )
        readable = await owner.fetch(
            r"""
            SELECT c.oid::regclass::text AS relation
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f', 'S')
               AND has_table_privilege($1, c.oid, 'SELECT')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', '_timescaledb_internal')
               AND n.nspname NOT LIKE '\_timescaledb\_%' AND n.nspname NOT LIKE 'timescaledb\_%'
            """,
            ROLE,
        )
        writable = await owner.fetch(
            """
            SELECT c.oid::regclass::text AS relation, p.privilege
              FROM pg_class c, unnest($2::text[]) AS p(privilege)
             WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') AND has_table_privilege($1, c.oid, p.privilege)
               AND c.relnamespace <> 'pg_catalog'::regnamespace  -- pg_settings: UPDATE is how SET works
            UNION ALL
            SELECT c.oid::regclass::text, 'a column: ' || p.privilege
              FROM pg_class c, unnest(ARRAY['INSERT', 'UPDATE']) AS p(privilege)
             WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') AND has_any_column_privilege($1, c.oid, p.privilege)
               AND c.relnamespace <> 'pg_catalog'::regnamespace
            UNION ALL
            SELECT n.nspname, 'CREATE' FROM pg_namespace n WHERE has_schema_privilege($1, n.oid, 'CREATE')
            UNION ALL
            SELECT current_database(), p.privilege FROM unnest(ARRAY['CREATE', 'TEMP']) AS p(privilege)
             WHERE has_database_privilege($1, current_database(), p.privilege)
            """,
            ROLE,
            list(WRITES),
        )
    finally:
        await owner.close()
    # TimescaleDB passes a hypertable's grants on to its storage: chunks, and once
    # compression is on (the maintain tests turn it on), the compressed hypertable and
    # its chunks, all in _timescaledb_internal. Those may only be read.
    internal = [r for r in granted if r["relation"].startswith("_timescaledb_internal.")]
    top_level = sorted((r["relation"], r["privilege"]) for r in granted if r not in internal)
    chunks = {(r["hypertable_name"], r["privilege"]) for r in granted if r["hypertable_name"] is not None}
    assert top_level == sorted((relation, "SELECT") for relation in READS)
    assert {r["privilege"] for r in internal} <= {"SELECT"}
    assert chunks <= {(h, "SELECT") for h in HYPERTABLES}  # chunks of what it reads, by inheritance
    assert sorted(r["relation"] for r in readable) == sorted(READS)
    assert writable == []


async def test_every_attempt_to_change_data_or_schema_is_refused(edition_dsns: tuple[SecretStr, SecretStr]) -> None:
    _, reader_dsn = edition_dsns
    reader = await asyncpg.connect(reader_dsn.get_secret_value(), timeout=10)
    try:
        assert await reader.fetchval("SELECT current_user") == ROLE
        for relation in READS:
            await reader.fetch(f"SELECT * FROM {relation} LIMIT 1")  # it reads them all
            key = "index_name" if relation == "market_indices" else "symbol"
            # A view the rewriter cannot update (the community edition's, over aggregates)
            # refuses before the privilege check; a table or a simple view by the privilege.
            refusals = (
                (asyncpg.InsufficientPrivilegeError,)
                if relation in HYPERTABLES
                else (
                    asyncpg.InsufficientPrivilegeError,
                    asyncpg.FeatureNotSupportedError,
                    asyncpg.ObjectNotInPrerequisiteStateError,
                )
            )
            for statement in (
                f"INSERT INTO {relation} ({key}) SELECT {key} FROM {relation} WHERE false",
                f"UPDATE {relation} SET {key} = {key} WHERE false",
                f"DELETE FROM {relation} WHERE false",
                *([f"TRUNCATE {relation}"] if relation in HYPERTABLES else []),
            ):
                with pytest.raises(refusals):
                    await reader.execute(statement)
        for statement in (
            "UPDATE ingest_offsets SET next_offset = 0 WHERE false",
            "INSERT INTO system_events SELECT * FROM system_events WHERE false",
            "SELECT * FROM ingest_offsets",  # not read by the service: not readable
            "SELECT * FROM system_events",
            "CREATE TABLE probe (x int)",
            "CREATE TEMP TABLE probe (x int)",
            "CREATE VIEW probe AS SELECT 1",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await reader.execute(statement)
    finally:
        await reader.close()


async def test_the_role_owns_nothing_in_the_cluster_and_belongs_to_no_role(
    edition_dsns: tuple[SecretStr, SecretStr],
) -> None:
    owner_dsn, _ = edition_dsns
    owner = await asyncpg.connect(owner_dsn.get_secret_value(), timeout=10)
    try:
        # pg_shdepend records the owner of every object in every database of the cluster.
        owned = await owner.fetchval(
            "SELECT count(*) FROM pg_shdepend WHERE refclassid = 'pg_authid'::regclass"
            " AND refobjid = to_regrole($1) AND deptype = 'o'",
            ROLE,
        )
        member_of = await owner.fetch(
            "SELECT roleid::regrole::text FROM pg_auth_members WHERE member = to_regrole($1)", ROLE
        )
        powers = await owner.fetchrow(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication"
            " FROM pg_roles WHERE rolname = $1",
            ROLE,
        )
    finally:
        await owner.close()
    assert owned == 0
    assert member_of == []
    assert powers is not None
    assert not any(powers.values())
