from __future__ import annotations

import asyncio
import itertools
import re
import time
from typing import Any

import asyncpg
import pytest

from nexanest.cli.feed import feed_parser
from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.pipeline.db import ns_to_datetime
from nexanest.pipeline.settings import Settings
from nexanest.producers.feed_runner import topic_of
from nexanest.producers.feeds import registry
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed, check_tick_times, run_identity
from nexanest.schemas.ticks import Tick
from tests.nexanest_cli import run_nexanest

START = 1_764_000_000_000_000_000
S = 1_000_000_000
SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]


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


def plugin_feed(*options: str) -> SyntheticFeed:
    """``nexanest feed run synthetic OPTIONS`` up to the feed it would run."""
    plugin = registry.load("synthetic")
    feed = plugin.create(feed_parser("synthetic", plugin).parse_args(list(options)), SETTINGS)
    assert isinstance(feed, SyntheticFeed)
    return feed


def test_end_now_lays_history_out_up_to_now_for_the_backfill_topic() -> None:
    before = time.time_ns()
    feed = plugin_feed("--rate", "0", "--count", "600", "--tick-interval", "1m", "--end-now")
    out = list(feed.generate())
    assert before - 60 * S <= out[-1].ts_ns <= time.time_ns()  # the last tick is now, never ahead
    assert out[-1].ts_ns - out[0].ts_ns == 599 * 60 * S  # ten hours of history
    assert feed.backfill
    assert topic_of(SETTINGS, feed) == SETTINGS.kafka.backfill_topic


def test_a_past_start_is_history_and_the_default_start_is_live() -> None:
    past = plugin_feed("--rate", "0", "--count", "10", "--tick-interval", "1h", "--start-ns", str(START))
    assert past.backfill
    assert topic_of(SETTINGS, past) == SETTINGS.kafka.backfill_topic
    live = plugin_feed("--rate", "100", "--count", "10")
    assert not live.backfill
    assert topic_of(SETTINGS, live) == SETTINGS.kafka.ticks_topic


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (("--rate", "0", "--count", "1000", "--tick-interval", "1s"), "ahead of now"),  # from now into the future
        (("--rate", "0", "--tick-interval", "1s"), "without end"),  # no count: for ever ahead
        (("--rate", "10", "--count", "100", "--tick-interval", "1s"), "ahead of now"),  # paced, 10x the clock
        (("--count", "10", "--start-ns", str(time.time_ns() + 3600 * S)), "ahead of now"),
        (("--rate", "0", "--tick-interval", "1s", "--end-now"), "--end-now needs --count"),
        (("--count", "10", "--symbol-prefix", "bad prefix"), "would refuse"),
        (("--live", "--rate", "0", "--count", "10", "--tick-interval", "1s", "--end-now", "--start-ns", "1"), None),
    ],
)
def test_a_run_the_consumer_would_refuse_is_refused_before_it_starts(
    options: tuple[str, ...], says: str | None
) -> None:
    if says is None:  # --end-now and --start-ns together: argparse refuses
        with pytest.raises(SystemExit):
            plugin_feed(*options)
        return
    with pytest.raises(ValueError, match=re.escape(says)):
        plugin_feed(*options)


def test_what_the_consumer_takes_is_not_refused() -> None:
    plugin_feed("--rate", "0", "--count", "10000000")  # flat out, 1 µs apart: the clock outruns them
    plugin_feed("--rate", "1000", "--tick-interval", "1ms")  # paced at the clock, for ever
    plugin_feed("--rate", "0", "--count", "5", "--tick-interval", "1s")  # 4 s ahead: within max_future_s (5 s)
    plugin_feed("--rate", "0", "--count", "100", "--start-ns", str(START))  # a year old, to the backfill topic


def test_the_live_topic_refuses_old_ticks_up_front() -> None:
    month_ago = str(time.time_ns() - 30 * 86_400 * S)
    with pytest.raises(ValueError, match="stale_timestamp"):
        plugin_feed("--live", "--rate", "0", "--count", "10", "--start-ns", month_ago)
    config = SyntheticConfig(rate=0, count=10, start_ns=int(month_ago))
    with pytest.raises(ValueError, match="stale_timestamp"):  # as `nexanest produce synthetic` checks it
        check_tick_times(config, time.time_ns(), max_future_s=5, max_past_s=7 * 86_400)
    check_tick_times(config, time.time_ns(), max_future_s=5)  # the backfill topic has no such rule


def test_a_reused_source_never_reuses_a_seq() -> None:
    """A given --source may have been used before: the consumer would drop every
    tick at or below the seqs it stored for it, so a run counts from the clock."""
    fresh = list(plugin_feed("--rate", "0", "--count", "3").generate())
    assert [t.seq for t in fresh] == [0, 1, 2]  # a source of its own: from 0
    first = list(plugin_feed("--rate", "0", "--count", "1000", "--source", "mine").generate())
    second = list(plugin_feed("--rate", "0", "--count", "1000", "--source", "mine").generate())
    assert {t.source for t in first + second} == {"mine"}
    assert [t.seq for t in first] == list(range(first[0].seq, first[0].seq + 1000))
    assert second[0].seq > first[-1].seq  # past everything the first run sent
    assert run_identity("mine")[1] >= time.time_ns() - 10 * S


@pytest.mark.integration
async def test_a_second_run_under_the_same_source_is_stored_too(
    isolated: Settings, test_id: str, timescale_pool: asyncpg.Pool
) -> None:
    """The consumer drops a tick whose seq is at or below the highest it stored for
    its source and partition; two runs of ``feed run synthetic --source X`` both land."""
    source, before = f"again-{test_id}", time.time_ns()
    for _ in range(2):
        code, out, err = await run_nexanest(
            isolated, "feed", "run", "synthetic", "--rate", "0", "--count", "300", "--symbols", "3", "--source", source
        )
        assert code == 0, (out + err)[-3000:]
    stats = await run_consumer(isolated, asyncio.Event(), until_idle_s=2.0)
    assert (stats.written, stats.duplicates, stats.rejected) == (600, 0, 0)
    stored = await timescale_pool.fetchval(
        "SELECT count(DISTINCT source_seq) FROM stock_prices WHERE time BETWEEN $2 AND $3 AND source = $1",
        source,
        ns_to_datetime(before),
        ns_to_datetime(time.time_ns()),
    )
    assert stored == 600
