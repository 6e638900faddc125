"""Portfolio metrics against the real TimescaleDB and Redis (integration): the
figures the service stores and answers equal numpy's on the same snapshots, and
no user reaches another's, by id or by SQL through the service's own pool."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import numpy as np
import pytest

from nexanest.services.analytics.compute import Parameters, compute_portfolios
from nexanest.services.analytics.metrics import RESOLUTION_WIDTHS, Point, Resolution
from nexanest.services.rls import acting_as
from tests.services.analytics.conftest import Service, Snapshot, write_snapshots
from tests.services.analytics.reference import expected_portfolio

pytestmark = pytest.mark.integration

END = datetime(2025, 7, 20, 12, 0, tzinfo=UTC)
RISK_FREE = 0.03
E9 = Decimal("1e-9")


def snapshot_times() -> list[datetime]:
    """Daily back to before 1 January (YTD covered), hourly for nine days, every
    minute for the last 26 hours: every window has its anchor."""
    midnight = END.replace(hour=0, minute=0)
    daily = [midnight - timedelta(days=k) + timedelta(hours=23, minutes=59) for k in range(220, 9, -1)]
    hour = END.replace(minute=0)
    hourly = [hour - timedelta(hours=k) + timedelta(minutes=59) for k in range(9 * 24, 26, -1)]
    minutely = [END - timedelta(minutes=k) + timedelta(seconds=30) for k in range(26 * 60, 0, -1)]
    return daily + hourly + minutely


def snapshots_of(seed: int) -> list[Snapshot]:
    """A random walk with deposits, one withdrawal, and unpriced snapshots now and then."""
    rng = np.random.default_rng(seed)
    times = snapshot_times()
    flows = np.where(rng.random(len(times)) < 0.01, 2000.0, 0.0)
    flows[len(times) // 2] = -500.0
    contributions = 10_000 + np.cumsum(flows)
    growth = np.cumprod(1 + rng.normal(0.00005, 0.004, len(times)))
    out = []
    for t, c, g, priced in zip(times, contributions, growth, rng.random(len(times)) > 0.03, strict=True):
        contribution = Decimal(repr(float(c))).quantize(E9)
        value = Decimal(repr(float(c * g))).quantize(E9) if priced else None
        out.append(Snapshot(t, value, contribution))
    return out


def bucketed(points: list[tuple[datetime, float, float]], resolution: Resolution) -> list[Point]:
    """numpy's bucketing: the last point of each epoch-aligned bucket, stamped with its start."""
    width = RESOLUTION_WIDTHS[resolution].total_seconds()
    stamps = np.array([t.timestamp() for t, _, _ in points])
    buckets = np.floor(stamps / width) * width
    last = np.flatnonzero(np.append(buckets[1:] != buckets[:-1], True))  # the last index of each bucket
    return [Point(datetime.fromtimestamp(buckets[i], UTC), points[i][1], points[i][2]) for i in last]


def reference_series(snapshots: list[Snapshot]) -> dict[Resolution, list[Point]]:
    priced = [
        (s.time, float(s.total_value), float(s.contributions))
        for s in snapshots
        if s.total_value is not None and s.time < END
    ]
    return {r: bucketed(priced, r) for r in RESOLUTION_WIDTHS}


async def write_index(pool: asyncpg.Pool, name: str, seed: int) -> dict[Resolution, list[Point]]:
    """Index values at most of the snapshots' times (as the pipeline's role), and numpy's series of them."""
    rng = np.random.default_rng(seed)
    times = [t for t in snapshot_times() if rng.random() > 0.1]
    values = [Decimal(repr(float(v))).quantize(E9) for v in 1000 * np.cumprod(1 + rng.normal(0, 0.003, len(times)))]
    await pool.executemany(
        "INSERT INTO market_indices (time, index_name, value, constituents, method) VALUES ($1, $2, $3, 3, 'test')",
        list(zip(times, [name] * len(times), values, strict=True)),
    )
    points = [(t, float(v), 0.0) for t, v in zip(times, values, strict=True)]
    return {r: bucketed(points, r) for r in RESOLUTION_WIDTHS}


def assert_matches(answer: dict[str, dict[str, float]], expected: dict[tuple[str, str], float]) -> None:
    got = {(metric, window): value for window, values in answer.items() for metric, value in values.items()}
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert math.isclose(got[key], value, rel_tol=1e-9, abs_tol=1e-12), (key, got[key], value)


async def test_the_stored_and_answered_figures_match_numpy_on_the_same_snapshots(
    service: Service, users: list[uuid.UUID], timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    alice, _ = users
    portfolio = uuid.uuid4()
    snapshots = snapshots_of(7)
    await write_snapshots(service.settings, portfolio, alice, snapshots)
    index = f"AN{test_id.upper()}IX"
    index_points = await write_index(timescale_pool, index, 8)
    expected = expected_portfolio(reference_series(snapshots), index_points, end=END, risk_free_rate=RISK_FREE)
    assert {("return", w) for w in ("1h", "1d", "1w", "1m", "ytd")} <= set(expected)

    computed = await compute_portfolios(
        service.pool, service.cache, Parameters(RISK_FREE, index), at=END, portfolio_ids=[portfolio]
    )
    assert set(computed) == {portfolio}
    assert_matches(computed[portfolio].model_dump()["metrics"], expected)

    # The answer (from the cache the computation filled) and the stored rows say the same.
    answer = await service.http.get(f"/analytics/portfolios/{portfolio}", headers=service.auth(alice))
    assert answer.status_code == 200, answer.text
    assert answer.json()["as_of"] == "2025-07-20T12:00:00Z"
    assert_matches(answer.json()["metrics"], expected)
    await service.cache._client.delete(service.cache.portfolio_key(alice, portfolio))
    from_table = await service.http.get(f"/analytics/portfolios/{portfolio}", headers=service.auth(alice))
    assert from_table.json() == answer.json()

    history = await service.http.get(
        f"/analytics/portfolios/{portfolio}/metrics",
        params={"name": "volatility", "window": "1w", "from": "2025-07-01T00:00:00Z", "to": "2025-08-01T00:00:00Z"},
        headers=service.auth(alice),
    )
    assert history.status_code == 200, history.text
    points = history.json()["points"]
    assert [(p["time"], p["metric"], p["window"]) for p in points] == [("2025-07-20T12:00:00Z", "volatility", "1w")]
    assert math.isclose(points[0]["value"], expected["volatility", "1w"], rel_tol=1e-9)


async def test_another_user_reaches_none_of_a_portfolios_metrics(service: Service, users: list[uuid.UUID]) -> None:
    alice, bob = users
    portfolio = uuid.uuid4()
    await write_snapshots(service.settings, portfolio, alice, snapshots_of(3)[-200:])
    await compute_portfolios(service.pool, service.cache, Parameters(0.0, None), at=END, portfolio_ids=[portfolio])
    mine = await service.http.get(f"/analytics/portfolios/{portfolio}", headers=service.auth(alice))
    assert mine.status_code == 200
    assert mine.json()["metrics"]["1h"]["return"] is not None

    for method, path in (
        ("GET", f"/analytics/portfolios/{portfolio}"),
        ("GET", f"/analytics/portfolios/{portfolio}/metrics?from=2025-07-01T00:00:00Z"),
        ("POST", f"/analytics/portfolios/{portfolio}/compute"),
        ("GET", f"/analytics/portfolios/{uuid.uuid4()}"),
    ):
        response = await service.http.request(method, path, headers=service.auth(bob))
        assert response.status_code == 404, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"] == "no such portfolio (or it has no snapshots yet)"

    # The database decides, not the routes: through the service's own pool, as Bob
    # or as nobody, none of Alice's rows exist; as Alice they do.
    async with acting_as(service.pool, bob) as conn:
        assert await conn.fetchval("SELECT count(*) FROM analytics_metrics WHERE subject_id = $1", str(portfolio)) == 0
        assert await conn.fetchval("SELECT count(*) FROM portfolio_snapshots WHERE portfolio_id = $1", portfolio) == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await conn.execute(
                "INSERT INTO analytics_metrics (time, subject_kind, subject_id, user_id, metric, time_window, value) "
                "VALUES (now(), 'portfolio', $1, $2, 'return', '1d', 0.5)",
                str(portfolio),
                alice,
            )
    async with acting_as(service.pool, bob) as conn:
        # Not even in his own name, for a portfolio that is not his.
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await conn.execute(
                "INSERT INTO analytics_metrics (time, subject_kind, subject_id, user_id, metric, time_window, value) "
                "VALUES (now(), 'portfolio', $1, $2, 'return', '1d', 0.5)",
                str(portfolio),
                bob,
            )
    async with service.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM analytics_metrics WHERE user_id IS NOT NULL") == 0
        # The chunks are out of the role's reach (they have the grants, not the policies).
        assert not await conn.fetchval("SELECT has_schema_privilege('analytics_metric_chunks', 'USAGE')")
    async with acting_as(service.pool, alice) as conn:
        assert await conn.fetchval("SELECT count(*) FROM analytics_metrics WHERE subject_id = $1", str(portfolio)) > 0
    async with service.pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM analytics_metrics")
