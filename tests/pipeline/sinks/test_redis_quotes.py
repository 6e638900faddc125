"""RedisQuoteSink against the real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis
from redis.asyncio.client import PubSub

from nexanest.pipeline import metrics
from nexanest.pipeline.sinks.redis_quotes import (
    QuoteUpdate,
    RedisQuoteSink,
    parse_quote_update,
    quote_channel,
    read_quote,
)
from nexanest.schemas.ticks import Tick

pytestmark = pytest.mark.integration

T0 = 1_764_000_000_000_000_000


def tick(price: float, ts_ns: int, seq: int, symbol: str = "LATE") -> Tick:
    p = int(price * 1e9)
    return Tick(
        symbol=symbol,
        exchange="XNAS",
        price_e9=p,
        size_e9=100 * 10**9,
        ts_ns=ts_ns,
        source="t",
        seq=seq,
        bid_e9=p - 10**7,
        ask_e9=p + 10**7,
    )


async def test_late_older_tick_does_not_overwrite_newer_quote(quotes_redis: redis.Redis, test_id: str) -> None:
    prefix = f"test:{test_id}:quote:"
    sink = RedisQuoteSink(quotes_redis, prefix)
    sink.write([tick(101.5, T0 + 2_000, seq=2)])
    await sink.flush()
    sink.write([tick(99.0, T0 + 1_000, seq=1)])  # arrives later, happened earlier
    await sink.flush()
    quote = await read_quote(quotes_redis, "LATE", prefix)
    assert quote["price"] == "101.5"
    assert quote["ts_ns"] == str(T0 + 2_000)
    assert quote["bid"] == "101.49"
    assert quote["ask"] == "101.51"


async def test_newer_tick_moves_quote_forward_and_ties_break_on_seq(quotes_redis: redis.Redis, test_id: str) -> None:
    prefix = f"test:{test_id}:quote:"
    sink = RedisQuoteSink(quotes_redis, prefix)
    sink.write([tick(10, T0, seq=5)])
    await sink.flush()
    sink.write([tick(11, T0 + 1, seq=6)])
    await sink.flush()
    assert (await read_quote(quotes_redis, "LATE", prefix))["price"] == "11"
    # Same exchange time: the later sequence number wins, an earlier one does not.
    sink.write([tick(12, T0 + 1, seq=4)])
    await sink.flush()
    assert (await read_quote(quotes_redis, "LATE", prefix))["price"] == "11"
    sink.write([tick(13, T0 + 1, seq=7)])
    await sink.flush()
    assert (await read_quote(quotes_redis, "LATE", prefix))["price"] == "13"


async def test_timestamps_beyond_double_precision_compare_exactly(quotes_redis: redis.Redis, test_id: str) -> None:
    """19-digit nanosecond times differ in the last digit; Lua doubles would call them equal."""
    prefix = f"test:{test_id}:quote:"
    sink = RedisQuoteSink(quotes_redis, prefix)
    sink.write([tick(50, T0 + 3, seq=1)])
    await sink.flush()
    sink.write([tick(40, T0 + 2, seq=9)])
    await sink.flush()
    assert (await read_quote(quotes_redis, "LATE", prefix))["price"] == "50"


async def test_one_batch_many_symbols_out_of_order(quotes_redis: redis.Redis, test_id: str) -> None:
    prefix = f"test:{test_id}:quote:"
    sink = RedisQuoteSink(quotes_redis, prefix)
    batch = [tick(100 + i, T0 + (i * 7919) % 1000, seq=i, symbol=f"S{i % 10}") for i in range(1_000)]
    sink.write(batch)
    assert await sink.flush() == 10
    for s in range(10):
        latest = max((t for t in batch if t.symbol == f"S{s}"), key=lambda t: (t.ts_ns, t.seq))
        quote = await read_quote(quotes_redis, f"S{s}", prefix)
        assert quote["ts_ns"] == str(latest.ts_ns)
        assert quote["seq"] == str(latest.seq)


async def next_update(subscription: PubSub, timeout_s: float = 5.0) -> tuple[str, bytes]:
    """The next message on ``subscription`` (channel, data); fails after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        message = await subscription.get_message(ignore_subscribe_messages=True, timeout=left)
        if message is not None:
            return message["channel"].decode(), message["data"]
    pytest.fail(f"no quote update within {timeout_s} s")


async def test_a_moved_quote_is_published_once_and_an_older_one_not(quotes_redis: redis.Redis, test_id: str) -> None:
    prefix = f"test:{test_id}:quote:"
    sink = RedisQuoteSink(quotes_redis, prefix)
    subscription = quotes_redis.pubsub()
    await subscription.subscribe(quote_channel(prefix, "LATE"), quote_channel(prefix, "OTHER"))
    try:
        sink.write([tick(101.5, T0 + 2_000, seq=2), tick(7, T0, seq=1, symbol="OTHER")])
        await sink.flush()
        updates = dict([await next_update(subscription), await next_update(subscription)])
        assert set(updates) == {f"test:{test_id}:quote:updates:LATE", f"test:{test_id}:quote:updates:OTHER"}
        late = parse_quote_update(updates[quote_channel(prefix, "LATE")])
        assert (late.ts_ns, late.seq, late.price, late.bid, late.ask, late.size, late.exchange) == (
            T0 + 2_000,
            2,
            "101.5",
            "101.49",
            "101.51",
            "100",
            "XNAS",
        )
        # An older tick, the same tick replayed, and one with an earlier seq at the same
        # time move nothing and publish nothing; the next newer one is the next message.
        for stale in (tick(99, T0 + 1_000, seq=1), tick(101.5, T0 + 2_000, seq=2), tick(98, T0 + 2_000, seq=1)):
            sink.write([stale])
            assert await sink.flush() == 1  # offered to the script, which refuses it
        sink.write([tick(102, T0 + 3_000, seq=3)])
        await sink.flush()
        channel, data = await next_update(subscription)
        assert channel == quote_channel(prefix, "LATE")
        assert parse_quote_update(data).price == "102"
        assert await subscription.get_message(ignore_subscribe_messages=True, timeout=0.2) is None
    finally:
        await subscription.aclose()  # type: ignore[no-untyped-call] # redis-py leaves it unannotated


async def test_publishing_off_writes_quotes_without_publishing(quotes_redis: redis.Redis, test_id: str) -> None:
    prefix = f"test:{test_id}:quote:"
    subscription = quotes_redis.pubsub()
    await subscription.subscribe(quote_channel(prefix, "LATE"))
    try:
        sink = RedisQuoteSink(quotes_redis, prefix, publish=False)
        sink.write([tick(10, T0, seq=1)])
        await sink.flush()
        assert (await read_quote(quotes_redis, "LATE", prefix))["price"] == "10"
        # A publishing sink's update arrives; had the first one published, it would come first.
        publishing = RedisQuoteSink(quotes_redis, prefix)
        publishing.write([tick(11, T0 + 1, seq=2)])
        await publishing.flush()
        _, data = await next_update(subscription)
        assert parse_quote_update(data).price == "11"
    finally:
        await subscription.aclose()  # type: ignore[no-untyped-call] # redis-py leaves it unannotated


async def test_two_writers_of_the_same_ticks_observe_each_latency_once(quotes_redis: redis.Redis, test_id: str) -> None:
    """The consumer and the quote fast path both apply every tick: only the
    round trip that moved a quote observes its latency, so the histogram counts
    each visible quote once, whichever writer was first."""
    prefix = f"test:{test_id}:quote:"
    first, second = RedisQuoteSink(quotes_redis, prefix), RedisQuoteSink(quotes_redis, prefix)
    ticks = [tick(10, T0 + 5, seq=5, symbol="ONE"), tick(20, T0 + 6, seq=6, symbol="TWO")]

    def observed() -> float:
        return metrics.REGISTRY.get_sample_value("nexanest_quote_latency_seconds_count") or 0.0

    before = observed()
    first.write(ticks)
    assert await first.flush() == 2
    assert observed() - before == 2
    second.write([*ticks, tick(11, T0 + 7, seq=7, symbol="ONE")])  # the same two, and one newer
    await second.flush()
    assert observed() - before == 3  # only the newer tick of ONE moved a quote
    assert (await read_quote(quotes_redis, "ONE", prefix))["seq"] == "7"
    assert (await read_quote(quotes_redis, "TWO", prefix))["seq"] == "6"


def test_a_quote_update_reads_from_its_frozen_form() -> None:
    """The message format, frozen: readers in other processes depend on it."""
    sample = b"1764000000000002000 2 101.5 101.49 101.51 100 1764000000100000000 XNAS Main Board"
    assert parse_quote_update(sample) == QuoteUpdate(
        ts_ns=1_764_000_000_000_002_000,
        seq=2,
        price="101.5",
        bid="101.49",
        ask="101.51",
        size="100",
        updated_ns=1_764_000_000_100_000_000,
        exchange="XNAS Main Board",
    )
    no_book = parse_quote_update(b"1 0 5   1 2 X")
    assert (no_book.bid, no_book.ask) == (None, None)
    with pytest.raises(ValueError, match="8 fields"):
        parse_quote_update(b"1 2 3")
