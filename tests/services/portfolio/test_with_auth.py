"""The portfolio service behind the auth service's sessions (integration): two
users register and log in, and neither reaches the other's portfolios; a token
stops working in the portfolio service the moment its session ends."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from fastapi import FastAPI

from nexanest.pipeline.settings import Settings
from nexanest.services.auth.app import build_app as build_auth
from nexanest.services.portfolio.app import build_app as build_portfolio
from tests.services.auth.conftest import bearer, login, new_address, new_email, register
from tests.services.conftest import Served
from tests.services.portfolio.conftest import service_settings

pytestmark = pytest.mark.integration


async def test_two_users_from_the_auth_service_cannot_reach_each_others_portfolios(
    isolated: Settings,
    quotes_redis: redis.Redis,
    serve: Callable[[FastAPI], Awaitable[Served]],
    users: list[uuid.UUID],
) -> None:
    auth = (await serve(build_auth(isolated))).client(new_address())
    portfolio = (await serve(build_portfolio(service_settings(isolated)))).http  # sessions verify the tokens
    emails = [new_email(), new_email()]
    ids = [await register(auth, email) for email in emails]
    users += ids  # their portfolios are cleaned up with the fixture's
    alice, bob = [bearer(await login(auth, email)) for email in emails]

    created = await portfolio.post("/portfolios", json={"name": "mine"}, headers=alice)
    assert created.status_code == 201
    pid = created.json()["id"]
    assert (
        await portfolio.post(f"/portfolios/{pid}/transactions", json={"kind": "deposit", "amount": "50"}, headers=alice)
    ).status_code == 201
    buy = {"kind": "buy", "symbol": "AAA", "quantity": "1", "price": "20"}
    assert (await portfolio.post(f"/portfolios/{pid}/transactions", json=buy, headers=alice)).status_code == 201

    attempts: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "", None),
        ("GET", "/holdings", None),
        ("GET", "/transactions", None),
        ("GET", "/valuation", None),
        ("GET", "/history", None),
        ("POST", "/transactions", {"kind": "withdraw", "amount": "30"}),
        ("DELETE", "", None),
    ]
    for method, path, body in attempts:
        answer = await portfolio.request(method, f"/portfolios/{pid}{path}", json=body, headers=bob)
        assert answer.status_code == 404, (method, path)
    assert (await portfolio.get("/portfolios", headers=bob)).json() == []
    mine = (await portfolio.get(f"/portfolios/{pid}", headers=alice)).json()
    assert (mine["id"], mine["cash"]) == (pid, "30")
    assert (await portfolio.get(f"/portfolios/{pid}/holdings", headers=alice)).json()[0]["quantity"] == "1"

    # Logging out ends the session everywhere at once.
    assert (await auth.post("/auth/logout", headers=alice)).status_code == 204
    after: httpx.Response = await portfolio.get(f"/portfolios/{pid}", headers=alice)
    assert after.status_code == 401
