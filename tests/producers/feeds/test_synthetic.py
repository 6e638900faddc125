from __future__ import annotations

import itertools
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
