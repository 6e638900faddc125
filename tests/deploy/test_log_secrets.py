"""No password or token in any log line (integration): the pipeline and the three
services run as users run them, with JSON logs at debug level, through their
normal path and their error paths (a database that refuses the password, a
forged and a revoked token, a failed login); then every line of every log is
scanned for every secret that was in play."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from nexanest.pipeline.settings import Settings, namespace_environment
from tests.deploy.test_secrets import env_secrets
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


def test_no_secret_reaches_a_log(isolated: Settings, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    # The pipeline: a short run, then a consumer whose database refuses its password.
    assert nexanest(isolated, logs / "run.log", "run", "--symbols", "5", "--rate", "200", "--duration", "3") == 0
    dsn = urlsplit(isolated.timescale.dsn.get_secret_value())
    canary_dsn = urlunsplit(dsn._replace(netloc=f"{dsn.username}:{CANARY}@{dsn.hostname}:{dsn.port}"))
    assert CANARY in canary_dsn
    refused = nexanest(
        isolated, logs / "refused.log", "consume", "--until-idle", "2", NEXANEST_TIMESCALE__DSN=canary_dsn
    )
    assert refused != 0
    assert "password" in (logs / "refused.log").read_text().lower()  # it says why, without the secret
    # The services.
    user_password = f"user-pw-{uuid.uuid4().hex}"
    with (
        served("auth", isolated, logs / "auth.log") as auth,
        served("portfolio", isolated, logs / "portfolio.log") as portfolio,
        served("market-data", isolated, logs / "market-data.log") as market,
    ):
        tokens = exercise_the_services(auth, portfolio, market, user_password)
    secrets = env_secrets(REPO / ".env") | {CANARY, user_password, user_password + "-new", *tokens}
    assert len(secrets) >= 10
    lines = [(path.name, line) for path in sorted(logs.iterdir()) for line in path.read_text().splitlines()]
    assert len(lines) >= 20  # the logs were written (a scan of nothing proves nothing)
    leaked = [(name, line[:200]) for name, line in lines for secret in secrets if secret in line]
    assert leaked == []
