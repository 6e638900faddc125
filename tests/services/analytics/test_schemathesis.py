"""schemathesis against ``nexanest serve analytics`` (real databases, Redis, the
auth service's sessions): no server error, every response as declared.

A second run puts the id of a portfolio with snapshots and metrics of the
fuzzing user in every ``{portfolio_id}``, a symbol with metrics in every
``{symbol}`` and a saved report in every ``{report_id}``, so that the routes
behind the 404s are fuzzed too (generated values find nothing)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest

from nexanest.pipeline.settings import Settings
from tests.services.analytics.conftest import Snapshot, write_snapshots
from tests.services.fuzzing import answered_about, assert_clean, bearer_of_a_new_user, fuzz
from tests.services.served import served

pytestmark = pytest.mark.integration


async def test_analytics_has_no_server_error_and_keeps_its_schema(
    migrated: Settings, tmp_path: Path, test_id: str
) -> None:
    auth_log, log = tmp_path / "auth.log", tmp_path / "analytics.log"
    env = {
        "NEXANEST_SERVICES__ANALYTICS_WORKER_IN_SERVICE": "false",
        "NEXANEST_SERVICES__ANALYTICS_CACHE_PREFIX": f"test.{test_id}:analytics:",
    }
    portfolio = uuid.uuid4()
    with served("auth", migrated, auth_log) as auth_url:
        token = bearer_of_a_new_user(auth_url)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=auth_url, headers=headers, timeout=10) as auth:
            user_id = uuid.UUID((await auth.get("/auth/me")).json()["user_id"])
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        snapshots = [
            Snapshot(now - timedelta(minutes=k), Decimal(1000 + k % 7), Decimal(1000)) for k in range(90, 0, -1)
        ]
        try:
            await write_snapshots(migrated, portfolio, user_id, snapshots)
            with served("analytics", migrated, log, env=env) as url:
                assert_clean(fuzz(url, token, tmp_path / "generated.toml"), "analytics", log)
                async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
                    computed = await http.post(f"/analytics/portfolios/{portfolio}/compute")
                    assert computed.status_code == 200, computed.text
                    assert computed.json()["metrics"]["1h"]["return"] is not None
                    created = await http.post(
                        "/analytics/reports",
                        json={
                            "name": "fuzzed",
                            "definition": {"subject_kind": "portfolio", "subject_ids": [str(portfolio)]},
                        },
                    )
                    assert created.status_code == 201, created.text
                # Not DELETE: the report must live through the run for the others to reach it.
                existing = fuzz(
                    url,
                    token,
                    tmp_path / "existing.toml",
                    "--exclude-method",
                    "DELETE",
                    portfolio_id=str(portfolio),
                    report_id=created.json()["id"],
                )
                assert_clean(existing, "analytics", log)
                assert answered_about(log, str(portfolio)) >= 10, (
                    "the fuzzer hardly reached the portfolio behind its id"
                )
        finally:
            conn = await asyncpg.connect(migrated.timescale.admin_dsn.get_secret_value())
            try:
                await conn.execute("DELETE FROM portfolio_snapshots WHERE user_id = $1", user_id)
                await conn.execute("DELETE FROM analytics_metrics WHERE user_id = $1", user_id)
            finally:
                await conn.close()
