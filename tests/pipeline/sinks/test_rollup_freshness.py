"""``nexanest_rollup_freshness_seconds`` means the same on both editions: now
minus the newest committed tick that the bars of ``ohlcv_<resolution>`` include.

On the Apache edition the consumer merges the bars itself; on the community
edition (its own cluster, 5434) continuous aggregates with real-time aggregation
include the tick at commit. Each test commits ticks two minutes old through the
real ``TimescaleSink``, reads the gauge as Prometheus would (its age at scrape
time) and checks in the view that the bar of the newest tick is there, with
that tick's close: the gauge never claims a bar the view does not show. A
materialized-only aggregate (no real-time part) gets no series.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest

from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.pipeline import metrics
from nexanest.pipeline.edition import detect_edition
from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.ohlcv import CAGGS, RESOLUTIONS, VIEWS, Resolution
from nexanest.pipeline.sinks.ohlcv_mode import CaggWatermarks, resolutions_current_at_commit, resolve_rollups
from nexanest.pipeline.sinks.timescale import TimescaleSink
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.producers.publisher import publish_feed
from nexanest.schemas.ticks import Tick

pytestmark = pytest.mark.integration


def ticks(source: str, newest_ns: int) -> list[tuple[Tick, int, int]]:
    """Ten ticks of one symbol, a second apart, the newest at ``newest_ns`` with price 100 + 9."""
    return [
        (
            Tick(
                symbol=f"F{source[-8:]}",
                exchange="XNAS",
                price_e9=(100 + i) * 10**9,
                size_e9=10**9,
                ts_ns=newest_ns - (9 - i) * 10**9,
                source=source,
                seq=i,
                bid_e9=None,
                ask_e9=None,
            ),
            0,
            i,
        )
        for i in range(10)
    ]


def freshness() -> dict[str, float]:
    found = {r: metrics.ROLLUP_FRESHNESS_SECONDS.value((r,)) for r in RESOLUTIONS}
    return {r: v for r, v in found.items() if v is not None}


@pytest.fixture
def no_freshness_yet() -> None:
    """The gauge is per process: forget what earlier tests of the session observed."""
    metrics.ROLLUP_FRESHNESS_SECONDS.forget((r,) for r in RESOLUTIONS)


async def commit(pool: asyncpg.Pool, source: str, newest_ns: int) -> tuple[Resolution, ...]:
    """Commit ten ticks through the sink the consumer would build here; the resolutions it reports at start."""
    mode = await resolve_rollups(pool, "auto")
    fresh = await resolutions_current_at_commit(pool, mode)
    sink = TimescaleSink(
        pool,
        None,
        rollups=mode == "pipeline",
        fresh_resolutions=fresh,
        watermarks=CaggWatermarks() if mode == "native" else None,
    )
    sink.write(ticks(source, newest_ns))
    assert await sink.flush() == 10
    return fresh


async def newest_close(pool: asyncpg.Pool, resolution: Resolution, source: str, newest_ns: int) -> Decimal | None:
    """The close of the symbol's bar holding ``newest_ns`` in the view (None: no bar)."""
    value = await pool.fetchval(
        f"SELECT close FROM {VIEWS[resolution]}"
        " WHERE symbol = $1 AND bucket <= to_timestamp($2) ORDER BY bucket DESC LIMIT 1",
        f"F{source[-8:]}",
        newest_ns / 1e9,
    )
    return None if value is None else Decimal(value)


async def commit_and_check(pool: asyncpg.Pool, source: str, expected: tuple[Resolution, ...], age_s: int) -> None:
    newest_ns = time.time_ns() - age_s * 10**9
    assert await commit(pool, source, newest_ns) == expected
    ages = freshness()
    assert set(ages) == set(expected)
    for age in ages.values():
        assert age_s <= age < age_s + 30, ages
    for resolution in expected:  # the newest tick is in the bar the gauge counts
        assert await newest_close(pool, resolution, source, newest_ns) == Decimal("109"), resolution


@pytest.mark.usefixtures("no_freshness_yet")
async def test_pipeline_rollups_report_every_resolution_at_commit(timescale_pool: asyncpg.Pool, test_id: str) -> None:
    assert await detect_edition(timescale_pool) == "apache"
    await commit_and_check(timescale_pool, f"fresh-{test_id}", RESOLUTIONS, 120)


@pytest.fixture
async def one_materialized_only(community_admin_pool: asyncpg.Pool) -> AsyncIterator[str]:
    """ohlcv_1d_cagg without real-time aggregation for the test (the session's own community database)."""
    cagg = CAGGS["1d"]
    await community_admin_pool.execute(f"ALTER MATERIALIZED VIEW {cagg} SET (timescaledb.materialized_only = true)")
    try:
        yield cagg
    finally:
        await community_admin_pool.execute(
            f"ALTER MATERIALIZED VIEW {cagg} SET (timescaledb.materialized_only = false)"
        )


@pytest.mark.timescale_license
@pytest.mark.usefixtures("no_freshness_yet")
async def test_real_time_continuous_aggregates_report_at_commit(community_pool: asyncpg.Pool, test_id: str) -> None:
    assert await detect_edition(community_pool) == "timescale"
    await commit_and_check(community_pool, f"fresh-{test_id}", RESOLUTIONS, 5)


@pytest.mark.timescale_license
@pytest.mark.usefixtures("no_freshness_yet")
async def test_a_materialized_only_aggregate_gets_no_series(
    community_pool: asyncpg.Pool, one_materialized_only: str, test_id: str
) -> None:
    await commit_and_check(community_pool, f"fresh-{test_id}", ("1m", "5m", "1h"), 5)
    assert metrics.ROLLUP_FRESHNESS_SECONDS.value(("1d",)) is None


@pytest.fixture
async def no_1m_refresh_policy(community_admin_pool: asyncpg.Pool) -> AsyncIterator[None]:
    """The 1m refresh policy paused (the session's own community database): a run
    during the test would materialize the test's late tick before it is looked for."""
    job = await community_admin_pool.fetchval(
        "SELECT j.job_id FROM timescaledb_information.jobs j"
        " JOIN timescaledb_information.continuous_aggregates c"
        "   ON (j.hypertable_schema, j.hypertable_name) = (c.materialization_hypertable_schema,"
        "                                                  c.materialization_hypertable_name)"
        " WHERE c.view_name = $1 AND j.proc_name = 'policy_refresh_continuous_aggregate'",
        CAGGS["1m"],
    )
    assert job is not None
    await community_admin_pool.execute("SELECT alter_job($1, scheduled => false)", job)
    try:
        yield
    finally:
        await community_admin_pool.execute("SELECT alter_job($1, scheduled => true)", job)


@pytest.mark.timescale_license
@pytest.mark.usefixtures("no_freshness_yet", "no_1m_refresh_policy")
async def test_a_tick_below_the_watermark_is_not_counted(
    community_pool: asyncpg.Pool, community_admin_pool: asyncpg.Pool, test_id: str
) -> None:
    """The 1m aggregate materialized to 2.5 hours ago; a tick three hours old is
    committed under its watermark: the view lacks it, so the gauge does not count it."""
    now_s = time.time()
    # Something to materialize 2.5 hours ago: the watermark becomes the end of the
    # newest bucket materialized (a refresh over nothing leaves it where it was).
    earlier = TimescaleSink(community_pool, None)
    earlier.write(ticks(f"early-{test_id}", int((now_s - 2.5 * 3600) * 1e9)))
    assert await earlier.flush() == 10
    await community_admin_pool.execute(
        f"CALL refresh_continuous_aggregate('{CAGGS['1m']}', to_timestamp($1::float8), to_timestamp($2::float8))",
        now_s - 4 * 3600,
        now_s - 2 * 3600,
    )
    source = f"fresh-{test_id}"
    newest_ns = int((now_s - 3 * 3600) * 1e9)
    assert await commit(community_pool, source, newest_ns) == RESOLUTIONS
    assert freshness() == {}
    assert await newest_close(community_pool, "1m", source, newest_ns) is None  # not in the bars: the gauge is right
    assert await CaggWatermarks().covering(community_pool, time.time_ns(), RESOLUTIONS) == RESOLUTIONS


async def test_no_rollups_no_series(timescale_pool: asyncpg.Pool) -> None:
    assert await resolutions_current_at_commit(timescale_pool, "off") == ()


# --- the consumer as it runs: the sink it wires on each edition ----------------------


@pytest.mark.parametrize("edition", ["apache", pytest.param("timescale", marks=pytest.mark.timescale_license)])
@pytest.mark.usefixtures("no_freshness_yet")
async def test_the_consumer_reports_every_resolution_on_both_editions(
    request: pytest.FixtureRequest, isolated: Settings, edition: str, test_id: str
) -> None:
    """``run_consumer`` on fresh ticks: all four resolutions, seconds old, whichever
    edition keeps the bars (the community one: the test's topic into the
    community cluster's test database)."""
    settings = isolated
    if edition == "timescale":
        community: Settings = request.getfixturevalue("community")
        settings = isolated.model_copy(update={"timescale": community.timescale})
    config = SyntheticConfig(
        symbols=3, rate=100, count=300, seed=13, start_ns=time.time_ns() - 3 * 10**9, source=f"fr-{test_id}",
        paced=False,
    )  # fmt: skip
    assert await publish_feed(settings.kafka, SyntheticFeed(config), config.source) == 300
    stats = await run_consumer(settings, asyncio.Event(), until_idle_s=2.0)
    assert stats.written == 300
    ages = freshness()
    assert set(ages) == set(RESOLUTIONS), ages
    assert all(0 < age < 60 for age in ages.values()), ages
