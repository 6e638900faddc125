"""Symbol metrics against the real TimescaleDB (integration): ticks go in through
the pipeline's sink (bars kept by the consumer's rollups on the Apache edition,
by continuous aggregates on the community edition), and the figures equal
numpy's computed from the ticks themselves, on both editions."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import numpy as np
import pytest

from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.ohlcv import CAGGS, RESOLUTIONS
from nexanest.pipeline.sinks.timescale import TimescaleSink
from nexanest.schemas.ticks import Tick
from nexanest.services.analytics.compute import Parameters, compute_portfolios, compute_symbols
from nexanest.services.analytics.metrics import RESOLUTION_WIDTHS, Bar, Resolution
from tests.conftest import COMMUNITY_TEST_DATABASE, community_dsn
from tests.services.analytics.conftest import Service, Snapshot, write_snapshots
from tests.services.analytics.reference import expected_symbol

pytestmark = pytest.mark.integration

#: Midnight: every window starts on a bucket boundary of its resolution, so the
#: bars inside a window hold exactly the window's ticks (VWAP from ticks, below).
END = datetime(2025, 7, 20, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ticks_of(symbol: str, source: str, seed: int) -> list[Tick]:
    """One tick a day back to before 1 January, two an hour for nine days, two a
    minute for the last 26 hours; bid and ask on most of them."""
    rng = np.random.default_rng(seed)
    times = [END - timedelta(days=k, hours=5) for k in range(220, 9, -1)]
    times += [END - timedelta(hours=k, minutes=m) for k in range(9 * 24, 26, -1) for m in (40, 10)]
    times += [END - timedelta(minutes=k, seconds=s) for k in range(26 * 60, 0, -1) for s in (50, 20)]
    prices = 100 * np.cumprod(1 + rng.normal(0, 0.002, len(times)))
    ticks = []
    for n, (at, price) in enumerate(zip(times, prices, strict=True)):
        price_e9 = int(round(price, 9) * 10**9)
        half_spread_e9 = int(rng.integers(1, 5_000)) * 10**4
        quoted = rng.random() > 0.2
        ticks.append(
            Tick(
                symbol=symbol,
                exchange="XTST",
                price_e9=price_e9,
                size_e9=int(rng.integers(1, 1000)) * 10**7,
                ts_ns=(at - EPOCH) // timedelta(microseconds=1) * 1000,
                source=source,
                seq=n,
                bid_e9=price_e9 - half_spread_e9 if quoted else None,
                ask_e9=price_e9 + half_spread_e9 if quoted else None,
            )
        )
    return ticks


def time_of(tick: Tick) -> datetime:
    return EPOCH + timedelta(microseconds=tick.ts_ns // 1000)


def bars_from_ticks(ticks: list[Tick]) -> dict[Resolution, list[Bar]]:
    """numpy's bars: per epoch-aligned bucket, the last tick's price, the summed
    size, and sum(price * size) / sum(size) rounded to 9 places (the views' rule)."""
    stamps = np.array([t.ts_ns // 1000 for t in ticks]) / 1e6
    price = np.array([t.price_e9 / 1e9 for t in ticks])
    size = np.array([t.size_e9 / 1e9 for t in ticks])
    out: dict[Resolution, list[Bar]] = {}
    for resolution, width in RESOLUTION_WIDTHS.items():
        buckets = np.floor(stamps / width.total_seconds()) * width.total_seconds()
        bars = []
        for b in np.unique(buckets):
            inside = buckets == b
            volume = float(np.sum(size[inside]))
            vwap = round(float(np.sum(price[inside] * size[inside]) / volume), 9)
            bars.append(Bar(datetime.fromtimestamp(b, UTC), float(price[inside][-1]), volume, vwap))
        out[resolution] = bars
    return out


def check(answer: dict[str, dict[str, float]], ticks: list[Tick]) -> None:
    got = {(metric, window): value for window, values in answer.items() for metric, value in values.items()}
    expected = expected_symbol(bars_from_ticks(ticks), end=END)
    last_hour = [t for t in ticks if time_of(t) >= END - timedelta(hours=1) and t.bid_e9 is not None]
    assert last_hour
    expected["avg_spread", "1h"] = float(np.mean([(t.ask_e9 - t.bid_e9) / 1e9 for t in last_hour]))  # type: ignore[operator]
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert math.isclose(got[key], value, rel_tol=1e-9, abs_tol=1e-12), (key, got[key], value)
    # The window's VWAP from its ticks, not from bars: within the bars' rounding.
    for window, start in (("1d", END - timedelta(days=1)), ("ytd", datetime(2025, 1, 1, tzinfo=UTC))):
        inside = [t for t in ticks if time_of(t) >= start]
        p = np.array([t.price_e9 / 1e9 for t in inside])
        s = np.array([t.size_e9 / 1e9 for t in inside])
        assert math.isclose(got["vwap", window], float(np.sum(p * s) / np.sum(s)), abs_tol=1e-9)


async def write(pool: asyncpg.Pool, ticks: list[Tick], *, rollups: bool) -> None:
    sink = TimescaleSink(pool, None, rollups=rollups)
    sink.write([(t, 0, n) for n, t in enumerate(ticks)])
    assert await sink.flush() == len(ticks)


async def test_symbol_figures_match_numpy_on_the_ticks(
    service: Service, timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    symbol = f"AN{test_id.upper()}"
    ticks = ticks_of(symbol, f"analytics-{test_id}", 5)
    await write(timescale_pool, ticks, rollups=True)
    computed = await compute_symbols(service.pool, service.cache, [symbol, f"{symbol}X"], at=END)
    assert set(computed) == {symbol}  # a symbol without bars gets nothing
    check(computed[symbol].model_dump()["metrics"], ticks)

    headers = service.auth(uuid.uuid4())
    cached = await service.http.get(f"/analytics/symbols/{symbol}", headers=headers)
    assert cached.status_code == 200, cached.text
    check(cached.json()["metrics"], ticks)
    await service.cache._client.delete(service.cache.symbol_key(symbol))
    stored = await service.http.get(f"/analytics/symbols/{symbol}", headers=headers)
    assert stored.json() == cached.json()
    history = await service.http.get(
        f"/analytics/symbols/{symbol}/metrics",
        params={"name": "vwap", "from": "2025-07-19T00:00:00Z", "to": "2025-07-21T00:00:00Z"},
        headers=headers,
    )
    assert [p["window"] for p in history.json()["points"]] == ["1d", "1h", "1m", "1w", "ytd"]

    for method in ("GET", "POST"):
        path = f"/analytics/symbols/{symbol}X" + ("/compute" if method == "POST" else "")
        missing = await service.http.request(method, path, headers=headers)
        assert missing.status_code == 404, missing.text
        assert missing.headers["content-type"] == "application/problem+json"
    bad = await service.http.get("/analytics/symbols/not-a-symbol", headers=headers)
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"


@pytest.mark.timescale_license
async def test_the_community_edition_gives_the_same_figures(
    service: Service,
    community: Settings,
    community_pool: asyncpg.Pool,
    community_admin_pool: asyncpg.Pool,
    timescale_pool: asyncpg.Pool,
    users: list[uuid.UUID],
    test_id: str,
) -> None:
    """Migrated there too (the ``community`` fixture runs every timescale
    migration), read as the analytics role through the continuous aggregates."""
    symbol = f"AN{test_id.upper()}C"
    ticks = ticks_of(symbol, f"analytics-{test_id}", 6)
    await write(timescale_pool, ticks, rollups=True)
    await write(community_pool, ticks, rollups=False)
    for resolution in RESOLUTIONS:  # other tests' refreshes may have passed these old buckets
        await community_admin_pool.execute(
            f"CALL refresh_continuous_aggregate('{CAGGS[resolution]}',"
            f" TIMESTAMPTZ '{(END - timedelta(days=230)).isoformat()}', TIMESTAMPTZ '{END.isoformat()}')"
        )
    # And a portfolio, through the worker's SECURITY DEFINER function there too.
    portfolio, owner = uuid.uuid4(), users[0]
    snapshots = [Snapshot(END - timedelta(minutes=k), Decimal(1000 + k % 9), Decimal(1000)) for k in range(90, 0, -1)]
    for settings in (service.settings, community):
        await write_snapshots(settings, portfolio, owner, snapshots)
    apache = await compute_symbols(service.pool, None, [symbol], at=END)
    apache_portfolio = await compute_portfolios(
        service.pool, None, Parameters(0.02, None), at=END, portfolio_ids=[portfolio]
    )
    role_dsn = community_dsn(community.services.analytics_timescale_dsn, COMMUNITY_TEST_DATABASE)
    pool = await asyncpg.create_pool(role_dsn.get_secret_value(), min_size=1, max_size=2)
    try:
        assert await pool.fetchval("SELECT current_user") == "nexanest_analytics"
        native = await compute_symbols(pool, None, [symbol], at=END)
        native_portfolio = await compute_portfolios(
            pool, None, Parameters(0.02, None), at=END, portfolio_ids=[portfolio]
        )
    finally:
        await pool.close()
    check(native[symbol].model_dump()["metrics"], ticks)
    assert native[symbol].model_dump()["metrics"] == apache[symbol].model_dump()["metrics"]
    assert native_portfolio[portfolio].metrics["1h"]["return"] == pytest.approx(1001 / 1006 - 1, rel=1e-9)
    assert native_portfolio[portfolio].model_dump() == apache_portfolio[portfolio].model_dump()
