"""schemathesis against ``nexanest serve portfolio`` (real databases, Redis, the
auth service's sessions): no server error, every response as declared.

A second run puts the id of a portfolio with cash and a holding in every
``{portfolio_id}``, so that the routes behind the 404 are fuzzed too
(generated ids find no portfolio)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from nexanest.pipeline.settings import Settings
from tests.services.fuzzing import answered_about, assert_clean, bearer_of_a_new_user, fuzz
from tests.services.served import served

pytestmark = pytest.mark.integration


def test_portfolio_has_no_server_error_and_keeps_its_schema(migrated: Settings, tmp_path: Path) -> None:
    auth_log, log = tmp_path / "auth.log", tmp_path / "portfolio.log"
    with served("auth", migrated, auth_log) as auth_url:
        token = bearer_of_a_new_user(auth_url)
        with served("portfolio", migrated, log) as url:
            # Its stateful phase follows ids from responses (GET /portfolios, Location)
            # into every route, DELETE included.
            assert_clean(fuzz(url, token, tmp_path / "generated.toml"), "portfolio", log)
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
                created = http.post("/portfolios", json={"name": "fuzzed"})
                assert created.status_code == 201, created.text
                pid = created.json()["id"]
                for body in (
                    {"kind": "deposit", "amount": "100000"},
                    {"kind": "buy", "symbol": "AAA", "quantity": "10", "price": "100"},
                ):
                    assert http.post(f"/portfolios/{pid}/transactions", json=body).status_code == 201
            # Not DELETE: the portfolio must live through the run for the others to reach it.
            existing = fuzz(url, token, tmp_path / "existing.toml", "--exclude-method", "DELETE", portfolio_id=pid)
            assert_clean(existing, "portfolio", log)
            assert answered_about(log, pid) >= 20, "the fuzzer hardly reached the portfolio behind its id"
