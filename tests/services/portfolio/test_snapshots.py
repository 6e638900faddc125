"""The snapshot worker and the history over its snapshots (integration)."""

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
import pytest
import redis.asyncio as redis

from nexanest.pipeline.settings import Settings, namespace_environment
from nexanest.services.background import next_slot
from nexanest.services.portfolio.snapshots import run_snapshots, snapshot_round
from tests.services.portfolio.conftest import Service, running_service, service_settings

pytestmark = pytest.mark.integration


async def snapshots_of(settings: Settings, portfolio_ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    """Every stored snapshot of ``portfolio_ids``, read as the table's owner."""
    conn = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value())
    try:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT * FROM portfolio_snapshots WHERE portfolio_id = ANY($1) ORDER BY time, portfolio_id",
            portfolio_ids,
        )
        return rows
    finally:
        await conn.close()


async def wait_for_snapshots(
    settings: Settings, portfolio_ids: list[uuid.UUID], count: int, *, timeout_s: float = 15.0
) -> list[asyncpg.Record]:
    """The stored snapshots of ``portfolio_ids`` once there are at least ``count``
    (polled every 0.1 s); what there is after ``timeout_s`` otherwise."""
    deadline = time.monotonic() + timeout_s
    rows = await snapshots_of(settings, portfolio_ids)
    while len(rows) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        rows = await snapshots_of(settings, portfolio_ids)
    return rows


async def round_at(service: Service, at: datetime) -> None:
    await snapshot_round(
        service.pool,
        service.snapshots_pool,
        service.quotes,
        quote_key_prefix=service.settings.redis.quote_key_prefix,
        quote_max_age_s=service.settings.services.portfolio_quote_max_age_s,
        at=at,
    )


async def test_each_round_writes_one_row_per_portfolio_and_history_returns_them(
    service: Service, users: list[uuid.UUID]
) -> None:
    alice, bob = users
    a1 = uuid.UUID(await service.create(alice, "one"))
    a2 = uuid.UUID(await service.create(alice, "two"))
    b1 = uuid.UUID(await service.create(bob, "one"))
    await service.book(alice, str(a1), kind="deposit", amount="1000")
    await service.book(alice, str(a1), kind="buy", symbol="AAA", quantity="3", price="100")
    await service.book(alice, str(a1), kind="buy", symbol="BBB", quantity="1", price="50")
    await service.book(alice, str(a1), kind="sell", symbol="BBB", quantity="1", price="55")
    await service.book(bob, str(b1), kind="deposit", amount="10")
    await service.book(bob, str(b1), kind="buy", symbol="STALE", quantity="1", price="10")
    await service.quote("AAA", "110")
    await service.quote("STALE", "12", age_s=service.settings.services.portfolio_quote_max_age_s + 1)

    t0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
    for at in (t0, t0 + timedelta(minutes=1), t0 + timedelta(minutes=1), t0 + timedelta(hours=1)):
        await round_at(service, at)  # the repeated minute writes nothing new
    rows = await snapshots_of(service.settings, [a1, a2, b1])
    assert len(rows) == 9
    for pid in (a1, a2, b1):
        assert [r["time"] for r in rows if r["portfolio_id"] == pid] == [
            t0,
            t0 + timedelta(minutes=1),
            t0 + timedelta(hours=1),
        ]
    first = {r["portfolio_id"]: r for r in rows if r["time"] == t0}
    assert dict(first[a1]) | {"time": None} == {
        "time": None,
        "portfolio_id": a1,
        "user_id": alice,
        "market_value": Decimal("330.000000000"),
        "cost_basis": Decimal("300.000000000"),
        "cash": Decimal("705.000000000"),
        "unrealised": Decimal("30.000000000"),
        "realised": Decimal("5.000000000"),
        "total_value": Decimal("1035.000000000"),
        "positions": 1,
        "unpriced": 0,
    }
    assert (first[a2]["market_value"], first[a2]["total_value"], first[a2]["positions"]) == (0, 0, 0)
    assert first[b1]["user_id"] == bob
    assert (first[b1]["market_value"], first[b1]["unrealised"], first[b1]["unpriced"]) == (None, None, 1)
    assert first[b1]["cost_basis"] == 10

    history = await service.http.get(
        f"/portfolios/{a1}/history",
        params={"from": t0.isoformat(), "to": (t0 + timedelta(hours=2)).isoformat(), "interval": "1h"},
        headers=service.auth(alice),
    )
    assert history.status_code == 200
    body = history.json()
    assert [p["time"] for p in body["points"]] == ["2026-05-04T10:00:00Z", "2026-05-04T11:00:00Z"]
    # The last snapshot of each bucket; every value a string.
    assert body["points"][0] == {
        "time": "2026-05-04T10:00:00Z",
        "market_value": "330",
        "cost_basis": "300",
        "cash": "705",
        "unrealised": "30",
        "realised": "5",
        "total_value": "1035",
        "unpriced": 0,
    }
    minutes = await service.http.get(
        f"/portfolios/{a1}/history",
        params={"from": t0.isoformat(), "to": (t0 + timedelta(minutes=5)).isoformat(), "interval": "1m"},
        headers=service.auth(alice),
    )
    assert len(minutes.json()["points"]) == 2
    stale = await service.http.get(
        f"/portfolios/{b1}/history",
        params={"from": t0.isoformat(), "to": (t0 + timedelta(days=1)).isoformat(), "interval": "1d"},
        headers=service.auth(bob),
    )
    assert stale.json()["points"][0]["market_value"] is None
    assert stale.json()["points"][0]["unpriced"] == 1
    # Another user's history: 404, as for a portfolio nobody has.
    assert (await service.http.get(f"/portfolios/{a1}/history", headers=service.auth(bob))).status_code == 404


async def test_deleting_a_portfolio_deletes_its_history(service: Service, users: list[uuid.UUID]) -> None:
    alice = users[0]
    pid = uuid.UUID(await service.create(alice))
    await round_at(service, datetime(2026, 5, 4, 10, 0, tzinfo=UTC))
    assert len(await snapshots_of(service.settings, [pid])) == 1
    assert (await service.http.delete(f"/portfolios/{pid}", headers=service.auth(alice))).status_code == 204
    assert await snapshots_of(service.settings, [pid]) == []


def test_rounds_fall_on_multiples_of_the_interval() -> None:
    assert next_slot(120.0, 60) == 180.0
    assert next_slot(179.999, 60) == 180.0
    assert next_slot(1_800_000_000.5, 1) == 1_800_000_001.0


async def test_the_worker_snapshots_every_portfolio_once_per_interval_until_stopped(
    service: Service, users: list[uuid.UUID]
) -> None:
    alice = users[0]
    pid = uuid.UUID(await service.create(alice))
    stop = asyncio.Event()
    worker = asyncio.create_task(run_snapshots(service.settings, stop=stop, interval_s=1.0))
    started = time.time()
    rows = await wait_for_snapshots(service.settings, [pid], 3)
    stop.set()
    await asyncio.wait_for(worker, 10)
    assert len(rows) >= 3, rows
    times = [r["time"] for r in rows]
    assert all(t.microsecond == 0 for t in times)  # on whole seconds
    assert all(t.timestamp() > started for t in times)
    assert len(set(times)) == len(times)  # one row per round


async def test_the_service_can_run_the_worker_itself(
    isolated: Settings, quotes_redis: redis.Redis, users: list[uuid.UUID]
) -> None:
    settings = service_settings(isolated, portfolio_snapshots_in_service=True, portfolio_snapshot_interval_s=1.0)
    async with running_service(settings, quotes_redis) as service:
        pid = uuid.UUID(await service.create(users[0]))
        ready = (await service.http.get("/readyz")).json()
        assert ready["checks"]["snapshots"] == "ok"
        assert await wait_for_snapshots(settings, [pid], 1)
        worker = service.resources["snapshots"]
    assert worker.done()  # stopped with the service
    assert worker.exception() is None


async def test_nexanest_serve_portfolio_snapshots_runs_the_worker_until_sigterm(
    service: Service, users: list[uuid.UUID], tmp_path: Path
) -> None:
    """The worker as operators run it, beside a service that does not snapshot itself."""
    pid = uuid.UUID(await service.create(users[0]))
    log = tmp_path / "worker.log"
    worker = start_worker(service.settings, log)
    try:
        rows = await wait_for_snapshots(service.settings, [pid], 2, timeout_s=30)
        assert len(rows) >= 2, log.read_text()[-3000:]
    finally:
        worker.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(worker.wait, 20)
    assert returncode == 0, log.read_text()[-3000:]
    assert "snapshots_started" in log.read_text()


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **namespace_environment(settings)}
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "nexanest.cli.main", "serve", "portfolio-snapshots", "--interval", "1"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
