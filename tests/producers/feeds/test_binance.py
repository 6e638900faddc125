"""The Binance feed: its parser on recorded frames (playback), then the whole
adapter against the local venue server (``venue_server.py``): exact ticks,
malformed frames counted, gaps reported, pings answered, reconnects after a
drop (1006), a close (1001), a shutdown notice and the connection age limit,
and a burst faster than the consumer reads."""

from __future__ import annotations

import itertools
import json
import time

import pytest

from nexanest.pipeline.settings import RetrySettings
from nexanest.producers.feeds.adapter import NullObserver
from nexanest.producers.feeds.binance import BinanceConfig, BinanceFeed, BinanceParser
from nexanest.producers.feeds.websocket import ConnectionOptions
from nexanest.producers.normalise import Normaliser
from nexanest.schemas.ticks import Tick
from tests.producers.feeds.venue_server import (
    FAST_RETRY,
    Close,
    Drop,
    FeedRun,
    Hold,
    Ping,
    Script,
    Send,
    VenueServer,
    frames,
    play,
    until,
)

SOURCE = "binance-test"
MS = 1_000_000  # ns


def tick(symbol: str, price_e9: int, size_e9: int, ts_ms: int, seq: int) -> Tick:
    return Tick(
        symbol=symbol,
        exchange="BINANCE",
        price_e9=price_e9,
        size_e9=size_e9,
        ts_ns=ts_ms * MS,
        source=SOURCE,
        seq=seq,
    )


#: tests/data/feeds/binance/trades.jsonl as ticks, with BTCUSDT mapped to BTC-USDT and seq from 0.
TRADES = [
    tick("BTC-USDT", 91_234_560_000_000, 1_200_000, 1764547200000, 0),
    tick("ETHUSDT", 3_012_100_000_000, 1_500_000_000, 1764547200010, 1),
    tick("BTC-USDT", 91_234_570_000_000, 10, 1764547200020, 2),
    tick("BTC-USDT", 100_000_000, 200_000_000, 1764547200030, 3),
    tick("ETHUSDT", 3_012_123_456_789, 12_000_000_000, 1764547200040, 4),
]


def trade_frame(symbol: str, trade_id: int, price: str = "100.5", qty: str = "1", ts_ms: int = 1764547300000) -> str:
    data = {"e": "trade", "E": ts_ms + 1, "s": symbol, "t": trade_id, "p": price, "q": qty, "T": ts_ms, "m": True}
    return json.dumps({"stream": f"{symbol.lower()}@trade", "data": data})


def parser() -> BinanceParser:
    normaliser = Normaliser("BINANCE", SOURCE, {"BTCUSDT": "BTC-USDT", "ETHUSDT": "ETHUSDT"}, 0)
    return BinanceParser("ws://x", normaliser, ["BTCUSDT", "ETHUSDT"])


# --- playback: the parser alone ------------------------------------------------


def test_trade_frames_become_exact_ticks() -> None:
    results = play(parser(), frames("binance", "trades"))
    assert [t for r in results for t in r.ticks] == TRADES
    assert all(r.malformed is None and not r.gaps and r.reconnect is None for r in results)


def test_malformed_frames_are_reported_not_raised() -> None:
    p = parser()
    play(p, frames("binance", "trades"))
    results = play(p, frames("binance", "malformed"))
    assert [r.malformed[0] if r.malformed else None for r in results] == [
        "bad_json",  # cut off mid-string
        "bad_shape",  # no price
        "bad_shape",  # trade id as a string
        "bad_shape",  # price as a JSON number
        "unknown_symbol",  # DOGEUSDT is not subscribed
        "bad_decimal",  # NaN
        "too_precise",  # 10 decimal places
        "bad_price",  # zero
        "bad_shape",  # an aggTrade event on a trade stream
        "bad_shape",  # not an object
        "unexpected_frame",  # a method reply: this feed sends no methods
    ]
    assert all(not r.ticks and not r.gaps for r in results)
    missing = results[1].malformed
    assert missing is not None
    assert "`p`" in missing[1]
    assert '"t":103' in missing[1]
    # The next good trade continues the sequence numbers where the good ones left off.
    assert play(p, [trade_frame("BTCUSDT", 103)])[0].ticks[0].seq == len(TRADES)


def test_gaps_are_reported_and_repeats_dropped() -> None:
    p = parser()
    play(p, frames("binance", "trades"))  # BTCUSDT up to trade 102, ETHUSDT up to 201
    results = play(p, frames("binance", "gaps"))
    assert [g for r in results for g in r.gaps] == [("btcusdt@trade", 104, 107), ("ethusdt@trade", 203, 210)]
    ids = [(t.symbol, t.price_e9) for r in results for t in r.ticks]
    assert ids == [
        ("BTC-USDT", 91_240_000_000_000),  # 103
        ("BTC-USDT", 91_241_000_000_000),  # 107, after the gap
        ("ETHUSDT", 3_013_000_000_000),  # 202
        ("ETHUSDT", 3_014_000_000_000),  # 210, after the gap
    ]
    assert p.repeats == 1  # 106 came after 107


def test_shutdown_notices_ask_for_a_reconnect() -> None:
    results = play(parser(), frames("binance", "shutdown"))
    assert [r.reconnect for r in results] == ["serverShutdown"] * 3
    assert all(r.malformed is None and not r.ticks for r in results)


def test_the_url_names_the_trade_streams() -> None:
    p = BinanceParser("wss://stream.binance.com:9443/", Normaliser("BINANCE", SOURCE, None), ["BTCUSDT", "ethusdt"])
    assert p.url() == "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/ethusdt@trade"
    assert p.subscribe_messages() == ()
    with pytest.raises(ValueError, match="1024"):
        BinanceParser("ws://x", Normaliser("BINANCE", SOURCE, None), [f"S{i}" for i in range(1025)])


# --- the adapter against the local venue server ----------------------------------

#: A first reconnect delay far longer than the tests wait: a reconnect "at once" is then visible.
SLOW_RETRY = RetrySettings(initial_backoff_s=30.0, max_backoff_s=30.0)


def feed(url: str, *, retry: RetrySettings = FAST_RETRY, **options: float | None) -> BinanceFeed:
    config = BinanceConfig(symbols=["btcusdt", "ethusdt"], url=url, symbol_map={"BTCUSDT": "BTC-USDT"}, source=SOURCE)
    return BinanceFeed(config, ConnectionOptions(retry=retry, **options), seq_start=0)  # type: ignore[arg-type]


async def test_a_session_yields_the_exact_ticks_and_answers_pings() -> None:
    trades = frames("binance", "trades")
    async with VenueServer([[Send(trades[:2]), Ping(timeout_s=2), Send(trades[2:]), Ping(timeout_s=2)]]) as server:
        async with FeedRun(feed(server.url)) as run:
            await run.ticks_at_least(len(TRADES))
            await until(lambda: server.connections[0].pongs == 2, "two pongs")
        assert run.ticks == TRADES
        assert server.connections[0].path == "/stream?streams=btcusdt@trade/ethusdt@trade"
        assert len(server.connections) == 1
        assert run.observer.connects
        assert run.observer.disconnects == ["binance: stopped"]
        health = run.feed.health()
        assert (health.ticks, health.rejected, health.gaps, health.reconnects) == (5, 0, 0, 0)
        assert health.last_tick_ns == TRADES[-1].ts_ns
        assert not health.connected


async def test_malformed_frames_are_counted_and_the_feed_goes_on() -> None:
    trades, bad = frames("binance", "trades"), frames("binance", "malformed")
    async with VenueServer([[Send(trades[:2] + bad + trades[2:])]]) as server:
        async with FeedRun(feed(server.url)) as run:
            await run.ticks_at_least(len(TRADES))
        assert run.ticks == TRADES
        assert len(run.observer.bad) == len(bad) == run.feed.health().rejected
        assert run.observer.bad[0][0] == "bad_json"
        assert len(server.connections) == 1  # no reconnect for a bad frame


async def test_an_abrupt_drop_reconnects_and_reports_the_trades_missed_meanwhile() -> None:
    trades = frames("binance", "trades")  # BTCUSDT up to trade 102
    after = [trade_frame("BTCUSDT", 105, "91250.5"), trade_frame("ETHUSDT", 202, "3020")]
    async with VenueServer([[Send(trades), Drop()], [Send(after)]]) as server:
        async with FeedRun(feed(server.url)) as run:
            await run.ticks_at_least(len(TRADES) + 2)
        assert run.ticks[: len(TRADES)] == TRADES
        assert [(t.symbol, t.price_e9, t.seq) for t in run.ticks[len(TRADES) :]] == [
            ("BTC-USDT", 91_250_500_000_000, 5),
            ("ETHUSDT", 3_020_000_000_000, 6),
        ]
        assert run.observer.gaps == [("btcusdt@trade", 103, 105)]
        assert len(server.connections) == 2
        assert server.connections[1].path == server.connections[0].path  # resubscribed to the same streams
        assert "1006" in run.observer.disconnects[0]
        health = run.feed.health()
        assert (health.reconnects, health.gaps) == (1, 1)


async def test_a_close_1001_reconnects() -> None:
    trades = frames("binance", "trades")
    async with VenueServer([[Send(trades[:2]), Close(1001, "going away")], [Send(trades[2:])]]) as server:
        async with FeedRun(feed(server.url)) as run:
            await run.ticks_at_least(len(TRADES))
        assert run.ticks == TRADES
        assert len(server.connections) == 2
        assert run.observer.disconnects[0] == "binance: going away (1001: going away)"
        assert run.observer.gaps == []


async def test_a_shutdown_notice_reconnects_at_once() -> None:
    trades, notice = frames("binance", "trades"), frames("binance", "shutdown")[0]
    # The first connection stays open after the notice: the feed must leave it by itself, without a delay.
    async with VenueServer([[Send([*trades[:2], notice])], [Send(trades[2:])]]) as server:
        async with FeedRun(feed(server.url, retry=SLOW_RETRY, stable_after_s=0.0)) as run:
            await run.ticks_at_least(len(TRADES), timeout_s=5)
        assert run.ticks == TRADES
        first, second = server.connections
        assert second.opened_s - first.opened_s < 5  # the backoff would have waited 15-30 s
        assert first.ended.startswith("client closed")
        assert "serverShutdown" in run.observer.disconnects[0]


async def test_the_connection_age_limit_reconnects_before_the_venue_does() -> None:
    trades = frames("binance", "trades")
    async with VenueServer([[Send(trades[:2])], [Send(trades[2:])]]) as server:
        async with FeedRun(feed(server.url, retry=SLOW_RETRY, max_connection_age_s=0.5, stable_after_s=0.4)) as run:
            await run.ticks_at_least(len(TRADES), timeout_s=5)
            age = server.connections[1].opened_s - server.connections[0].opened_s
        assert run.ticks == TRADES
        assert 0.5 <= age < 5
        assert "old" in run.observer.disconnects[0]


async def test_failed_connections_back_off_exponentially() -> None:
    retry = RetrySettings(initial_backoff_s=0.05, max_backoff_s=1.0)
    trades = frames("binance", "trades")
    # Four connections dropped before any frame, then a working one.
    async with VenueServer([[Drop()]] * 4 + [[Send(trades)]]) as server:
        async with FeedRun(feed(server.url, retry=retry)) as run:
            await run.ticks_at_least(len(TRADES))
        opened = [c.opened_s for c in server.connections]
        waits = [b - a for a, b in itertools.pairwise(opened)]
        # Delays are drawn from [step/2, step] with the step doubling: 0.025-0.05, 0.05-0.1, 0.1-0.2, 0.2-0.4 s.
        assert waits[0] < 0.5
        assert waits[3] >= 0.2 > waits[0]
        assert run.ticks == TRADES
        assert run.feed.health().reconnects == 4


async def test_the_backoff_restarts_after_a_stable_connection() -> None:
    retry = RetrySettings(initial_backoff_s=0.05, max_backoff_s=5.0)
    trades = frames("binance", "trades")
    quick: list[Script] = [[Drop()]] * 5
    scripts: list[Script] = [*quick, [Send(trades[:2]), Hold(0.3), Drop()], [Send(trades[2:])]]
    async with VenueServer(scripts) as server:
        async with FeedRun(feed(server.url, retry=retry, stable_after_s=0.2)) as run:
            await run.ticks_at_least(len(TRADES))
        opened = [c.opened_s for c in server.connections]
        # After five quick drops the delay would be 0.8-1.6 s; the sixth connection lived 0.3 s
        # (stable), so the delay after it is from the first step again: 0.025-0.05 s.
        assert opened[5] - opened[4] >= 0.4
        assert opened[6] - opened[5] < 0.3 + 0.45
        assert run.ticks == TRADES


async def test_a_shutdown_notice_on_every_connection_meets_growing_delays() -> None:
    notice = frames("binance", "shutdown")[0]
    retry = RetrySettings(initial_backoff_s=0.05, max_backoff_s=5.0)
    async with VenueServer([[Send([notice])]]) as server:
        async with FeedRun(feed(server.url, retry=retry)):
            await until(lambda: len(server.connections) >= 5, "five connections")
        opened = [c.opened_s for c in server.connections]
        waits = [b - a for a, b in itertools.pairwise(opened)]
        # Not "at once" (the connections were not stable): 0.025-0.05, 0.05-0.1, 0.1-0.2, 0.2-0.4 s.
        assert waits[3] >= 0.2 > waits[0]


async def test_a_burst_faster_than_the_consumer_arrives_whole_in_bounded_batches() -> None:
    count = 5_000
    burst = [trade_frame("BTCUSDT", 1_000 + i, f"{90_000 + i}.5") for i in range(count)]
    async with VenueServer([[Send(burst), Ping(timeout_s=5)]]) as server:
        async with FeedRun(feed(server.url, max_pending_ticks=200), slow_s=0.002) as run:
            await run.ticks_at_least(count, timeout_s=60)
            await until(lambda: server.connections[0].pongs == 1, "the pong after the burst")
        assert [t.price_e9 for t in run.ticks] == [(90_000 + i) * 10**9 + 500_000_000 for i in range(count)]
        assert [t.seq for t in run.ticks] == list(range(count))
        assert max(len(b) for b in run.batches) <= 200  # bounded: the reader waited for the consumer
        assert len(run.batches) >= count // 200
        assert run.observer.gaps == []
        assert run.observer.bad == []


async def test_stop_ends_ticks_while_reconnecting() -> None:
    async with VenueServer([[Drop()]]) as server:
        run = FeedRun(feed(server.url, retry=SLOW_RETRY))
        async with run:
            await until(lambda: len(server.connections) == 1, "a connection")
            await until(lambda: "reconnecting" in run.feed.health().detail, "waiting to reconnect")
            started = time.monotonic()
        assert time.monotonic() - started < 5  # stop did not wait out the 15-30 s delay
        assert run.ticks == []


async def test_stop_while_the_reader_waits_for_the_consumer() -> None:
    burst = [trade_frame("BTCUSDT", 1_000 + i, f"{90_000 + i}") for i in range(500)]
    async with VenueServer([[Send(burst)]]) as server:
        binance = feed(server.url, max_pending_ticks=10)
        await binance.start(NullObserver())
        batches = binance.ticks()
        first = await anext(batches)
        await until(lambda: len(binance._pending) >= 10, "the reader blocked")
        started = time.monotonic()
        await binance.stop()
        assert time.monotonic() - started < 5
        rest = [t for batch in [b async for b in batches] for t in batch]
    got = [*first, *rest]
    assert 10 <= len(got) < 500  # what was parsed before the stop, no more
    assert [t.price_e9 for t in got] == [(90_000 + i) * 10**9 for i in range(len(got))]
    assert binance.health().detail == "stopped"


async def test_pings_are_answered_while_the_consumer_is_busy() -> None:
    """The reader runs in its own task: a publisher waiting for Kafka does not delay the pong."""
    trades = frames("binance", "trades")
    async with VenueServer([[Send(trades), Ping(timeout_s=2), Ping(timeout_s=2)]]) as server:
        binance = feed(server.url)
        await binance.start(NullObserver())  # nobody iterates ticks()
        try:
            await until(lambda: bool(server.connections) and server.connections[0].pongs == 2, "two pongs")
            assert len(binance._pending) == len(TRADES)
        finally:
            await binance.stop()
