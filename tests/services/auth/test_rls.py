"""Row-level security of the auth database holds against the service's own
role (integration): two users, and hand-written queries on the pool the
service's routes use (``nexanest_auth``), with and without ``app.user_id``."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest

from nexanest.services.rls import acting_as
from tests.services.auth.conftest import PASSWORD, bearer, login, new_email, register
from tests.services.conftest import Served

pytestmark = pytest.mark.integration


class Two:
    def __init__(self, a: uuid.UUID, a_email: str, b: uuid.UUID, b_email: str) -> None:
        self.a, self.a_email, self.b, self.b_email = a, a_email, b, b_email


@pytest.fixture
async def two(http: httpx.AsyncClient) -> Two:
    a_email, b_email = new_email(), new_email()
    return Two(await register(http, a_email, name="A"), a_email, await register(http, b_email, name="B"), b_email)


@pytest.fixture
def pool(auth: Served) -> asyncpg.Pool:
    """The service's own pool: connected as nexanest_auth."""
    pool: asyncpg.Pool = auth.resource("auth-db")
    return pool


async def test_the_pool_is_the_service_role(pool: asyncpg.Pool) -> None:
    assert await pool.fetchval("SELECT current_user") == "nexanest_auth"
    assert await pool.fetchval("SELECT current_database()") == "auth_test"


async def test_through_the_api_each_user_sees_and_changes_only_their_own_row(http: httpx.AsyncClient, two: Two) -> None:
    token_a = await login(http, two.a_email)
    me = await http.get("/auth/me", headers=bearer(token_a))
    assert (me.json()["user_id"], me.json()["display_name"]) == (str(two.a), "A")
    new_password = "A's brand new passphrase"
    changed = await http.post(
        "/auth/password", json={"current_password": PASSWORD, "new_password": new_password}, headers=bearer(token_a)
    )
    assert changed.status_code == 200
    # B's password is untouched, A's is not B's.
    assert await login(http, two.b_email)
    assert (await http.post("/auth/login", json={"email": two.b_email, "password": new_password})).status_code == 401


async def test_without_an_acting_user_the_service_sees_and_changes_nothing(pool: asyncpg.Pool, two: Two) -> None:
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT current_setting('app.user_id', true)") in (None, "")
        assert await conn.fetchval("SELECT count(*) FROM users") == 0
        assert await conn.fetch("SELECT password_hash FROM users WHERE user_id = $1", two.a) == []
        assert await conn.execute("UPDATE users SET password_hash = 'x' WHERE user_id = ANY($1)", [two.a, two.b]) == (
            "UPDATE 0"
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await conn.execute(
                "INSERT INTO users (user_id, email, password_hash) VALUES ($1, $2, 'x')", uuid.uuid4(), new_email()
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM users WHERE user_id = $1", two.a)


async def test_acting_as_one_user_the_service_cannot_reach_the_other(pool: asyncpg.Pool, two: Two) -> None:
    async with acting_as(pool, two.a) as conn:
        assert [r["user_id"] for r in await conn.fetch("SELECT user_id FROM users")] == [two.a]
        assert await conn.fetchval("SELECT password_hash FROM users WHERE user_id = $1", two.b) is None
        assert await conn.fetchval("SELECT count(*) FROM users WHERE email = $1", two.b_email) == 0
        assert await conn.execute("UPDATE users SET password_hash = 'x' WHERE user_id = $1", two.b) == "UPDATE 0"
        # A row written for the other user, or moved to them, fails the WITH CHECK.
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await conn.execute(
                "INSERT INTO users (user_id, email, password_hash) VALUES ($1, $2, 'x')", two.b, new_email()
            )
    async with acting_as(pool, two.a) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE users SET user_id = $2 WHERE user_id = $1", two.a, uuid.uuid4())
    async with acting_as(pool, two.b) as conn:
        assert await conn.fetchval("SELECT password_hash FROM users WHERE user_id = $1", two.b) != "x"


async def test_the_acting_user_ends_with_the_transaction(pool: asyncpg.Pool, two: Two) -> None:
    async with acting_as(pool, two.a) as conn:
        assert await conn.fetchval("SELECT count(*) FROM users") == 1
    # The pool has the same connections back; none carries the user any more.
    for _ in range(pool.get_max_size()):
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_setting('app.user_id', true)") in (None, "")
            assert await conn.fetchval("SELECT count(*) FROM users") == 0


async def test_the_service_cannot_choose_a_role_nor_touch_profiles(pool: asyncpg.Pool, two: Two) -> None:
    async with acting_as(pool, two.a) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE users SET role = 'admin' WHERE user_id = $1", two.a)
    someone = uuid.uuid4()
    async with acting_as(pool, someone) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO users (user_id, email, password_hash, role) VALUES ($1, $2, 'x', 'admin')",
                someone,
                new_email(),
            )
    async with acting_as(pool, two.a) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM user_profiles")


async def test_the_login_lookup_answers_one_exact_email_and_four_fields(pool: asyncpg.Pool, two: Two) -> None:
    rows = await pool.fetch("SELECT * FROM auth_login_lookup($1)", two.a_email.upper())
    assert [tuple(r.keys()) for r in rows] == [("user_id", "password_hash", "role", "is_active")]
    assert rows[0]["user_id"] == two.a
    assert rows[0]["password_hash"].startswith("$argon2id$")
    for pattern in ("%", "%@example.com", two.a_email[:-1] + "_", "", f"{two.a_email}' OR true --"):
        assert await pool.fetch("SELECT * FROM auth_login_lookup($1)", pattern) == []
    assert await pool.fetch("SELECT * FROM auth_login_lookup(NULL)") == []
    async with pool.acquire() as conn, conn.transaction():
        await conn.fetch("SELECT * FROM auth_login_lookup($1)", two.a_email)
        # What the function opened for the owner is closed again, and opens nothing for the service.
        assert await conn.fetchval("SELECT current_setting('app.login_email', true)") == ""
        await conn.execute("SELECT set_config('app.login_email', $1, true)", two.a_email)
        assert await conn.fetchval("SELECT count(*) FROM users") == 0


async def test_the_lookup_function_is_a_pinned_definer_only_the_service_may_call(pool: asyncpg.Pool) -> None:
    function = await pool.fetchrow(
        "SELECT p.prosecdef, p.proconfig, pg_get_userbyid(p.proowner) AS owner,"
        "       pg_get_userbyid(c.relowner) AS table_owner,"
        "       has_function_privilege('nexanest_auth', p.oid, 'EXECUTE') AS service_may,"
        "       EXISTS (SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0) AS public_may"
        "  FROM pg_proc p, pg_class c WHERE p.proname = 'auth_login_lookup' AND c.relname = 'users'"
    )
    assert function is not None
    assert function["prosecdef"]
    assert any(setting.startswith("search_path=") for setting in function["proconfig"])
    assert function["owner"] == function["table_owner"] != "nexanest_auth"
    assert function["service_may"]
    assert not function["public_may"]


async def test_every_table_forces_rls_with_using_and_with_check(pool: asyncpg.Pool) -> None:
    tables = await pool.fetch(
        "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
        "WHERE relname IN ('users', 'user_profiles') ORDER BY relname"
    )
    assert [tuple(t.values()) for t in tables] == [("user_profiles", True, True), ("users", True, True)]
    policies = await pool.fetch(
        "SELECT tablename, policyname, cmd, qual, with_check FROM pg_policies "
        "WHERE tablename IN ('users', 'user_profiles')"
    )
    for policy in policies:
        assert policy["qual"] is not None, policy
        if policy["cmd"] in ("ALL", "INSERT", "UPDATE"):
            assert policy["with_check"] is not None, policy
    assert {(p["tablename"], p["cmd"]) for p in policies} >= {("users", "ALL"), ("user_profiles", "ALL")}


async def test_the_service_role_owns_nothing(pool: asyncpg.Pool) -> None:
    owned = await pool.fetch(
        "SELECT 'relation' AS kind, relname::text AS name FROM pg_class WHERE relowner = to_regrole(current_user) "
        "UNION ALL SELECT 'schema', nspname::text FROM pg_namespace WHERE nspowner = to_regrole(current_user) "
        "UNION ALL SELECT 'function', proname::text FROM pg_proc WHERE proowner = to_regrole(current_user) "
        "UNION ALL SELECT 'type', typname::text FROM pg_type WHERE typowner = to_regrole(current_user)"
    )
    assert owned == []
