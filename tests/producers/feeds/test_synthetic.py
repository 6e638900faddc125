from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.schemas.ticks import Tick

START = 1_764_000_000_000_000_000


def ticks(**kw: Any) -> list[Tick]:
    config = SyntheticConfig(start_ns=START, **kw)
    return list(SyntheticFeed(config).generate())


def test_same_seed_same_ticks_other_seed_other_ticks() -> None:
    assert ticks(count=500, seed=1) == ticks(count=500, seed=1)
    assert ticks(count=500, seed=1) != ticks(count=500, seed=2)


def test_ticks_are_well_formed() -> None:
    out = ticks(count=5_000, symbols=20, rate=10_000)
    assert len(out) == 5_000
    assert {t.symbol for t in out} == {f"SYN{i:04d}" for i in range(20)}
    assert [t.seq for t in out] == list(range(5_000))
    for t in out:
        assert t.price_e9 > 0
        assert t.bid_e9 is not None
        assert t.ask_e9 is not None
        assert t.bid_e9 < t.price_e9 < t.ask_e9 or t.bid_e9 == 10_000_000
        assert t.size_e9 % (100 * 10**9) == 0
    # The simulated clock advances 1/rate per tick.
    assert out[1].ts_ns - out[0].ts_ns == 100_000


def test_prices_move_like_a_random_walk() -> None:
    out = ticks(count=20_000, symbols=1, rate=1)
    prices = [t.price_e9 for t in out]
    moves = [b - a for a, b in itertools.pairwise(prices)]
    assert any(m > 0 for m in moves)
    assert any(m < 0 for m in moves)
    assert max(prices) < 10 * min(prices)


async def test_paced_feed_yields_batches_that_add_up() -> None:
    feed = SyntheticFeed(SyntheticConfig(count=300, rate=3_000, start_ns=START))
    batches = [b async for b in feed.ticks()]
    assert sum(len(b) for b in batches) == 300
    assert len(batches) > 1


async def test_a_paced_tick_is_never_yielded_before_its_time_nor_long_after() -> None:
    """Tick time is the feed's own clock, counted from when pacing starts (not from
    when the feed was made: the publisher's start-up is not the ticks' latency),
    and a tick leaves in the batch of the first pacing step at or after its time."""
    feed = SyntheticFeed(SyntheticConfig(count=400, rate=2_000))
    made_ns = time.time_ns()
    await asyncio.sleep(0.2)  # a slow start-up, as the publisher's
    yielded = 0
    async for batch in feed.ticks():
        now = time.time_ns()
        assert all(t.ts_ns <= now for t in batch), "a tick yielded ahead of its own time"
        yielded += len(batch)
    assert yielded == 400
    assert feed.start_ns - made_ns >= 200_000_000
