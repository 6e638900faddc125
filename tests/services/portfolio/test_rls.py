"""Row-level security binds the service itself (integration).

Hand-written queries on the service's own pooled connections (role
``nexanest_portfolio``), with no acting user and with another user acting,
neither see nor change nor delete a user's portfolios, holdings, transactions or
snapshots. Each test first shows the same query reaching the rows as their
owner, so that a query that could never find anything proves nothing.
"""

from __future__ import annotations

import uuid
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from nexanest.pipeline.settings import Settings
from nexanest.services.portfolio.snapshot_store import SnapshotRow, record_snapshots
from nexanest.services.rls import acting_as
from tests.services.portfolio.conftest import Service

pytestmark = pytest.mark.integration

READS = {
    "portfolios": "SELECT count(*) FROM portfolios WHERE portfolio_id = $1",
    "holdings": "SELECT count(*) FROM holdings WHERE portfolio_id = $1",
    "transactions": "SELECT count(*) FROM transactions WHERE portfolio_id = $1",
}
WRITES = [
    "UPDATE portfolios SET cash = cash + 1000000 WHERE portfolio_id = $1",
    "UPDATE holdings SET quantity = quantity + 1 WHERE portfolio_id = $1",
    "DELETE FROM portfolios WHERE portfolio_id = $1",
]


async def alices_portfolio(service: Service, alice: uuid.UUID) -> uuid.UUID:
    pid = await service.create(alice)
    assert (await service.book(alice, pid, kind="deposit", amount="100")).status_code == 201
    assert (await service.book(alice, pid, kind="buy", symbol="AAA", quantity="1", price="10")).status_code == 201
    return uuid.UUID(pid)


async def counts(conn: asyncpg.Connection, pid: uuid.UUID) -> dict[str, int]:
    return {table: await conn.fetchval(query, pid) for table, query in READS.items()}


async def test_the_service_connection_sees_and_changes_nothing_of_a_user_without_acting_as_them(
    service: Service, users: list[uuid.UUID]
) -> None:
    alice, bob = users
    pid = await alices_portfolio(service, alice)
    async with acting_as(service.pool, alice) as conn:
        assert await counts(conn, pid) == {"portfolios": 1, "holdings": 1, "transactions": 2}

    async with service.pool.acquire() as conn:  # no acting user at all
        assert await conn.fetchval("SELECT current_setting('app.user_id', true)") in (None, "")
        assert await counts(conn, pid) == {"portfolios": 0, "holdings": 0, "transactions": 0}
        assert await conn.fetchval("SELECT count(*) FROM portfolios") == 0
        for statement in WRITES:
            assert await conn.execute(statement, pid) in ("UPDATE 0", "DELETE 0")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # the WITH CHECK of the policy
            await conn.execute(
                "INSERT INTO transactions (transaction_id, portfolio_id, user_id, seq, kind, amount) "
                "VALUES ($1, $2, $3, 99, 'deposit', 1)",
                uuid.uuid4(),
                pid,
                alice,
            )

    async with acting_as(service.pool, bob) as conn:
        assert await counts(conn, pid) == {"portfolios": 0, "holdings": 0, "transactions": 0}
        for statement in WRITES:
            assert await conn.execute(statement, pid) in ("UPDATE 0", "DELETE 0")
    for user, row_user in ((bob, alice), (bob, bob)):
        # As Bob: a row in Alice's name breaks the policy; one in his own name the
        # foreign key to (portfolio, user): no row can hang in another's portfolio.
        with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.ForeignKeyViolationError)):
            async with acting_as(service.pool, user) as conn:
                await conn.execute(
                    "INSERT INTO holdings (portfolio_id, user_id, symbol, quantity, cost_basis) "
                    "VALUES ($1, $2, 'ZZZ', 1000, 0)",
                    pid,
                    row_user,
                )

    async with acting_as(service.pool, alice) as conn:
        assert await counts(conn, pid) == {"portfolios": 1, "holdings": 1, "transactions": 2}
        assert await conn.fetchval("SELECT cash FROM portfolios WHERE portfolio_id = $1", pid) == Decimal(90)


async def test_the_acting_user_does_not_outlive_its_transaction(service: Service, users: list[uuid.UUID]) -> None:
    alice = users[0]
    await alices_portfolio(service, alice)
    async with acting_as(service.pool, alice) as conn:
        assert await conn.fetchval("SELECT count(*) FROM portfolios") == 1
        backend = await conn.fetchval("SELECT pg_backend_pid()")
    # Hold every connection of the pool at once: the one that acted for Alice is among them.
    found = False
    async with AsyncExitStack() as held:
        for _ in range(service.pool.get_size()):
            conn = await held.enter_async_context(service.pool.acquire())
            if await conn.fetchval("SELECT pg_backend_pid()") == backend:
                found = True
                assert await conn.fetchval("SELECT current_setting('app.user_id', true)") in (None, "")
                assert await conn.fetchval("SELECT count(*) FROM portfolios") == 0
    assert found


async def test_the_service_role_cannot_rewrite_what_it_is_not_granted(service: Service, users: list[uuid.UUID]) -> None:
    alice = users[0]
    pid = await alices_portfolio(service, alice)
    for statement in (
        "UPDATE portfolios SET user_id = gen_random_uuid() WHERE portfolio_id = $1",  # only cash, last_seq
        "UPDATE transactions SET amount = 0 WHERE portfolio_id = $1",  # transactions are never changed
        "DELETE FROM transactions WHERE portfolio_id = $1",
        "DELETE FROM holdings WHERE portfolio_id = $1",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with acting_as(service.pool, alice) as conn:
                await conn.execute(statement, pid)


async def test_snapshots_of_a_user_are_out_of_reach_of_the_service_connection(
    service: Service, users: list[uuid.UUID]
) -> None:
    alice, bob = users
    pid = uuid.uuid4()
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    row = SnapshotRow(pid, alice, Decimal(1), Decimal(1), Decimal(0), Decimal(0), 1, 0)
    assert await record_snapshots(service.snapshots_pool, at, [row]) == 1
    query = "SELECT count(*) FROM portfolio_snapshots WHERE portfolio_id = $1"
    async with acting_as(service.snapshots_pool, alice) as conn:
        assert await conn.fetchval(query, pid) == 1
        chunk = await conn.fetchval(
            "SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks "
            "WHERE hypertable_name = 'portfolio_snapshots' AND range_start <= $1 AND range_end > $1",
            at,
        )
    assert chunk is not None
    assert chunk.startswith("portfolio_snapshot_chunks.")
    async with service.snapshots_pool.acquire() as conn:
        assert await conn.fetchval(query, pid) == 0
        assert await conn.execute("DELETE FROM portfolio_snapshots WHERE portfolio_id = $1", pid) == "DELETE 0"
        # TimescaleDB gives chunks the hypertable's grants but not its policies: the
        # chunks' schema is closed to the service, so no chunk can be read directly.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval(f"SELECT count(*) FROM {chunk}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # writes only through the function
            await conn.execute(
                "INSERT INTO portfolio_snapshots (time, portfolio_id, user_id, cost_basis, cash, realised, "
                "positions, unpriced) VALUES (now(), $1, $2, 0, 0, 0, 0, 0)",
                pid,
                alice,
            )
    async with acting_as(service.snapshots_pool, bob) as conn:
        assert await conn.fetchval(query, pid) == 0
        assert await conn.execute("DELETE FROM portfolio_snapshots WHERE portfolio_id = $1", pid) == "DELETE 0"
    async with acting_as(service.snapshots_pool, alice) as conn:
        assert await conn.fetchval(query, pid) == 1


async def test_only_the_service_role_may_read_across_users_and_only_through_the_functions(migrated: Settings) -> None:
    """The SECURITY DEFINER functions belong to the owners, pin their search_path,
    and only nexanest_portfolio may execute them; the service role owns nothing."""
    for dsn, function in (
        (migrated.postgres.portfolio_dsn, "portfolio_snapshot_inputs()"),
        (
            migrated.timescale.admin_dsn,
            "record_portfolio_snapshots(timestamptz, uuid[], uuid[], numeric[], "
            "numeric[], numeric[], numeric[], integer[], integer[])",
        ),
    ):
        conn = await asyncpg.connect(dsn.get_secret_value())
        try:
            fn = await conn.fetchrow(
                "SELECT p.prosecdef, p.proconfig, pg_get_userbyid(p.proowner) AS owner, current_user AS me, "
                "has_function_privilege('nexanest_portfolio', p.oid, 'EXECUTE') AS service, "
                "has_function_privilege('public', p.oid, 'EXECUTE') AS public "
                "FROM pg_proc p WHERE p.oid = $1::regprocedure",
                function,
            )
            assert fn is not None
            assert fn["prosecdef"]
            assert fn["proconfig"] == ["search_path=pg_catalog, pg_temp"]
            assert fn["owner"] == fn["me"]
            assert fn["service"]
            assert not fn["public"]
            owned = await conn.fetchval(
                "SELECT count(*) FROM pg_class WHERE relowner = 'nexanest_portfolio'::regrole"
                " OR relnamespace IN (SELECT oid FROM pg_namespace WHERE nspowner = 'nexanest_portfolio'::regrole)"
            )
            assert owned == 0
            tables = await conn.fetch(
                "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
                "WHERE relname IN ('portfolios', 'holdings', 'transactions', 'portfolio_snapshots') AND relkind = 'r'"
            )
            assert tables
            assert all(t["relrowsecurity"] and t["relforcerowsecurity"] for t in tables)
            policies = await conn.fetch(
                "SELECT tablename, qual, with_check FROM pg_policies "
                "WHERE tablename = ANY($1) AND 'nexanest_portfolio' = ANY(roles)",
                [t["relname"] for t in tables],
            )
            assert {p["tablename"] for p in policies} == {t["relname"] for t in tables}
            assert all("app.user_id" in p["qual"] and "app.user_id" in p["with_check"] for p in policies)
        finally:
            await conn.close()
