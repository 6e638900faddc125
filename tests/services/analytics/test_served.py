"""The analytics service as users run it (integration): ``nexanest serve
analytics`` beside ``nexanest serve auth``, with its worker inside, on fresh
snapshots; and ``nexanest serve analytics-worker`` alone."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as redis

from nexanest.pipeline.settings import Settings, namespace_environment
from tests.services.analytics.conftest import Snapshot, write_snapshots
from tests.services.fuzzing import bearer_of_a_new_user
from tests.services.served import REPO, served

pytestmark = pytest.mark.integration


def recent_snapshots(count: int) -> list[Snapshot]:
    """One a minute up to now, a value that moves every minute."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return [
        Snapshot(now - timedelta(minutes=k), Decimal(1000 + (k * 37) % 23), Decimal(1000)) for k in range(count, 0, -1)
    ]


async def forget(settings: Settings, user_id: uuid.UUID) -> None:
    conn = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value())
    try:
        await conn.execute("DELETE FROM portfolio_snapshots WHERE user_id = $1", user_id)
        await conn.execute("DELETE FROM analytics_metrics WHERE user_id = $1", user_id)
    finally:
        await conn.close()
    conn = await asyncpg.connect(settings.postgres.analytics_dsn.get_secret_value())
    try:
        await conn.execute("DELETE FROM saved_reports WHERE user_id = $1", user_id)
    finally:
        await conn.close()


async def test_served_with_its_worker_answers_a_users_metrics(migrated: Settings, tmp_path: Path, test_id: str) -> None:
    prefix = f"test.{test_id}:analytics:"
    env = {
        "NEXANEST_SERVICES__ANALYTICS_INTERVAL_S": "5",
        "NEXANEST_SERVICES__ANALYTICS_CACHE_PREFIX": prefix,
        # The test databases hold every test's symbols: a round over a few is enough here.
        "NEXANEST_SERVICES__ANALYTICS_MAX_SYMBOLS": "5",
    }
    portfolio = uuid.uuid4()
    with served("auth", migrated, tmp_path / "auth.log") as auth_url:
        token = bearer_of_a_new_user(auth_url)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=auth_url, headers=headers, timeout=10) as auth:
            user_id = uuid.UUID((await auth.get("/auth/me")).json()["user_id"])
        try:
            await write_snapshots(migrated, portfolio, user_id, recent_snapshots(30))
            with served("analytics", migrated, tmp_path / "analytics.log", env=env) as url:
                async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
                    assert (await http.get("/analytics/portfolios/" + str(portfolio))).status_code == 200
                    deadline = time.monotonic() + 30
                    while True:  # the worker's next round (every 5 s) computes it
                        body = (await http.get(f"/analytics/portfolios/{portfolio}")).json()
                        if body["as_of"] is not None:
                            break
                        assert time.monotonic() < deadline, "no round of the worker within 30 s"
                        await asyncio.sleep(0.2)
                    assert body["metrics"]["1h"]["volatility"] > 0
                    assert "return" not in body["metrics"]["1h"]  # 30 minutes of history: not a whole hour
                    assert httpx.get(f"{url}/analytics/portfolios/{portfolio}").status_code == 401  # noqa: ASYNC210
                    other = {"Authorization": f"Bearer {bearer_of_a_new_user(auth_url)}"}
                    assert (await http.get(f"/analytics/portfolios/{portfolio}", headers=other)).status_code == 404
                    assert (await http.get("/readyz")).json()["checks"]["analytics-worker"] == "ok"
                    # A scheduled report: the worker's next round runs it, as /run would.
                    definition = {"subject_kind": "portfolio", "subject_ids": [str(portfolio)]}
                    created = await http.post(
                        "/analytics/reports", json={"name": "hourly", "definition": definition, "schedule": "hourly"}
                    )
                    assert created.status_code == 201, created.text
                    runs_url = f"/analytics/reports/{created.json()['id']}/runs"
                    deadline = time.monotonic() + 60
                    while not (stored := (await http.get(runs_url)).json()):
                        assert time.monotonic() < deadline, "no scheduled run within 60 s"
                        await asyncio.sleep(0.2)
                    assert [r["subject_id"] for r in stored[0]["result"]["results"]] == [str(portfolio)]
                    assert (await http.get(runs_url, headers=other)).status_code == 404
        finally:
            await forget(migrated, user_id)
    log = (tmp_path / "analytics.log").read_text()
    assert '"analytics_round"' in log
    assert '"report_runs"' in log
    assert token not in log


async def test_the_worker_alone_computes_and_caches(migrated: Settings, tmp_path: Path, test_id: str) -> None:
    prefix = f"test.{test_id}:analytics:"
    user_id, portfolio = uuid.uuid4(), uuid.uuid4()
    await write_snapshots(migrated, portfolio, user_id, recent_snapshots(10))
    env = {
        **os.environ,
        **namespace_environment(migrated),
        "NEXANEST_SERVICES__ANALYTICS_CACHE_PREFIX": prefix,
        "NEXANEST_SERVICES__ANALYTICS_MAX_SYMBOLS": "5",
    }
    client = redis.Redis.from_url(migrated.redis.url.get_secret_value(), db=migrated.redis.db_analytics)
    key = f"{prefix}portfolio:{user_id}:{portfolio}"
    with (tmp_path / "worker.log").open("ab") as sink:
        worker = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "nexanest.cli.main", "serve", "analytics-worker", "--interval", "5"),
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while (cached := await client.get(key)) is None:
            assert worker.returncode is None, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "nothing cached within 30 s"
            await asyncio.sleep(0.2)
        assert b'"subject_kind":"portfolio"' in cached
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), 30) == 0
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
        await client.delete(key)
        await client.aclose()
        await forget(migrated, user_id)
