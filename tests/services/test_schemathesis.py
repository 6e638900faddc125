"""schemathesis against every service as users run it (``nexanest serve``, real
databases and Redis): generated requests, valid and not, find no server error,
and every response matches what the OpenAPI document declares for it (schema
and content type). Authenticated as a freshly registered user, so the routes
behind the bearer check are exercised, not only their 401s.

``/auth/logout`` and ``/auth/password`` end the fuzzer's own session (every later
call would only see 401), so they are fuzzed in a run of their own.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from nexanest.pipeline.settings import Settings
from tests.services.served import served

pytestmark = pytest.mark.integration

CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
#: Generated cases per operation: enough to reach every declared 4xx of a route,
#: few enough for CI (all three services in about a minute each).
MAX_EXAMPLES = "25"
SESSION_ENDING = ["/auth/logout", "/auth/password"]


def bearer_of_a_new_user(auth_url: str) -> str:
    email = f"fuzz-{uuid.uuid4().hex[:12]}@example.com"
    password = f"pw-{uuid.uuid4().hex}"
    with httpx.Client(base_url=auth_url, timeout=30) as http:
        assert (
            http.post("/auth/register", json={"email": email, "password": password, "display_name": "fuzz"}).status_code
            == 201
        )
        login = http.post("/auth/login", json={"email": email, "password": password})
        assert login.status_code == 200, login.text
        return str(login.json()["access_token"])


def schemathesis(url: str, token: str, *filters: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{url}/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            MAX_EXAMPLES,
            "--header",
            f"Authorization: Bearer {token}",
            "--workers",
            "1",
            "--no-color",
            *filters,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def assert_clean(run: subprocess.CompletedProcess[str], service: str, log: Path) -> None:
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis found problems in {service}:\n{output[-6000:]}"
    generated = re.search(r"(\d+) generated", output)  # it really ran cases, not only loaded the document
    assert generated is not None, output[-2000:]
    assert int(generated.group(1)) >= 10, output[-2000:]
    logged = log.read_text()
    assert '"status": 500' not in logged, logged[-3000:]
    assert '"status":500' not in logged, logged[-3000:]


def test_auth_has_no_server_error_and_keeps_its_schema(migrated: Settings, tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    # Every request comes from 127.0.0.1: the fuzzer's failed logins would soon throttle
    # the address for the rest of the window (tests/services/auth/test_throttle.py proves that).
    unthrottled = {"NEXANEST_SERVICES__LOGIN_FAILURES_PER_ADDRESS": "100000"}
    with served("auth", migrated, log, env=unthrottled) as url:
        first, second = bearer_of_a_new_user(url), bearer_of_a_new_user(url)
        exclude = [arg for path in SESSION_ENDING for arg in ("--exclude-path", path)]
        assert_clean(schemathesis(url, first, *exclude), "auth", log)
        include = [arg for path in SESSION_ENDING for arg in ("--include-path", path)]
        assert_clean(schemathesis(url, second, *include), "auth", log)
