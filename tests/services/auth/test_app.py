"""The auth service through its HTTP API (integration: the suite's auth database
as ``nexanest_auth``, its sessions Redis database)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable

import argon2
import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from nexanest.pipeline.settings import Settings
from nexanest.services.auth.app import build_app
from nexanest.services.auth.passwords import MEMORY_COST_KIB, TIME_COST, Passwords
from nexanest.services.problems import MEDIA_TYPE
from nexanest.services.rls import acting_as
from nexanest.services.sessions import session_store
from tests.services.auth.conftest import (
    PASSWORD,
    auth_settings,
    bearer,
    login,
    new_address,
    new_email,
    register,
)
from tests.services.conftest import Served

pytestmark = pytest.mark.integration


async def test_register_log_in_and_ask_who_i_am(http: httpx.AsyncClient) -> None:
    email = new_email()
    response = await http.post(
        "/auth/register", json={"email": email, "password": PASSWORD, "display_name": "Ada Lovelace"}
    )
    assert response.status_code == 201
    user = response.json()
    assert set(user) == {"user_id", "email", "display_name", "role", "created_at"}
    assert (user["email"], user["display_name"], user["role"]) == (email, "Ada Lovelace", "user")
    assert "password" not in response.text
    assert "argon2" not in response.text

    answer = await http.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 200
    token = answer.json()
    assert set(token) == {"access_token", "token_type", "expires_in"}
    assert token["token_type"] == "bearer"
    assert 0 < token["expires_in"] <= 30 * 60  # the default idle time
    assert answer.headers["cache-control"] == "no-store"

    me = await http.get("/auth/me", headers=bearer(token["access_token"]))
    assert me.status_code == 200
    assert me.json() == user


async def test_an_email_is_taken_whatever_its_case(http: httpx.AsyncClient) -> None:
    email = new_email()
    await register(http, email)
    again = await http.post(
        "/auth/register", json={"email": email.upper(), "password": PASSWORD + "!", "display_name": "Eve"}
    )
    assert again.status_code == 409
    assert again.headers["content-type"] == MEDIA_TYPE
    assert again.json()["detail"] == "an account with this email exists already"
    # ... and the login is just as case-insensitive.
    assert await login(http, email.upper())


async def test_a_wrong_password_and_an_unknown_email_get_the_same_401(http: httpx.AsyncClient) -> None:
    email = new_email()
    await register(http, email)
    wrong = await http.post("/auth/login", json={"email": email, "password": "not the password at all"})
    unknown = await http.post("/auth/login", json={"email": new_email(), "password": PASSWORD})
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert wrong.json()["detail"] == unknown.json()["detail"] == "the email or the password is wrong"


async def test_no_token_or_a_bad_one_is_401(http: httpx.AsyncClient) -> None:
    assert (await http.get("/auth/me")).status_code == 401
    assert (await http.get("/auth/me", headers=bearer("x" * 43))).status_code == 401
    assert (await http.post("/auth/logout")).status_code == 401
    refused = await http.post("/auth/password", json={"current_password": PASSWORD, "new_password": PASSWORD + "?"})
    assert refused.status_code == 401


async def test_repeated_failures_answer_429_with_retry_after_per_account(
    migrated: Settings, serve: Callable[[FastAPI], Awaitable[Served]]
) -> None:
    served = await serve(build_app(auth_settings(migrated, login_failures_per_account=3)))
    http = served.client(new_address())
    email = new_email()
    await register(http, email)
    wrong = {"email": email, "password": "wrong wrong wrong wrong"}
    assert [(await http.post("/auth/login", json=wrong)).status_code for _ in range(3)] == [401, 401, 401]
    throttled = await http.post("/auth/login", json=wrong)
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["retry-after"]) <= migrated.services.login_failure_window_s
    assert throttled.headers["content-type"] == MEDIA_TYPE
    # The right password does not get through either, and from another address neither: it is the account.
    assert (await http.post("/auth/login", json={"email": email, "password": PASSWORD})).status_code == 429
    elsewhere = served.client(new_address())
    assert (await elsewhere.post("/auth/login", json={"email": email, "password": PASSWORD})).status_code == 429


async def test_a_success_clears_the_account_count(
    migrated: Settings, serve: Callable[[FastAPI], Awaitable[Served]]
) -> None:
    served = await serve(build_app(auth_settings(migrated, login_failures_per_account=3)))
    http = served.client(new_address())
    email = new_email()
    await register(http, email)
    wrong = {"email": email, "password": "wrong wrong wrong wrong"}
    for _ in range(2):
        assert (await http.post("/auth/login", json=wrong)).status_code == 401
    await login(http, email)
    assert [(await http.post("/auth/login", json=wrong)).status_code for _ in range(4)] == [401, 401, 401, 429]


async def test_repeated_failures_from_one_address_answer_429_across_accounts(
    migrated: Settings, serve: Callable[[FastAPI], Awaitable[Served]]
) -> None:
    served = await serve(build_app(auth_settings(migrated, login_failures_per_address=4)))
    http = served.client(new_address())
    statuses = [
        (await http.post("/auth/login", json={"email": new_email(), "password": PASSWORD})).status_code
        for _ in range(5)
    ]
    assert statuses == [401, 401, 401, 401, 429]
    # Another address is not held back.
    other = served.client(new_address())
    assert (await other.post("/auth/login", json={"email": new_email(), "password": PASSWORD})).status_code == 401


async def test_a_burst_of_parallel_guesses_gets_no_more_tries_than_the_limit(
    migrated: Settings, serve: Callable[[FastAPI], Awaitable[Served]]
) -> None:
    served = await serve(build_app(auth_settings(migrated, login_failures_per_account=3)))
    email = new_email()
    await register(served.client(new_address()), email)
    wrong = {"email": email, "password": "wrong wrong wrong wrong"}
    responses = await asyncio.gather(*(served.client(new_address()).post("/auth/login", json=wrong) for _ in range(10)))
    assert sorted(r.status_code for r in responses) == [401] * 3 + [429] * 7


async def test_logout_ends_that_session_at_once_and_no_other(http: httpx.AsyncClient) -> None:
    email = new_email()
    await register(http, email)
    first, second = await login(http, email), await login(http, email)
    assert (await http.post("/auth/logout", headers=bearer(first))).status_code == 204
    assert (await http.get("/auth/me", headers=bearer(first))).status_code == 401
    assert (await http.post("/auth/logout", headers=bearer(first))).status_code == 401
    assert (await http.get("/auth/me", headers=bearer(second))).status_code == 200


async def test_a_password_change_ends_every_session_and_answers_a_fresh_token(http: httpx.AsyncClient) -> None:
    email = new_email()
    await register(http, email)
    used, other = await login(http, email), await login(http, email)
    new_password = "a different and longer passphrase"
    changed = await http.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": new_password},
        headers=bearer(used),
    )
    assert changed.status_code == 200
    assert changed.headers["cache-control"] == "no-store"
    fresh = changed.json()["access_token"]
    for old in (used, other):
        assert (await http.get("/auth/me", headers=bearer(old))).status_code == 401
    assert (await http.get("/auth/me", headers=bearer(fresh))).status_code == 200
    assert (await http.post("/auth/login", json={"email": email, "password": PASSWORD})).status_code == 401
    assert await login(http, email, new_password)


async def test_a_password_change_needs_the_current_password(http: httpx.AsyncClient) -> None:
    email = new_email()
    await register(http, email)
    token = await login(http, email)
    refused = await http.post(
        "/auth/password",
        json={"current_password": "not the current one!", "new_password": "a different and longer passphrase"},
        headers=bearer(token),
    )
    assert refused.status_code == 403
    assert (await http.get("/auth/me", headers=bearer(token))).status_code == 200  # nothing ended
    assert await login(http, email)  # nothing changed


async def test_invalid_input_is_422_and_never_echoes_the_password(http: httpx.AsyncClient) -> None:
    short = "short pw"
    bodies = [
        {"email": new_email(), "password": short, "display_name": "Ada"},
        {"email": "not an email", "password": PASSWORD, "display_name": "Ada"},
        {"email": new_email(), "password": PASSWORD, "display_name": "Ada", "role": "admin"},
        {"email": new_email(), "password": PASSWORD, "display_name": "A\u0000da"},
        {"email": new_email(), "password": PASSWORD, "display_name": "Ada\u009b"},
        {"email": new_email(), "password": PASSWORD, "display_name": ""},
        {"email": "a@localhost", "password": PASSWORD, "display_name": "Ada"},
        {"email": "a@example.com\n", "password": PASSWORD, "display_name": "Ada"},
        {"email": "ü@example.com", "password": PASSWORD, "display_name": "Ada"},
        {"email": new_email(), "password": "x" * 257, "display_name": "Ada"},
        {"email": new_email(), "password": PASSWORD},
    ]
    for body in bodies:
        response = await http.post("/auth/register", json=body)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == MEDIA_TYPE
        assert short not in response.text
        assert PASSWORD not in response.text
    # A lone surrogate (valid JSON, not encodable text) is refused too, not a 500.
    for field in (b"password", b"display_name"):
        raw = b'{"email": "a@example.com", "password": "' + b"x" * 16 + b'", "display_name": "Ada"}'
        value = b"x" * 16 if field == b"password" else b"Ada"
        surrogate = raw.replace(b'"' + field + b'": "' + value, b'"' + field + b'": "' + b"\\ud800" * 16)
        assert b"ud800" in surrogate
        response = await http.post("/auth/register", content=surrogate, headers={"content-type": "application/json"})
        assert response.status_code == 422
    # A body that is not even UTF-8 is a 400 (FastAPI's), declared too; broken JSON a 422.
    garbage = await http.post("/auth/login", content=b"H\xe9", headers={"content-type": "application/json"})
    assert (garbage.status_code, garbage.headers["content-type"]) == (400, MEDIA_TYPE)
    broken = await http.post("/auth/login", content=b"{", headers={"content-type": "application/json"})
    assert broken.status_code == 422


async def test_a_hash_made_with_older_parameters_is_replaced_at_login(
    migrated: Settings, serve: Callable[[FastAPI], Awaitable[Served]]
) -> None:
    cheap = await serve(build_app(migrated, passwords=Passwords(time_cost=1, memory_cost_kib=8 * 1024)))
    email = new_email()
    user_id = await register(cheap.client(new_address()), email)
    current = await serve(build_app(migrated))
    await login(current.client(new_address()), email)
    async with acting_as(current.resource("auth-db"), user_id) as conn:
        stored = await conn.fetchval("SELECT password_hash FROM users WHERE user_id = $1", user_id)
    parameters = argon2.extract_parameters(stored)
    assert (parameters.type, parameters.time_cost, parameters.memory_cost) == (
        argon2.Type.ID,
        TIME_COST,
        MEMORY_COST_KIB,
    )
    assert await login(current.client(new_address()), email)


async def as_owner_acting_for(settings: Settings, user_id: uuid.UUID, sql: str) -> str:
    """Run ``sql`` (one parameter: the user id) as the owner role, acting as the
    user: the owner is bound by the policies too (FORCE). What an operator does."""
    conn = await asyncpg.connect(settings.postgres.auth_dsn.get_secret_value())
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.user_id', $1, true)", str(user_id))
            status: str = await conn.execute(sql, user_id)
            return status
    finally:
        await conn.close()


async def test_an_admin_logs_in_as_admin(http: httpx.AsyncClient, migrated: Settings) -> None:
    email = new_email()
    user_id = await register(http, email)
    assert await as_owner_acting_for(migrated, user_id, "UPDATE users SET role = 'admin' WHERE user_id = $1") == (
        "UPDATE 1"
    )
    token = await login(http, email)
    assert (await http.get("/auth/me", headers=bearer(token))).json()["role"] == "admin"
    sessions, resource = session_store(migrated)
    async with resource.open():
        assert (await sessions.verify(token)).role == "admin"


async def test_a_disabled_account_is_403_once_the_password_is_right(
    http: httpx.AsyncClient, migrated: Settings
) -> None:
    email = new_email()
    user_id = await register(http, email)
    # Disabling is no route yet: the operator does it.
    assert await as_owner_acting_for(migrated, user_id, "UPDATE users SET is_active = false WHERE user_id = $1") == (
        "UPDATE 1"
    )
    assert (await http.post("/auth/login", json={"email": email, "password": "wrong wrong wrong"})).status_code == 401
    disabled = await http.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert disabled.status_code == 403


async def test_created_at_is_an_aware_timestamp(http: httpx.AsyncClient) -> None:
    email = new_email()
    await register(http, email)
    me = await http.get("/auth/me", headers=bearer(await login(http, email)))
    created = dt.datetime.fromisoformat(me.json()["created_at"])
    assert created.tzinfo is not None
    assert abs((dt.datetime.now(dt.UTC) - created).total_seconds()) < 300


async def test_a_token_unused_for_the_idle_time_stops_working(
    migrated: Settings, serve: Callable[[FastAPI], Awaitable[Served]]
) -> None:
    now = [1_800_000_000.0]
    served = await serve(build_app(migrated, clock=lambda: now[0]))
    http = served.client(new_address())
    email = new_email()
    await register(http, email)
    token = await login(http, email)
    idle_s = migrated.services.session_idle_s
    now[0] += idle_s - 1
    assert (await http.get("/auth/me", headers=bearer(token))).status_code == 200  # used: idle_s from now again
    now[0] += idle_s - 1
    assert (await http.get("/auth/me", headers=bearer(token))).status_code == 200
    now[0] += idle_s
    expired = await http.get("/auth/me", headers=bearer(token))
    assert expired.status_code == 401
    assert expired.json()["detail"] == "the access token expired"
