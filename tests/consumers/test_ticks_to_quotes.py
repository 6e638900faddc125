"""The quote fast path (``nexanest quotes``) on real Kafka, Redis and TimescaleDB:
quotes appear without the consumer, invalid ticks are skipped there and
dead-lettered once by the consumer beside it, and the two writers agree."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import msgspec
import pytest
import redis.asyncio as redis
from aiokafka import AIOKafkaConsumer, TopicPartition

from nexanest.consumers.ticks_to_quotes import QuoteStats, run_quotes
from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.pipeline import metrics
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.dead_letter import HEADER_REASON
from nexanest.pipeline.sinks.redis_quotes import read_quote
from nexanest.schemas.ticks import Tick, encode_tick

pytestmark = pytest.mark.integration

SYMBOLS = [f"FQ{i:02d}" for i in range(12)]


async def until(fact: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await fact():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        await asyncio.sleep(0.05)


def ticks(source: str, per_symbol: int) -> list[Tick]:
    """``per_symbol`` ticks of each symbol, interleaved, in tick time order."""
    start = time.time_ns() - 10**9
    out = []
    for seq in range(per_symbol * len(SYMBOLS)):
        price = (100 + seq) * 10**9
        out.append(
            Tick(
                symbol=SYMBOLS[seq % len(SYMBOLS)],
                exchange="XNAS",
                price_e9=price,
                size_e9=100 * 10**9,
                ts_ns=start + seq * 1_000,
                source=source,
                seq=seq,
                bid_e9=price - 10**7,
                ask_e9=price + 10**7,
            )
        )
    return out


async def send(settings: Settings, values: list[tuple[bytes, bytes]]) -> None:
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        for key, value in values:
            await producer.send(settings.kafka.ticks_topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def fast_path(settings: Settings) -> AsyncIterator[asyncio.Task[QuoteStats]]:
    """``run_quotes`` in a task, ready (partitions assigned and positioned) on entry."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_quotes(settings, stop, ready=ready))
    waiting = asyncio.ensure_future(ready.wait())
    await asyncio.wait({task, waiting}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if not ready.is_set():
        waiting.cancel()
        stop.set()
        await task  # raises what stopped it
        raise AssertionError("the quote fast path was not assigned its partitions within 60 s")
    try:
        yield task
    finally:
        stop.set()
        await task


async def quotes_match(client: redis.Redis, settings: Settings, latest: dict[str, Tick]) -> bool:
    for symbol, tick in latest.items():
        quote = await read_quote(client, symbol, settings.redis.quote_key_prefix)
        if (quote.get("ts_ns"), quote.get("seq")) != (str(tick.ts_ns), str(tick.seq)):
            return False
    return True


async def test_fast_path_alone_keeps_every_quote(isolated: Settings, quotes_redis: redis.Redis, test_id: str) -> None:
    await ensure_topics(isolated.kafka)
    published = ticks(f"fq-{test_id}", per_symbol=50)
    latest = {t.symbol: t for t in published}
    observed_before = metrics.REGISTRY.get_sample_value("nexanest_quote_latency_seconds_count") or 0.0
    async with fast_path(isolated) as task:
        await send(isolated, [(t.symbol.encode(), encode_tick(t)) for t in published])
        await until(lambda: quotes_match(quotes_redis, isolated, latest), "every symbol quotes its latest tick")
        assert not task.done()
    stats = task.result()
    assert stats.consumed == len(published)
    assert stats.skipped == 0
    # Each quote it made visible was observed once, from the tick's own time.
    observed = (metrics.REGISTRY.get_sample_value("nexanest_quote_latency_seconds_count") or 0.0) - observed_before
    assert len(SYMBOLS) <= observed <= len(published)
    quote = await read_quote(quotes_redis, SYMBOLS[0], isolated.redis.quote_key_prefix)
    assert quote["price"] == str(latest[SYMBOLS[0]].price_e9 // 10**9)


async def read_dead_letters(settings: Settings) -> list[str]:
    """Every dead letter's reason, read up to the topic's end."""
    dlq = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False)
    await dlq.start()
    try:
        topic = settings.kafka.dead_letter_topic
        tps = [TopicPartition(topic, p) for p in sorted(dlq.partitions_for_topic(topic) or [])]
        if not tps:
            await dlq._client.force_metadata_update()
            tps = [TopicPartition(topic, p) for p in sorted(dlq.partitions_for_topic(topic) or [])]
        dlq.assign(tps)
        await dlq.seek_to_beginning(*tps)
        end = await dlq.end_offsets(tps)
        reasons: list[str] = []
        deadline = time.monotonic() + 30
        while [tp for tp in tps if await dlq.position(tp) < end[tp]]:
            assert time.monotonic() < deadline, "the dead-letter topic could not be read to its end"
            for records in (await dlq.getmany(timeout_ms=500)).values():
                reasons += [dict(r.headers)[HEADER_REASON].decode() for r in records]
        return reasons
    finally:
        await dlq.stop()


async def test_beside_the_consumer_bad_ticks_are_dead_lettered_once(
    isolated: Settings, timescale_pool: asyncpg.Pool, quotes_redis: redis.Redis, test_id: str
) -> None:
    """Both read every tick; only the consumer dead-letters, only once; both
    quote, and the quotes end at the latest good tick whoever wrote last."""
    await ensure_topics(isolated.kafka)
    source = f"fqc-{test_id}"
    good = ticks(source, per_symbol=20)
    bad_symbol = msgspec.structs.replace(good[0], symbol="not a symbol", seq=10**6)
    crossed = msgspec.structs.replace(good[1], bid_e9=good[1].price_e9 + 2 * 10**7, seq=10**6 + 1)
    values = [(t.symbol.encode(), encode_tick(t)) for t in good]
    values[5:5] = [(b"FQ00", encode_tick(bad_symbol)), (b"FQ01", encode_tick(crossed)), (b"FQ02", b"\xc1garbage")]
    latest = {t.symbol: t for t in good}

    async with fast_path(isolated) as task:
        consumer = asyncio.create_task(run_consumer(isolated, asyncio.Event(), until_idle_s=3.0))
        await send(isolated, values)
        await until(lambda: quotes_match(quotes_redis, isolated, latest), "every symbol quotes its latest good tick")
        stats = await consumer
    quoted = task.result()

    assert quoted.consumed == len(values)
    assert quoted.skipped == 3
    assert stats.written == len(good)
    assert stats.rejected_by_reason == {"bad_symbol": 1, "crossed_quote": 1, "undecodable": 1}
    assert sorted(await read_dead_letters(isolated)) == ["bad_symbol", "crossed_quote", "undecodable"]
    rows = await timescale_pool.fetchval("SELECT count(*) FROM stock_prices WHERE source = $1", source)
    assert rows == len(good)
    assert await quotes_match(quotes_redis, isolated, latest)


async def test_consumer_without_inline_quotes_leaves_them_to_the_fast_path(
    isolated: Settings, quotes_redis: redis.Redis, test_id: str
) -> None:
    settings = isolated.model_copy(update={"consumer": isolated.consumer.model_copy(update={"inline_quotes": False})})
    await ensure_topics(settings.kafka)
    published = ticks(f"fqo-{test_id}", per_symbol=5)
    await send(settings, [(t.symbol.encode(), encode_tick(t)) for t in published])
    stats = await run_consumer(settings, asyncio.Event(), until_idle_s=2.0)
    assert stats.written == len(published)
    assert await read_quote(quotes_redis, SYMBOLS[0], settings.redis.quote_key_prefix) == {}
