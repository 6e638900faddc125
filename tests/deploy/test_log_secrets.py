"""No password or token in any log line (integration): the pipeline and the five
services, and the notifications delivery worker, run as users run them, with JSON
logs at debug level, through their normal path and their error paths (a database
that refuses the password, a forged and a revoked token, a failed login, a webhook
endpoint whose receiver answers 500 until the delivery is given up); then every
line of every log is scanned for every secret that was in play: the passwords of
``.env`` and of the users, the access tokens, the token secret, the sealing key
of the webhook secrets, an endpoint's signing secret and the tokens in its URL."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as redis

from nexanest.pipeline.settings import Settings, namespace_environment
from tests.deploy.test_secrets import env_secrets
from tests.processes import end
from tests.services.served import served

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
#: A password no server knows, given to a consumer whose database then refuses it.
CANARY = f"canary-{uuid.uuid4().hex}"


def nexanest(settings: Settings, log: Path, *args: str, **extra: str) -> int:
    env = {
        **os.environ,
        **namespace_environment(settings),
        "NEXANEST_LOG__JSON": "true",
        "NEXANEST_LOG__LEVEL": "debug",
        **extra,
    }
    with log.open("ab") as sink:
        done = subprocess.run(
            [sys.executable, "-m", "nexanest.cli.main", *args],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=180,
            check=False,
        )
    return done.returncode


def exercise_the_services(auth: str, portfolio: str, market: str, password: str) -> list[str]:
    """Register, log in (once wrongly), use every service, change the password,
    use a revoked and a forged token; returns the tokens that were issued."""
    email = f"logs-{uuid.uuid4().hex[:10]}@example.com"
    with httpx.Client(timeout=30) as http:
        assert (
            http.post(
                f"{auth}/auth/register", json={"email": email, "password": password, "display_name": "L"}
            ).status_code
            == 201
        )
        assert http.post(f"{auth}/auth/login", json={"email": email, "password": password + "x"}).status_code == 401
        token = http.post(f"{auth}/auth/login", json={"email": email, "password": password}).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        created = http.post(f"{portfolio}/portfolios", json={"name": "logs"}, headers=bearer)
        assert created.status_code == 201
        assert http.get(f"{portfolio}/portfolios/{created.json()['id']}/valuation", headers=bearer).status_code == 200
        assert http.get(f"{market}/quotes/SYN0001", headers=bearer).status_code in (200, 404)
        changed = http.post(
            f"{auth}/auth/password",
            json={"current_password": password, "new_password": password + "-new"},
            headers=bearer,
        )
        assert changed.status_code == 200
        fresh = changed.json()["access_token"]
        assert http.get(f"{portfolio}/portfolios", headers=bearer).status_code == 401  # revoked
        assert (
            http.get(
                f"{market}/quotes/SYN0001", headers={"Authorization": "Bearer forged-token-value-1234567890"}
            ).status_code
            == 401
        )
        assert http.post(f"{auth}/auth/logout", headers={"Authorization": f"Bearer {fresh}"}).status_code == 204
    return [token, fresh]


@contextmanager
def failing_receiver() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A webhook receiver on loopback that answers every POST with 500: its base URL,
    and the headers of each request it got (appended as they arrive)."""
    received: list[dict[str, str]] = []

    class Refuse(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            received.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(500)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the test's output is not a log under scan

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextmanager
def notifications_worker(settings: Settings, log: Path, env: dict[str, str]) -> Iterator[None]:
    """``nexanest serve notifications-worker`` (no HTTP) with JSON logs at debug level."""
    full = {**os.environ, **namespace_environment(settings), **LOGGING, **env}
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nexanest.cli.main", "serve", "notifications-worker"],
            cwd=REPO,
            env=full,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        yield
        assert proc.poll() is None, f"the notifications worker exited:\n{log.read_text()[-3000:]}"
    finally:
        end(proc, signal.SIGTERM, 30)


#: JSON logs at debug level, for every process of the test.
LOGGING = {"NEXANEST_LOG__JSON": "true", "NEXANEST_LOG__LEVEL": "debug"}


def new_user(http: httpx.Client, auth: str) -> tuple[str, str]:
    """A user registered for the occasion: (password, access token)."""
    email = f"logs-{uuid.uuid4().hex[:10]}@example.com"
    password = f"user-pw-{uuid.uuid4().hex}"
    registered = http.post(f"{auth}/auth/register", json={"email": email, "password": password, "display_name": "L"})
    assert registered.status_code == 201, registered.text
    login = http.post(f"{auth}/auth/login", json={"email": email, "password": password})
    assert login.status_code == 200, login.text
    return password, str(login.json()["access_token"])


def wait_for(what: str, fact: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := fact()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(0.2)
    return found


async def forget_notifications(settings: Settings, key_prefix: str, user_ids: list[uuid.UUID]) -> None:
    """The test's rows in the notifications database (as its owner role) and its
    keys in the notifications Redis database."""
    conn = await asyncpg.connect(settings.postgres.notifications_dsn.get_secret_value())
    try:
        for table in ("deliveries", "notifications", "webhook_endpoints", "price_alerts"):
            await conn.execute(f"DELETE FROM {table} WHERE user_id = ANY($1)", user_ids)
    finally:
        await conn.close()
    client = redis.Redis.from_url(settings.redis.url.get_secret_value(), db=settings.redis.db_notifications)
    try:
        keys = [k async for k in client.scan_iter(match=key_prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def test_no_secret_reaches_a_log(isolated: Settings, test_id: str, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    # The pipeline: a consumer whose database refuses its password (a short run
    # follows below, while the services run).
    dsn = urlsplit(isolated.timescale.dsn.get_secret_value())
    canary_dsn = urlunsplit(dsn._replace(netloc=f"{dsn.username}:{CANARY}@{dsn.hostname}:{dsn.port}"))
    assert CANARY in canary_dsn
    refused = nexanest(
        isolated, logs / "refused.log", "consume", "--until-idle", "2", NEXANEST_TIMESCALE__DSN=canary_dsn
    )
    assert refused != 0
    assert "password" in (logs / "refused.log").read_text().lower()  # it says why, without the secret
    # The services. The notifications service seals webhook secrets with a key of
    # this test's; its worker runs apart, and gives a delivery up after 3 attempts.
    user_password = f"user-pw-{uuid.uuid4().hex}"
    sealing_key = secrets.token_hex(32)
    key_prefix = f"test.{test_id}:notifications:"
    notifications_env = {
        **LOGGING,
        "NEXANEST_NOTIFICATIONS__SECRET_KEY": sealing_key,
        "NEXANEST_NOTIFICATIONS__KEY_PREFIX": key_prefix,
        "NEXANEST_NOTIFICATIONS__WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
        "NEXANEST_NOTIFICATIONS__WORKER_IN_SERVICE": "false",
        "NEXANEST_NOTIFICATIONS__WEBHOOK_MAX_ATTEMPTS": "3",
        "NEXANEST_NOTIFICATIONS__RETRY_INITIAL_S": "0.2",
        "NEXANEST_NOTIFICATIONS__RETRY_MAX_S": "1",
    }
    analytics_env = {
        **LOGGING,
        "NEXANEST_SERVICES__ANALYTICS_INTERVAL_S": "5",
        "NEXANEST_SERVICES__ANALYTICS_CACHE_PREFIX": f"test.{test_id}:analytics:",
        "NEXANEST_SERVICES__ANALYTICS_MAX_SYMBOLS": "5",
    }
    url_tokens = [f"urltok{uuid.uuid4().hex}", f"urlkey{uuid.uuid4().hex}"]
    user_ids: list[uuid.UUID] = []
    try:
        with (
            failing_receiver() as (receiver, received),
            served("auth", isolated, logs / "auth.log", env=LOGGING) as auth,
            served("portfolio", isolated, logs / "portfolio.log", env=LOGGING) as portfolio,
            served("market-data", isolated, logs / "market-data.log", env=LOGGING) as market,
            served("notifications", isolated, logs / "notifications.log", env=notifications_env) as notifications,
            served("analytics", isolated, logs / "analytics.log", env=analytics_env) as analytics,
            notifications_worker(isolated, logs / "notifications-worker.log", notifications_env),
            httpx.Client(timeout=30) as http,
        ):
            tokens = exercise_the_services(auth, portfolio, market, user_password)
            password, token = new_user(http, auth)
            bearer = {"Authorization": f"Bearer {token}"}
            user_ids.append(uuid.UUID(http.get(f"{auth}/auth/me", headers=bearer).json()["user_id"]))
            # A webhook endpoint (its signing secret is in the answer, once), its URL
            # with tokens in the path and the query, as receivers often want.
            hook_url = f"{receiver}/hook/{url_tokens[0]}?key={url_tokens[1]}"
            created = http.post(
                f"{notifications}/webhooks", json={"url": hook_url, "description": "logs"}, headers=bearer
            )
            assert created.status_code == 201, created.text
            hook = created.json()
            signing_secret = hook["secret"]
            assert re.fullmatch(r"whsec_\S{20,}", signing_secret), "a signing secret"
            # An alert that the first quote fires (there is none yet in the test's namespace).
            alert = http.post(
                f"{notifications}/alerts",
                json={"symbol": "SYN0001", "kind": "crosses_above", "threshold": "0.01"},
                headers=bearer,
            )
            assert alert.status_code == 201, alert.text
            assert alert.json()["state"] == "armed"
            assert (
                http.get(f"{notifications}/alerts", headers={"Authorization": "Bearer forged-1234567890"}).status_code
                == 401
            )
            # The pipeline runs: quotes reach Redis, the alert fires, the worker posts
            # the webhook, the receiver refuses it, the worker retries and gives up.
            assert (
                nexanest(isolated, logs / "run.log", "run", "--symbols", "5", "--rate", "200", "--duration", "5") == 0
            )

            def given_up() -> bool:
                rows = http.get(f"{notifications}/webhooks/{hook['id']}/deliveries", headers=bearer).json()
                return any(r["status"] == "failed" and r["last_status_code"] == 500 for r in rows)

            wait_for("the webhook delivery failed and given up", given_up, 90.0)
            assert len(received) >= 3  # every attempt reached the receiver, signed
            assert all(r.get("webhook-signature", "").startswith("v1,") for r in received)
            inbox = http.get(f"{notifications}/notifications", headers=bearer).json()["items"]
            assert inbox, "the alert reached the inbox too"
            # Analytics: its routes with a good and a forged token.
            for path in ("/analytics/symbols/SYN0001", f"/analytics/portfolios/{uuid.uuid4()}", "/analytics/reports"):
                assert http.get(f"{analytics}{path}", headers=bearer).status_code in (200, 404), path
            forged = {"Authorization": "Bearer forged-token-value-1234567890"}
            assert http.get(f"{analytics}/analytics/reports", headers=forged).status_code == 401
    finally:
        with ThreadPoolExecutor(max_workers=1) as apart:  # a loop of its own, not pytest-asyncio's
            apart.submit(asyncio.run, forget_notifications(isolated, key_prefix, user_ids)).result()
    in_env = {
        value
        for key, value in re.findall(r"(?m)^(NEXANEST_\w+)=(.+)$", (REPO / ".env").read_text())
        if key.endswith(("_SECRET", "_SECRET_KEY"))
    }
    token_secret = isolated.services.token_secret
    found_secrets = {
        *env_secrets(REPO / ".env"),
        *in_env,
        *([token_secret.get_secret_value()] if token_secret else []),
        CANARY,
        user_password,
        user_password + "-new",
        password,
        *tokens,
        token,
        sealing_key,
        signing_secret,
        signing_secret.removeprefix("whsec_"),  # the key itself, base64
        *url_tokens,
    }
    assert len(found_secrets) >= 18
    lines = [(path.name, line) for path in sorted(logs.iterdir()) for line in path.read_text().splitlines()]
    by_file = {path.name: len(path.read_text().splitlines()) for path in logs.iterdir()}
    assert all(n > 0 for n in by_file.values()), by_file  # each process wrote (a scan of nothing proves nothing)
    assert len(lines) >= 40
    leaked = [(name, line[:200]) for name, line in lines for secret in found_secrets if secret in line]
    assert leaked == []
