"""The Redis bar cache: after each commit the latest merged bar of each symbol and
resolution is in the analytics database, equal to the ``ohlcv_*`` views' latest
row, and a late tick's older bucket never replaces a newer cached bar."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as redis

from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.offsets import OffsetStore
from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.bar_cache import BarCacheSink, bucket_ns, read_bar
from nexanest.pipeline.sinks.ohlcv import RESOLUTIONS, VIEWS, Resolution, StoredBar
from nexanest.pipeline.sinks.timescale import TimescaleSink
from nexanest.producers.publisher import TickPublisher
from nexanest.schemas.ticks import Tick

# A few minutes before midnight UTC: the ticks cross 1m, 5m, 1h and 1d boundaries.
BASE = datetime(2025, 1, 6, 23, 57, tzinfo=UTC)
BASE_NS = int(BASE.timestamp()) * 10**9
MINUTE_NS = 60 * 10**9
S = 10**9


def tick(symbol: str, source: str, seq: int, ts_ns: int, price: int, size: int = 1) -> Tick:
    return Tick(
        symbol=symbol, exchange="XTST", price_e9=price * S, size_e9=size * S, ts_ns=ts_ns, source=source, seq=seq
    )


@pytest.fixture
async def analytics_redis(migrated: Settings, test_id: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(migrated.redis.url.get_secret_value(), db=migrated.redis.db_analytics)
    yield client
    keys = [k async for k in client.scan_iter(match=f"test:{test_id}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def _text(value: Decimal | None) -> str:
    return "" if value is None else format(value, "f")


async def latest_view_bar(pool: asyncpg.Pool, resolution: Resolution, symbol: str) -> asyncpg.Record:
    row = await pool.fetchrow(
        f"SELECT bucket, open, high, low, close, volume, trade_count, vwap FROM {VIEWS[resolution]}"
        " WHERE symbol = $1 ORDER BY bucket DESC LIMIT 1",
        symbol,
    )
    assert row is not None, (resolution, symbol)
    return row


def as_cached(row: Any) -> dict[str, str]:
    """A view row as the cache spells it (without updated_ns)."""
    return {
        "bucket": row["bucket"].isoformat(),
        "bucket_ns": str(bucket_ns(row["bucket"])),
        "open": _text(row["open"]),
        "high": _text(row["high"]),
        "low": _text(row["low"]),
        "close": _text(row["close"]),
        "volume": _text(row["volume"]),
        "trade_count": str(row["trade_count"]),
        "vwap": _text(row["vwap"]),
    }


async def cached(client: redis.Redis, prefix: str, resolution: Resolution, symbol: str) -> dict[str, str]:
    bar = await read_bar(client, resolution, symbol, prefix)
    assert int(bar.pop("updated_ns")) > 0
    return bar


async def assert_cache_equals_views(
    pool: asyncpg.Pool, client: redis.Redis, prefix: str, symbols: Sequence[str]
) -> None:
    for symbol in symbols:
        for resolution in RESOLUTIONS:
            want = as_cached(await latest_view_bar(pool, resolution, symbol))
            assert await cached(client, prefix, resolution, symbol) == want, (resolution, symbol)


@pytest.mark.integration
async def test_cached_bars_are_the_merged_latest_bars_and_late_ticks_never_move_them_back(
    timescale_pool: asyncpg.Pool, analytics_redis: redis.Redis, test_id: str
) -> None:
    source = f"barcache-{test_id}"
    a, b = f"BC{test_id.upper()}A", f"BC{test_id.upper()}B"
    prefix = f"test:{test_id}:bar:"
    timescale_offsets = OffsetStore(timescale_pool, f"g-{test_id}")
    timescale = TimescaleSink(timescale_pool, timescale_offsets, rollups=True)
    cache = BarCacheSink(analytics_redis, timescale, prefix)
    await timescale_offsets.claim("ticks", [0])
    offset = 0

    async def batch(ticks: Sequence[Tick]) -> int:
        nonlocal offset
        timescale.write([(t, 0, offset + i) for i, t in enumerate(ticks)])
        offset += len(ticks)
        timescale_offsets.advance({("ticks", 0): offset})
        await timescale.flush()
        return await cache.flush()

    # 23:57 .. 00:01 for A (crosses 5m, 1h and 1d), two minutes for B.
    first = [tick(a, source, m, BASE_NS + m * MINUTE_NS + 5 * S, 100 + m) for m in range(5)]
    first += [tick(b, source, 100 + m, BASE_NS + m * MINUTE_NS, 50 + m, size=3) for m in range(2)]
    assert await batch(first) == 2 * 4  # two symbols, four resolutions
    await assert_cache_equals_views(timescale_pool, analytics_redis, prefix, [a, b])

    # More ticks in A's latest minute (00:01), out of order: the cache holds the merged
    # bar (all three ticks of the minute), not this batch's partial bar.
    latest_minute = BASE_NS + 4 * MINUTE_NS
    await batch(
        [
            tick(a, source, 10, latest_minute + 50 * S, 120),
            tick(a, source, 11, latest_minute + 1 * S, 90, size=2),
        ]
    )
    await assert_cache_equals_views(timescale_pool, analytics_redis, prefix, [a, b])
    bar_1m = await read_bar(analytics_redis, "1m", a, prefix)
    assert (bar_1m["open"], bar_1m["close"], bar_1m["trade_count"]) == ("90.000000000", "120.000000000", "3")
    assert bar_1m["volume"] == "4.000000000"

    # A late tick for 23:58 (and a replay of a stored tick, taking the duplicate
    # path): it corrects the stored 23:58 bar, but the cached 1m bar stays 00:01.
    # Its 5m/1h/1d buckets (23:55, 23:00, Jan 6) are older than the cached ones
    # (00:00, 00:00, Jan 7) too, so nothing cached moves.
    before = {r: await cached(analytics_redis, prefix, r, a) for r in RESOLUTIONS}
    late = tick(a, source, 20, BASE_NS + MINUTE_NS + 30 * S, 999)
    await batch([late, first[0]])
    old_minute = await timescale_pool.fetchrow(
        "SELECT high, trade_count FROM ohlcv_1m WHERE symbol = $1 AND bucket = $2", a, BASE + timedelta(minutes=1)
    )
    assert (old_minute["high"], old_minute["trade_count"]) == (Decimal(999), 2)
    assert {r: await cached(analytics_redis, prefix, r, a) for r in RESOLUTIONS} == before
    await assert_cache_equals_views(timescale_pool, analytics_redis, prefix, [a, b])

    # A late tick whose 1m bucket is old but whose 1d bucket is the cached one:
    # the 1m cache ignores it, the 1d cached bar is replaced by the merged day.
    late_same_day = tick(a, source, 21, BASE_NS + 3 * MINUTE_NS + 10 * S, 1)  # 00:00, today's day bucket
    day_before = await cached(analytics_redis, prefix, "1d", a)
    await batch([late_same_day])
    assert await cached(analytics_redis, prefix, "1m", a) == before["1m"]
    day_after = await cached(analytics_redis, prefix, "1d", a)
    assert day_after["bucket"] == day_before["bucket"]
    assert (day_after["low"], int(day_after["trade_count"])) == ("1.000000000", int(day_before["trade_count"]) + 1)
    await assert_cache_equals_views(timescale_pool, analytics_redis, prefix, [a, b])


class _Bars:
    """Stands in for TimescaleSink: hands out the given bars once."""

    def __init__(self) -> None:
        self.bars: list[StoredBar] = []

    def take_flushed_bars(self) -> list[StoredBar]:
        bars, self.bars = self.bars, []
        return bars


def stored(symbol: str, bucket: datetime, close: int, trade_count: int) -> StoredBar:
    c = Decimal(close)
    return StoredBar("1m", symbol, bucket, c, c, c, c, Decimal(trade_count), trade_count, c)


@pytest.mark.integration
async def test_an_older_bucket_never_replaces_a_newer_cached_bar(analytics_redis: redis.Redis, test_id: str) -> None:
    prefix = f"test:{test_id}:bar:"
    source = _Bars()
    cache = BarCacheSink(analytics_redis, source, prefix)
    t = BASE
    source.bars = [stored("X", t + timedelta(minutes=1), 10, 1)]
    assert await cache.flush() == 1
    # Another writer (a rebalance overlap) delivers an older bucket afterwards: ignored.
    source.bars = [stored("X", t, 5, 7)]
    await cache.flush()
    assert (await read_bar(analytics_redis, "1m", "X", prefix))["close"] == "10"
    # The same bucket, merged further: replaces.
    source.bars = [stored("X", t + timedelta(minutes=1), 11, 2)]
    await cache.flush()
    bar = await read_bar(analytics_redis, "1m", "X", prefix)
    assert (bar["close"], bar["trade_count"], bar["bucket"]) == ("11", "2", "2025-01-06T23:58:00+00:00")
    assert bar["bucket_ns"] == str(BASE_NS + MINUTE_NS)
    # Nothing taken, nothing sent.
    assert await cache.flush() == 0


@pytest.mark.integration
async def test_a_large_flush_goes_in_parts_and_caches_every_bar(analytics_redis: redis.Redis, test_id: str) -> None:
    prefix = f"test:{test_id}:bar:"
    source = _Bars()
    cache = BarCacheSink(analytics_redis, source, prefix)
    source.bars = [stored(f"S{i}", BASE, 100 + i, i + 1) for i in range(450)]  # three script calls
    assert await cache.flush() == 450
    for i in (0, 199, 200, 399, 449):
        bar = await read_bar(analytics_redis, "1m", f"S{i}", prefix)
        assert (bar["close"], bar["trade_count"]) == (str(100 + i), str(i + 1))


async def _batches(ticks: Sequence[Tick]) -> AsyncIterator[Sequence[Tick]]:
    for i in range(0, len(ticks), 100):
        yield ticks[i : i + 100]


@pytest.mark.integration
async def test_the_consumer_caches_the_latest_bars_when_it_keeps_the_rollups(
    isolated: Settings, timescale_pool: asyncpg.Pool, analytics_redis: redis.Redis, test_id: str
) -> None:
    prefix = f"test:{test_id}:bar:"
    settings = isolated.model_copy(update={"redis": isolated.redis.model_copy(update={"bar_key_prefix": prefix})})
    source = f"barcache-e2e-{test_id}"
    symbols = [f"BE{test_id.upper()}{i}" for i in range(3)]
    start_ns = time.time_ns() - 3 * MINUTE_NS
    # 600 ticks per symbol over three minutes, in arrival order with some late ones.
    ticks = [
        tick(symbols[i % 3], source, i, start_ns + (i * 3 * MINUTE_NS) // 1800, 100 + i % 37, size=1 + i % 5)
        for i in range(1800)
    ]
    ticks[1700], ticks[10] = ticks[10], ticks[1700]  # a tick three minutes late, one early
    # ... in tick time: seq still follows the order the feed sends them (the wire contract).
    ticks = [msgspec.structs.replace(t, seq=i) for i, t in enumerate(ticks)]
    await ensure_topics(settings.kafka)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        publisher = TickPublisher(producer, settings.kafka.ticks_topic, source)
        assert await publisher.publish_all(_batches(ticks)) == len(ticks)
    finally:
        await producer.stop()

    stats = await run_consumer(settings, asyncio.Event(), until_idle_s=3.0)
    assert stats.written == len(ticks)
    assert stats.batches >= 1
    await assert_cache_equals_views(timescale_pool, analytics_redis, prefix, symbols)
