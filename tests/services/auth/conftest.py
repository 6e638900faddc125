"""The auth service running in process against the suite's auth database and
sessions Redis database, as its own login role."""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable

import httpx
import pytest
from fastapi import FastAPI

from nexanest.pipeline.settings import Settings
from nexanest.services.auth.app import build_app
from tests.services.conftest import Served

PASSWORD = "correct horse battery staple"


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:16]}@example.com"


def new_address() -> str:
    """A client address of the test's own, so that the per-address throttle
    never counts other tests' failures (nothing is sent to it: it is what the
    app is told the client's address is)."""
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"


def auth_settings(settings: Settings, **services: object) -> Settings:
    return settings.model_copy(update={"services": settings.services.model_copy(update=services)})


@pytest.fixture
async def auth(migrated: Settings, serve: Callable[[FastAPI], Awaitable[Served]]) -> Served:
    return await serve(build_app(migrated))


@pytest.fixture
def http(auth: Served) -> httpx.AsyncClient:
    """A client of the auth service from an address of the test's own."""
    return auth.client(new_address())


async def register(http: httpx.AsyncClient, email: str, password: str = PASSWORD, name: str = "Ada") -> uuid.UUID:
    response = await http.post("/auth/register", json={"email": email, "password": password, "display_name": name})
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["user_id"])


async def login(http: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    response = await http.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
