"""schemathesis against a service as users run it (``nexanest serve``, real
databases and Redis): generated requests, valid and not, must find no server
error, and every response must match what the OpenAPI document declares for it
(schema and content type). Each service's ``test_schemathesis.py`` uses these,
authenticated as a freshly registered user so the routes behind the bearer
check are exercised, not only their 401s.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
#: Generated cases per operation: enough to reach every declared 4xx of a route,
#: few enough for CI.
MAX_EXAMPLES = "25"


def bearer_of_a_new_user(auth_url: str) -> str:
    """The access token of a user registered for the occasion."""
    email = f"fuzz-{uuid.uuid4().hex[:12]}@example.com"
    password = f"pw-{uuid.uuid4().hex}"
    with httpx.Client(base_url=auth_url, timeout=30) as http:
        registered = http.post("/auth/register", json={"email": email, "password": password, "display_name": "fuzz"})
        assert registered.status_code == 201, registered.text
        login = http.post("/auth/login", json={"email": email, "password": password})
        assert login.status_code == 200, login.text
        return str(login.json()["access_token"])


def fuzz(url: str, token: str, config: Path, *options: str, **path: str) -> subprocess.CompletedProcess[str]:
    """schemathesis on the service at ``url`` with ``options`` (filters), and
    ``path`` parameters fixed to the values given (the rest of each request
    generated); ``config`` is the file those values are written to."""
    config.write_text("[parameters]\n" + "".join(f'"path.{name}" = "{value}"\n' for name, value in path.items()))
    return subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(config),
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
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def assert_clean(run: subprocess.CompletedProcess[str], service: str, log: Path) -> None:
    """schemathesis found nothing, really ran cases, and the service logged no 500."""
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis found problems in {service}:\n{output[-6000:]}"
    generated = re.search(r"(\d+) generated", output)  # it ran cases, not only loaded the document
    assert generated is not None, output[-2000:]
    assert int(generated.group(1)) >= 10, output[-2000:]
    logged = log.read_text()
    assert '"status": 500' not in logged, logged[-3000:]
    assert '"status":500' not in logged, logged[-3000:]


def answered_about(log: Path, marker: str, status: str = '"status":20') -> int:
    """How many request lines of the service's log mention ``marker`` (an id or
    symbol the fuzzer was given) with a status starting ``status`` (2xx by
    default): proof that the run reached what stands behind it, not only 404s."""
    return sum(1 for line in log.read_text().splitlines() if marker in line and status in line)
