"""OHLCV bars: the in-batch aggregation (unit), and against the real TimescaleDB
every bar at every resolution equals a plain GROUP BY over ``stock_prices``
(integration: the Apache path on the Apache cluster, the native continuous
aggregates on the community edition's cluster)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexanest.ops.bars_repair import repair, repair_range
from nexanest.pipeline.edition import detect_edition
from nexanest.pipeline.errors import ConfigurationError, RetryableError
from nexanest.pipeline.offsets import OffsetStore
from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.ohlcv import CAGGS, RESOLUTIONS, VIEWS, Bar, Resolution, minute_bars
from nexanest.pipeline.sinks.ohlcv_mode import resolve_rollups
from nexanest.pipeline.sinks.timescale import COLUMNS, TimescaleSink, stock_price_row
from nexanest.schemas.ticks import Tick
from tests.pipeline.sinks.ohlcv_reference import all_resolutions, merge

# A few minutes before midnight UTC: dense ticks here cross 1m, 5m, 1h and 1d boundaries.
BASE = datetime(2025, 1, 6, 23, 57, tzinfo=UTC)
BASE_NS = int(BASE.timestamp()) * 10**9
US = 1_000
MINUTE_NS = 60 * 10**9


def tick(symbol: str, source: str, seq: int, ts_ns: int, price_e9: int, size_e9: int = 10**9) -> Tick:
    return Tick(symbol=symbol, exchange="XTST", price_e9=price_e9, size_e9=size_e9, ts_ns=ts_ns, source=source, seq=seq)


def row(t: Tick, offset: int = 0) -> Any:
    return stock_price_row(t, partition=0, offset=offset)


def entry(t: Tick, offset: int = 0) -> tuple[Tick, int, int]:
    """What the consumer hands TimescaleSink.write."""
    return (t, 0, offset)


# -- unit: the Python side ----------------------------------------------------


def test_row_positions_match_the_copy_columns() -> None:
    assert [COLUMNS[i] for i in (0, 1, 2, 3, 8)] == ["time", "symbol", "price", "size", "source_seq"]


def test_open_and_close_follow_tick_time_then_seq_not_arrival() -> None:
    t0 = BASE_NS + 10 * 10**9
    rows = [
        row(tick("A", "s", 5, t0 + 20 * 10**9, 103_000_000_000)),  # arrives first, is the close
        row(tick("A", "s", 9, t0, 101_000_000_000)),  # same time as the next: seq 7 opens
        row(tick("A", "s", 7, t0, 102_000_000_000)),
        row(tick("A", "s", 3, t0 + 5 * 10**9, 99_000_000_000, size_e9=2 * 10**9)),
    ]
    (key, bar), *_ = minute_bars(rows).items()
    assert key == ("A", BASE)
    assert (bar.open, bar.open_seq) == (Decimal("102"), 7)
    assert (bar.close, bar.close_seq) == (Decimal("103"), 5)
    assert (bar.high, bar.low) == (Decimal("103"), Decimal("99"))
    assert bar.trade_count == 4
    assert bar.volume == Decimal(5)
    assert bar.pv == Decimal(103 + 101 + 102 + 2 * 99)


def test_sums_stay_exact_beyond_the_default_decimal_precision() -> None:
    big = 10**20 - 1  # the largest NUMERIC(20, 9): 20 significant digits, products of 40
    rows = [row(tick("A", "s", i, BASE_NS + i, big, size_e9=big)) for i in range(3)]
    bar = minute_bars(rows)[("A", BASE)]
    # 3 * (1e11 - 1e-9)^2, all 41 digits (the default context keeps 28)
    assert bar.pv == Decimal("29999999999999999999400.000000000000000003")
    assert bar.volume == Decimal("299999999999.999999997")


def test_coarser_resolutions_fold_the_minute_bars() -> None:
    """The reference fold (ohlcv_reference.py) that test_ohlcv_upsert.py compares production with."""
    # Minutes 23:57 .. 00:02: two days, two hours, two 5m buckets.
    rows = [row(tick("A", "s", m, BASE_NS + m * MINUTE_NS, (100 + m) * 10**9)) for m in range(6)]
    bars = all_resolutions(minute_bars(rows))
    assert len(bars["1m"]) == 6
    day1, day2 = BASE.replace(hour=0, minute=0), BASE.replace(hour=0, minute=0) + timedelta(days=1)
    assert sorted(k[1] for k in bars["5m"]) == [BASE.replace(minute=55), day2]
    assert sorted(k[1] for k in bars["1h"]) == [BASE.replace(minute=0), day2]
    assert sorted(k[1] for k in bars["1d"]) == [day1, day2]
    first_day = bars["1d"][("A", day1)]
    assert (first_day.open, first_day.close, first_day.trade_count) == (Decimal(100), Decimal(102), 3)
    second_day = bars["1d"][("A", day2)]
    assert (second_day.open, second_day.close, second_day.trade_count) == (Decimal(103), Decimal(105), 3)
    # Folding copies: the 1m bars are not changed by what was merged into the coarser ones.
    assert bars["1m"][("A", BASE)].trade_count == 1


def test_merge_is_order_independent() -> None:
    """The reference merge (the Python twin of production's ON CONFLICT merge)."""
    t = BASE
    a = Bar(
        Decimal(5), t, 2, Decimal(9), Decimal(4), Decimal(6), t + timedelta(seconds=30), 1, Decimal(1), 2, Decimal(11)
    )
    b = Bar(
        Decimal(7), t, 1, Decimal(8), Decimal(3), Decimal(8), t + timedelta(seconds=30), 4, Decimal(2), 3, Decimal(20)
    )
    ab, ba = replace(a), replace(b)
    merge(ab, b)
    merge(ba, a)
    assert ab == ba
    assert (ab.open, ab.open_seq, ab.close, ab.close_seq) == (Decimal(7), 1, Decimal(8), 4)
    assert (ab.high, ab.low, ab.volume, ab.trade_count, ab.pv) == (Decimal(9), Decimal(3), Decimal(3), 5, Decimal(31))


def test_repair_range_widens_to_whole_utc_days() -> None:
    lo, hi = repair_range(BASE, BASE + timedelta(minutes=5))
    assert (lo, hi) == (datetime(2025, 1, 6, tzinfo=UTC), datetime(2025, 1, 8, tzinfo=UTC))
    midnight = datetime(2025, 1, 6, tzinfo=UTC)
    assert repair_range(midnight, midnight + timedelta(days=1)) == (midnight, midnight + timedelta(days=1))
    assert repair_range(midnight, midnight) == (midnight, midnight + timedelta(days=1))


class _License:
    def __init__(self, value: str | None, has_rollup_tables: bool = True) -> None:
        self._value = value
        self._tables = has_rollup_tables

    async def fetchval(self, query: str, *args: object) -> object:
        if "timescaledb.license" in query:
            return self._value
        return "ohlcv_1m_rollup" if self._tables else None


async def test_auto_picks_by_license_and_impossible_choices_are_refused() -> None:
    assert await resolve_rollups(_License("apache"), "auto") == "pipeline"
    assert await resolve_rollups(_License(None), "auto") == "pipeline"
    assert await resolve_rollups(_License("timescale"), "auto") == "native"
    assert await resolve_rollups(_License("timescale"), "off") == "off"
    with pytest.raises(ConfigurationError, match="continuous aggregates"):
        await resolve_rollups(_License("apache"), "native")
    with pytest.raises(ConfigurationError, match="nexanest migrate"):
        await resolve_rollups(_License("apache", has_rollup_tables=False), "pipeline")


# -- integration: against TimescaleDB -----------------------------------------

# The oracle: a plain GROUP BY over the raw ticks, open/close by an ordered
# aggregate (independent of the tick_order()/first() the implementations use).
_REFERENCE = """
SELECT time_bucket($1::interval, time) AS bucket, symbol,
       (array_agg(price ORDER BY time, source_seq))[1] AS open,
       max(price) AS high, min(price) AS low,
       (array_agg(price ORDER BY time DESC, source_seq DESC))[1] AS close,
       sum(size) AS volume, count(*) AS trade_count,
       (sum(price * size) / NULLIF(sum(size), 0))::NUMERIC(20, 9) AS vwap
  FROM stock_prices
 WHERE symbol = ANY($3::text[]) AND source = $2  -- by symbol: stock_prices has no index on source
 GROUP BY 1, 2
 ORDER BY symbol, bucket
"""
_INTERVALS: dict[Resolution, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
_SURFACE = "bucket, symbol, open, high, low, close, volume, trade_count, vwap"


async def bars_of(pool: asyncpg.Pool, resolution: Resolution, symbols: Sequence[str]) -> list[tuple[Any, ...]]:
    rows = await pool.fetch(
        f"SELECT {_SURFACE} FROM {VIEWS[resolution]} WHERE symbol = ANY($1::text[]) ORDER BY symbol, bucket",
        list(symbols),
    )
    return [tuple(r) for r in rows]


async def reference_of(
    pool: asyncpg.Pool, resolution: Resolution, source: str, symbols: Sequence[str]
) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await pool.fetch(_REFERENCE, _INTERVALS[resolution], source, list(symbols))]


async def assert_bars_match_ticks(pool: asyncpg.Pool, source: str, symbols: Sequence[str]) -> None:
    for resolution in RESOLUTIONS:
        expected = await reference_of(pool, resolution, source, symbols)
        assert expected, "the example wrote no ticks"
        assert await bars_of(pool, resolution, symbols) == expected, resolution


@pytest.fixture(scope="session")
async def admin_pool(migrated: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The owner role: repair, and refreshing continuous aggregates."""
    pool = await asyncpg.create_pool(migrated.timescale.admin_dsn.get_secret_value(), min_size=1, max_size=2)
    assert pool is not None
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def edition(timescale_pool: asyncpg.Pool) -> str:
    return await detect_edition(timescale_pool)


@pytest.fixture(scope="session")
def apache_edition(edition: str) -> None:
    """``timescale_pool`` reaches the Apache cluster; another edition there is a broken set-up, not a skip
    (the community edition's tests use ``community_pool``, on its own cluster)."""
    assert edition == "apache", f"the pipeline's rollups serve the Apache edition; this server's is {edition}"


# One tick: (symbol index, time offset from BASE in us, price x 1e9, size x 1e9).
_OFFSET_US = st.one_of(
    st.integers(0, 6 * 60 * 10**6),  # dense, across midnight
    # spread over five days, a few hours of each (bounded chunk count in stock_prices)
    st.builds(
        lambda day, hour, us: (day * 24 + hour) * 3600 * 10**6 + us,
        st.integers(-2, 2),
        st.sampled_from([0, 1, 13]),
        st.integers(0, 3600 * 10**6 - 1),
    ),
    st.sampled_from([0, 59_999_999, 60_000_000, 180_000_000, 183_000_000]),  # bucket edges, equal times
)
_PRICE_E9 = st.one_of(st.integers(1, 10**12), st.integers(1, 10**20 - 1))
_SIZE_E9 = st.one_of(st.just(0), st.integers(1, 10**12), st.integers(0, 10**20 - 1))
_TICKS = st.lists(
    st.tuples(
        st.integers(0, 2),
        _OFFSET_US,
        st.integers(0, 999),  # ns below the stored microsecond: different ns, equal stored time
        _PRICE_E9,
        _SIZE_E9,
        st.integers(-(2**63), 2**63 - 1),  # source_seq, unique
    ),
    min_size=1,
    max_size=60,
    unique_by=lambda t: t[5],
)


async def ingest_stream(pool: asyncpg.Pool, data: st.DataObject, *, rollups: bool) -> tuple[str, list[str]]:
    """Draw a tick stream, replay it out of order, with duplicates, in random
    batches through a TimescaleSink; return its source and symbols."""
    uid = uuid.uuid4().hex[:12]
    source = f"ohlcv-{uid}"
    symbols = [f"OH{uid.upper()}{i}" for i in range(3)]
    drawn = data.draw(_TICKS, label="ticks")
    ticks = [
        tick(symbols[s], source, seq, BASE_NS + offset_us * US + ns, price, size)
        for s, offset_us, ns, price, size, seq in drawn
    ]
    arrival = data.draw(st.permutations(ticks), label="arrival")
    for replayed in data.draw(st.lists(st.sampled_from(ticks), max_size=len(ticks)), label="replays"):
        arrival.insert(data.draw(st.integers(0, len(arrival)), label="replay at"), replayed)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(arrival) - 1)), max_size=6), label="cuts"))
    offsets = OffsetStore(pool, f"g-{uid}")
    sink = TimescaleSink(pool, offsets, rollups=rollups)
    await offsets.claim("ticks", [0])
    # A tick's first arrival is new; a replay goes in as the consumer hands it over
    # (a re-send with a header: looked up, skipped when stored, issue 15).
    seen: set[int] = set()
    for start, end in zip([0, *cuts], [*cuts, len(arrival)], strict=True):
        for offset, t in enumerate(arrival[start:end], start):
            (sink.write_checked if t.seq in seen else sink.write)([entry(t, offset)])
            seen.add(t.seq)
        offsets.advance({("ticks", 0): end})
        await sink.flush()
    stored = await pool.fetchval(
        "SELECT count(*) FROM stock_prices WHERE symbol = ANY($2::text[]) AND source = $1", source, symbols
    )
    assert stored == len(ticks)  # every tick once, replays skipped
    return source, symbols


_EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.integration
@pytest.mark.usefixtures("apache_edition")
@_EXAMPLES
@given(data=st.data())
async def test_pipeline_bars_equal_a_group_by_over_the_ticks(timescale_pool: asyncpg.Pool, data: st.DataObject) -> None:
    source, symbols = await ingest_stream(timescale_pool, data, rollups=True)
    await assert_bars_match_ticks(timescale_pool, source, symbols)


@pytest.mark.integration
@pytest.mark.timescale_license
@_EXAMPLES
@given(data=st.data())
async def test_native_bars_equal_a_group_by_over_the_ticks(
    community_pool: asyncpg.Pool, community_admin_pool: asyncpg.Pool, data: st.DataObject
) -> None:
    """The continuous aggregates of the community edition, on its own cluster."""
    source, symbols = await ingest_stream(community_pool, data, rollups=False)
    # The policies may have materialized past our (old) ticks' buckets already;
    # refresh bottom-up as the policies would, then real-time aggregation covers the rest.
    for resolution in RESOLUTIONS:
        await community_admin_pool.execute(
            f"CALL refresh_continuous_aggregate('{CAGGS[resolution]}',"
            f" TIMESTAMPTZ '{(BASE - timedelta(days=4)).isoformat()}',"
            f" TIMESTAMPTZ '{(BASE + timedelta(days=4)).isoformat()}')"
        )
    await assert_bars_match_ticks(community_pool, source, symbols)


@pytest.mark.integration
@pytest.mark.usefixtures("apache_edition")
async def test_a_late_tick_corrects_bars_that_closed_long_ago(timescale_pool: asyncpg.Pool, test_id: str) -> None:
    source, symbol = f"late-{test_id}", f"LATE{test_id.upper()}"
    offsets = OffsetStore(timescale_pool, f"g-{test_id}")
    sink = TimescaleSink(timescale_pool, offsets, rollups=True)
    ten = BASE_NS - 14 * 3600 * 10**9 + 3 * MINUTE_NS  # 10:00 on BASE's day
    s = 10**9
    sink.write(
        [
            entry(tick(symbol, source, 10, ten + 10 * s, 100 * s)),
            entry(tick(symbol, source, 11, ten + 50 * s, 101 * s)),
            entry(tick(symbol, source, 12, ten + 7 * MINUTE_NS, 105 * s)),
            entry(tick(symbol, source, 13, ten + 2 * 3600 * s, 107 * s)),
            entry(tick(symbol, source, 14, ten + 30 * 3600 * s, 110 * s)),  # the next day: every bar above closed
        ]
    )
    await sink.flush()
    before = {r: await bars_of(timescale_pool, r, [symbol]) for r in RESOLUTIONS}
    assert before["1m"][0][2:6] == (Decimal(100), Decimal(101), Decimal(100), Decimal(101))

    # A day later the feed delivers three ticks of 10:00 it had lost.
    sink.write(
        [
            entry(tick(symbol, source, 3, ten + 10 * s, 98 * s)),  # same time as the open, lower seq: the new open
            entry(tick(symbol, source, 15, ten + 55 * s, 120 * s)),  # after the close: the new close and high
            entry(tick(symbol, source, 16, ten + 30 * s, 90 * s)),  # the new low
        ]
    )
    await sink.flush()
    after = {r: await bars_of(timescale_pool, r, [symbol]) for r in RESOLUTIONS}
    ohlc = (Decimal(98), Decimal(120), Decimal(90), Decimal(120))
    assert after["1m"][0][2:6] == ohlc
    assert after["1m"][0][7] == 5
    assert after["5m"][0][2:6] == ohlc
    assert after["1h"][0][2:6] == (Decimal(98), Decimal(120), Decimal(90), Decimal(105))
    assert after["1d"][0][2:6] == (Decimal(98), Decimal(120), Decimal(90), Decimal(107))
    assert after["1d"][0][7] == before["1d"][0][7] + 3
    assert after["1d"][1] == before["1d"][1]  # the next day is untouched
    await assert_bars_match_ticks(timescale_pool, source, [symbol])


@pytest.mark.integration
@pytest.mark.usefixtures("apache_edition")
async def test_a_replayed_batch_adds_nothing_to_the_bars(timescale_pool: asyncpg.Pool, test_id: str) -> None:
    source, symbol = f"replay-{test_id}", f"REPLAY{test_id.upper()}"
    offsets = OffsetStore(timescale_pool, f"g-{test_id}")
    sink = TimescaleSink(timescale_pool, offsets, rollups=True)
    batch = [entry(tick(symbol, source, i, BASE_NS + i * 7 * 10**9, (100 + i) * 10**9)) for i in range(20)]
    sink.write(batch)
    assert await sink.flush() == 20
    first = {r: await bars_of(timescale_pool, r, [symbol]) for r in RESOLUTIONS}
    # 10 again (re-sent: looked up), 1 new.
    sink.write_checked([*batch[10:], entry(tick(symbol, source, 20, BASE_NS + 5 * 10**9, 99 * 10**9))])
    assert await sink.flush() == 1  # only the new tick counts
    again = {r: await bars_of(timescale_pool, r, [symbol]) for r in RESOLUTIONS}
    assert sum(b[7] for b in again["1d"]) == sum(b[7] for b in first["1d"]) + 1
    await assert_bars_match_ticks(timescale_pool, source, [symbol])


@pytest.mark.integration
@pytest.mark.usefixtures("apache_edition")
async def test_a_batch_that_fails_late_in_its_transaction_leaves_no_bars(
    migrated: Settings, timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    """The bars roll back with the rows (here the offsets, moved after the
    upserts, time out behind a lock), and the retried batch counts its ticks once."""
    from tests.pipeline.sinks.test_timescale import offsets_row_locked

    source, symbol, group = f"fail-{test_id}", f"FAIL{test_id.upper()}", f"g-{test_id}"
    impatient = await asyncpg.create_pool(migrated.timescale.dsn.get_secret_value(), min_size=1, command_timeout=0.5)
    try:
        offsets = OffsetStore(impatient, group)
        sink = TimescaleSink(impatient, offsets, rollups=True)
        await offsets.claim("ticks", [0])
        sink.write([entry(tick(symbol, source, i, BASE_NS + i * 10**9, (100 + i) * 10**9)) for i in range(5)])
        offsets.advance({("ticks", 0): 5})
        async with offsets_row_locked(timescale_pool, group):
            with pytest.raises(RetryableError):
                await sink.flush()
        assert await bars_of(timescale_pool, "1m", [symbol]) == []
        assert await sink.flush() == 5
    finally:
        await impatient.close()
    assert [b[7] for b in await bars_of(timescale_pool, "1m", [symbol])] == [5]
    await assert_bars_match_ticks(timescale_pool, source, [symbol])


@pytest.mark.integration
@pytest.mark.usefixtures("apache_edition")
async def test_repair_recomputes_a_range_from_the_ticks(
    timescale_pool: asyncpg.Pool, admin_pool: asyncpg.Pool, test_id: str
) -> None:
    source = f"repair-{test_id}"
    fixed, other = f"RPA{test_id.upper()}", f"RPB{test_id.upper()}"
    ticks = [
        tick(sym, source, i * 2 + j, BASE_NS + i * 97 * 10**9, (100 + i % 7) * 10**9, (i % 3) * 10**9)
        for i in range(40)
        for j, sym in enumerate((fixed, other))
    ]
    # Loaded without bars (rollups off, as a bulk load would be): repair builds them all.
    loader_offsets = OffsetStore(timescale_pool, f"g-{test_id}")
    loader = TimescaleSink(timescale_pool, loader_offsets, rollups=False)
    loader.write([entry(t) for t in ticks])
    await loader.flush()
    assert await bars_of(timescale_pool, "1m", [fixed, other]) == []
    async with admin_pool.acquire() as admin:
        report = await repair(admin, BASE, BASE + timedelta(hours=2))
    assert (report.start, report.end) == (datetime(2025, 1, 6, tzinfo=UTC), datetime(2025, 1, 8, tzinfo=UTC))
    assert report.bars["1m"] >= 2 * 40  # 97 s apart: one 1m bar per tick (and other tests' bars in range)
    await assert_bars_match_ticks(timescale_pool, source, [fixed, other])

    # Damage the bars of both symbols, then repair only one of them.
    async with admin_pool.acquire() as admin:
        for table in ("ohlcv_1m_rollup", "ohlcv_1h_rollup"):
            await admin.execute(f"UPDATE {table} SET high = high + 1 WHERE symbol = ANY($1::text[])", [fixed, other])
        await admin.execute("DELETE FROM ohlcv_1d_rollup WHERE symbol = $1", fixed)
        await admin.execute(
            "INSERT INTO ohlcv_5m_rollup SELECT symbol, bucket + INTERVAL '1 hour', open, open_time, open_seq, high,"
            " low, close, close_time, close_seq, volume, trade_count, pv FROM ohlcv_5m_rollup"
            " WHERE symbol = $1 ORDER BY bucket DESC LIMIT 1",
            fixed,
        )
        report = await repair(admin, BASE, BASE + timedelta(hours=2), symbol=fixed)
    assert report.symbol == fixed
    assert report.replaced["5m"] == report.bars["5m"] + 1  # the bogus bar is gone
    for resolution in RESOLUTIONS:
        expected = await reference_of(timescale_pool, resolution, source, [fixed])
        assert await bars_of(timescale_pool, resolution, [fixed]) == expected
    damaged = await bars_of(timescale_pool, "1m", [other])
    assert damaged != await reference_of(timescale_pool, "1m", source, [other])
