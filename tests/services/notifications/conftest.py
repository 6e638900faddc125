"""Fixtures of the notifications service's tests: the app on the suite's own
databases (``notifications_test``) and Redis databases (10-14), with this test's
own Redis key prefix, quote keys and channels; users whose rows are removed
afterwards; a local webhook receiver (uvicorn on loopback) that records what it
is sent, and the receiver's check of a Standard Webhooks signature, written from
the specification; and ``nexanest`` child processes (the worker, the consumer)
with this test's settings."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as redis
from pydantic import SecretStr

from nexanest.pipeline.settings import Settings, namespace_environment
from nexanest.services.app import Resource
from nexanest.services.notifications.app import build_app
from nexanest.services.tokens import Identity, InvalidToken, Role
from tests.services.served import loopback_listener, uvicorn_on

REPO = Path(__file__).resolve().parents[3]


class Verifier:
    """Tokens ``<role>:<user id>``: any user, either role, for the service's own tests."""

    async def verify(self, token: str) -> Identity:
        role, _, user = token.partition(":")
        if role not in ("user", "admin"):
            raise InvalidToken("malformed")
        try:
            user_id = uuid.UUID(user)
        except ValueError:
            raise InvalidToken("malformed") from None
        actual: Role = "admin" if role == "admin" else "user"
        return Identity(user_id, 2_000_000_000, actual)


def auth(user: uuid.UUID, role: str = "user") -> dict[str, str]:
    return {"Authorization": f"Bearer {role}:{user}"}


def notification_settings(isolated: Settings, test_id: str, **notifications: object) -> Settings:
    """``isolated`` with this test's notification keys, a fresh sealing key, quick
    heartbeats and retries, and neither evaluator nor worker in the app unless asked."""
    update: dict[str, object] = {
        "key_prefix": f"test.{test_id}:notifications:",
        "secret_key": SecretStr(secrets.token_hex(32)),
        "evaluator_in_service": False,
        "worker_in_service": False,
        "worker_heartbeat_s": 0.5,
        "retry_initial_s": 0.2,
        "retry_max_s": 1.0,
        "index_refresh_s": 5.0,
        "ops_event_types": [],
        "webhook_allow_private": True,  # the receiver is on loopback
        **notifications,
    }
    return isolated.model_copy(update={"notifications": isolated.notifications.model_copy(update=update)})


@dataclass
class Service:
    settings: Settings
    http: httpx.AsyncClient
    resources: dict[str, Any]

    @property
    def pool(self) -> asyncpg.Pool:
        """The service's own pool (role nexanest_notifications)."""
        pool: asyncpg.Pool = self.resources["notifications-db"]
        return pool

    @property
    def queue_redis(self) -> redis.Redis:
        client: redis.Redis = self.resources["notifications-redis"]
        return client

    async def quote(self, symbol: str, price: str) -> None:
        quotes: redis.Redis = self.resources["quotes-redis"]
        await quotes.hset(self.settings.redis.quote_key_prefix + symbol, mapping={"price": price, "ts_ns": "1"})

    async def alert(self, user: uuid.UUID, **body: Any) -> dict[str, Any]:
        response = await self.http.post("/alerts", json=body, headers=auth(user))
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


@asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[Service]:
    app = build_app(settings, verifier=Verifier())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notifications.test") as http,
    ):
        opened: dict[Resource[Any], Any] = app.state.resources
        yield Service(settings, http, {r.name: v for r, v in opened.items()})


@pytest.fixture
def settings(isolated: Settings, test_id: str) -> Settings:
    return notification_settings(isolated, test_id)


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[Service]:
    async with running_service(settings) as running:
        yield running


@pytest.fixture
async def users(migrated: Settings, settings: Settings) -> AsyncIterator[list[uuid.UUID]]:
    """Two fresh users (append more). Their rows go afterwards (as the owner role),
    and this test's Redis keys of the notifications database."""
    made = [uuid.uuid4(), uuid.uuid4()]
    yield made
    conn = await asyncpg.connect(migrated.postgres.notifications_dsn.get_secret_value())
    try:
        for table in ("deliveries", "notifications", "webhook_endpoints", "price_alerts", "ops_subscriptions"):
            await conn.execute(f"DELETE FROM {table} WHERE user_id = ANY($1)", made)
    finally:
        await conn.close()
    client = redis.Redis.from_url(settings.redis.url.get_secret_value(), db=settings.redis.db_notifications)
    try:
        keys = [k async for k in client.scan_iter(match=settings.notifications.key_prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@dataclass
class AuthAccounts:
    """Accounts of this test in the auth test database, written as its owner (the
    role is the operator's to set there): what the notifications service asks when
    it checks that a subscriber to operational alerts is still an admin."""

    owner: asyncpg.Connection
    made: list[uuid.UUID] = field(default_factory=list)

    async def as_user(self, user: uuid.UUID, statement: str, *args: object) -> None:
        async with self.owner.transaction():  # FORCEd row-level security binds the owner too
            await self.owner.execute("SELECT set_config('app.user_id', $1, true)", str(user))
            await self.owner.execute(statement, user, *args)

    async def add(self, user: uuid.UUID, role: str, *, active: bool = True) -> None:
        self.made.append(user)
        await self.as_user(
            user,
            "INSERT INTO users (user_id, email, password_hash, role, is_active) VALUES ($1, $2, 'x', $3, $4)",
            f"{user.hex}@notifications.test",
            role,
            active,
        )

    async def set_role(self, user: uuid.UUID, role: str) -> None:
        await self.as_user(user, "UPDATE users SET role = $2 WHERE user_id = $1", role)


@pytest.fixture
async def auth_accounts(migrated: Settings) -> AsyncIterator[AuthAccounts]:
    owner = await asyncpg.connect(migrated.postgres.auth_dsn.get_secret_value())
    accounts = AuthAccounts(owner)
    try:
        yield accounts
    finally:
        for user in accounts.made:
            await accounts.as_user(user, "DELETE FROM users WHERE user_id = $1")
        await owner.close()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    #: ``time.perf_counter()`` when the request's body had arrived.
    at: float = field(default_factory=time.perf_counter)


@dataclass
class Receiver:
    """A webhook receiver on loopback: records every request; answers ``status``
    (200), or, while ``hold`` is set, holds every request from the
    ``hold_from``-th (0: all) on until ``hold`` is set."""

    url: str
    received: list[Received] = field(default_factory=list)
    status: int = 200
    hold: asyncio.Event | None = None
    hold_from: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.received.append(Received(headers, body))
        self.arrived.set()
        if self.hold is not None and len(self.received) > self.hold_from:
            await self.hold.wait()
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    listener = loopback_listener()
    made = Receiver(url=f"http://127.0.0.1:{listener.getsockname()[1]}/hook")
    async with uvicorn_on(listener, made.app, lifespan="off", interface="asgi3"):
        try:
            yield made
        finally:
            if made.hold is not None:  # held requests would keep the server from stopping
                made.hold.set()


def verify_standard_webhook(received: Received, secret: str, *, tolerance_s: int = 300) -> str:
    """The receiver's check, from the Standard Webhooks specification: HMAC-SHA256
    over ``id.timestamp.body`` keyed with the base64-decoded part of the
    ``whsec_`` secret, base64, compared in constant time with each ``v1,``
    signature offered; a timestamp within the tolerance. Returns the id."""
    msg_id = received.headers["webhook-id"]
    timestamp = received.headers["webhook-timestamp"]
    assert abs(time.time() - int(timestamp)) <= tolerance_s, "stale timestamp"
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(
        hmac.new(key, msg_id.encode() + b"." + timestamp.encode() + b"." + received.body, hashlib.sha256).digest()
    ).decode()
    offered = [s.split(",", 1)[1] for s in received.headers["webhook-signature"].split() if s.startswith("v1,")]
    assert any(hmac.compare_digest(expected, s) for s in offered), "bad signature"
    return msg_id


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment of a ``nexanest`` child process with ``settings``' namespace
    and notification keys: it works on this test's queue, and no other."""
    n = settings.notifications
    assert n.secret_key is not None
    return {
        **os.environ,
        **namespace_environment(settings),
        "NEXANEST_LOG__JSON": "true",
        "NEXANEST_NOTIFICATIONS__KEY_PREFIX": n.key_prefix,
        "NEXANEST_NOTIFICATIONS__SECRET_KEY": n.secret_key.get_secret_value(),
        "NEXANEST_NOTIFICATIONS__WORKER_HEARTBEAT_S": str(n.worker_heartbeat_s),
        "NEXANEST_NOTIFICATIONS__RETRY_INITIAL_S": str(n.retry_initial_s),
        "NEXANEST_NOTIFICATIONS__RETRY_MAX_S": str(n.retry_max_s),
        "NEXANEST_NOTIFICATIONS__OPS_EVENT_TYPES": "[]",
        "NEXANEST_NOTIFICATIONS__WEBHOOK_ALLOW_PRIVATE": "true",
    }


async def start_cli(args: list[str], env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    """``nexanest ARGS`` as a child process (a process of its own, so that SIGKILL
    is a real crash), its output appended to ``log``."""
    with log.open("ab") as sink:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nexanest.cli.main", *args, cwd=REPO, env=env, stdout=sink, stderr=sink
        )
