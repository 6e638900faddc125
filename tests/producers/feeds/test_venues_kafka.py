"""Each venue feed end to end: frames replayed by the local venue server, through
the real publisher (``producers/publisher.py``) to the real Kafka, on this test's
own topic. What Kafka holds must be exactly the good trades, keyed by symbol on
the partition Kafka's partitioner picks, across a dropped connection, with the
malformed frames counted and the missed trades reported as a gap."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner

from nexanest.pipeline.metrics import REGISTRY
from nexanest.pipeline.settings import RetrySettings, Settings
from nexanest.producers.feed_runner import run_feed
from nexanest.producers.feeds.binance import BinanceConfig, BinanceFeed
from nexanest.producers.feeds.coinbase import CoinbaseConfig, CoinbaseFeed
from nexanest.producers.feeds.websocket import ConnectionOptions, WebSocketFeed
from nexanest.producers.publisher import publish_feed
from nexanest.schemas.events import SystemEvent, decode_event
from nexanest.schemas.ticks import Tick
from tests.nexanest_cli import spawn_nexanest
from tests.processes import interrupt
from tests.producers.feeds.venue_server import Drop, RecordingObserver, Send, VenueServer, frames
from tests.producers.ticks_topic import read_ticks

pytestmark = pytest.mark.integration

OPTIONS = ConnectionOptions(retry=RetrySettings(initial_backoff_s=0.05, max_backoff_s=0.2))


async def published(settings: Settings, feed: WebSocketFeed, expected: int) -> tuple[list[Tick], RecordingObserver]:
    """Run ``feed`` through the publisher until Kafka holds ``expected`` ticks; return them in
    publishing order (by seq), after checking each record's key and partition."""
    observer = RecordingObserver()
    await feed.start(observer)
    publishing = asyncio.create_task(publish_feed(settings.kafka, feed, feed.name))
    try:
        got = await read_ticks(settings, expected)
    finally:
        await feed.stop()
        count = await asyncio.wait_for(publishing, 30)
    assert count == expected
    partitions = list(range(settings.kafka.partitions))  # ensure_topics made the topic with these
    partitioner = DefaultPartitioner()
    for partition, key, tick in got:
        assert key == tick.symbol.encode()
        assert partition == partitioner(key, partitions, partitions)
    return [tick for _, _, tick in sorted(got, key=lambda g: g[2].seq)], observer


async def test_binance_frames_to_kafka(isolated: Settings, test_id: str) -> None:
    trades, bad = frames("binance", "trades"), frames("binance", "malformed")
    after = json.dumps(
        {
            "stream": "btcusdt@trade",
            "data": {"e": "trade", "E": 1, "s": "BTCUSDT", "t": 110, "p": "91300", "q": "0.5", "T": 1764547300000},
        }
    )
    source = f"binance-{test_id}"
    async with VenueServer([[Send(trades[:3] + bad + trades[3:]), Drop()], [Send([after])]]) as server:
        config = BinanceConfig(["btcusdt", "ethusdt"], server.url, {"BTCUSDT": "BTC-USDT"}, source)
        feed = BinanceFeed(config, OPTIONS, seq_start=0)
        ticks, observer = await published(isolated, feed, len(trades) + 1)
    assert [(t.symbol, t.price_e9, t.size_e9, t.ts_ns, t.exchange, t.source, t.seq) for t in ticks] == [
        ("BTC-USDT", 91_234_560_000_000, 1_200_000, 1764547200000 * 10**6, "BINANCE", source, 0),
        ("ETHUSDT", 3_012_100_000_000, 1_500_000_000, 1764547200010 * 10**6, "BINANCE", source, 1),
        ("BTC-USDT", 91_234_570_000_000, 10, 1764547200020 * 10**6, "BINANCE", source, 2),
        ("BTC-USDT", 100_000_000, 200_000_000, 1764547200030 * 10**6, "BINANCE", source, 3),
        ("ETHUSDT", 3_012_123_456_789, 12_000_000_000, 1764547200040 * 10**6, "BINANCE", source, 4),
        ("BTC-USDT", 91_300_000_000_000, 500_000_000, 1764547300000 * 10**6, "BINANCE", source, 5),
    ]
    assert observer.gaps == [("btcusdt@trade", 103, 110)]
    assert len(observer.bad) == len(bad)
    assert len(server.connections) == 2


async def test_coinbase_frames_to_kafka(isolated: Settings, test_id: str) -> None:
    matches, bad = frames("coinbase", "matches"), frames("coinbase", "malformed")
    after = [
        '{"type":"subscriptions","channels":[]}',
        json.dumps(
            {
                "type": "last_match",
                "trade_id": 5004,
                "sequence": 70_050,
                "product_id": "BTC-USD",
                "price": "91000.04",
                "size": "0.4",
                "time": "2025-12-01T00:00:04.000000007Z",
            }
        ),
    ]
    source = f"coinbase-{test_id}"
    async with VenueServer(
        [[Send(matches[:4] + bad + matches[4:]), Drop()], [Send(after)]], subscribe_within_s=1
    ) as server:
        feed = CoinbaseFeed(
            CoinbaseConfig(products=["BTC-USD", "ETH-USD"], url=server.url, source=source), OPTIONS, seq_start=0
        )
        ticks, observer = await published(isolated, feed, 5)
    midnight = 1_764_547_200 * 10**9
    assert [(t.symbol, t.price_e9, t.size_e9, t.ts_ns, t.exchange, t.source, t.seq) for t in ticks] == [
        ("BTC-USD", 91_000_000_000_000, 10_000_000, midnight + 1_000, "COINBASE", source, 0),
        ("BTC-USD", 91_000_010_000_000, 250_000_000, midnight + 1_123_456_000, "COINBASE", source, 1),
        ("ETH-USD", 3_000_500_000_000, 2_000_000_000, midnight + 1_200_000_000, "COINBASE", source, 2),
        ("BTC-USD", 91_000_020_000_000, 100_000_000, midnight + 1_300_000_000, "COINBASE", source, 3),
        ("BTC-USD", 91_000_040_000_000, 400_000_000, midnight + 4_000_000_007, "COINBASE", source, 4),
    ]
    assert observer.gaps == [("BTC-USD matches", 5003, 5004)]
    assert len(observer.bad) == 10
    assert [json.loads(m)["type"] for c in server.connections for m in c.received] == ["subscribe", "subscribe"]


async def read_events(settings: Settings, until_types: set[str], timeout_s: float = 30.0) -> list[SystemEvent]:
    """The events topic from the start, until every type in ``until_types`` was seen (or the deadline)."""
    consumer = AIOKafkaConsumer(
        settings.kafka.events_topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    events: list[SystemEvent] = []
    try:
        deadline = time.monotonic() + timeout_s
        while not until_types <= {e.event_type for e in events} and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                events += [decode_event(r.value or b"") for r in records]
    finally:
        await consumer.stop()
    return events


async def test_binance_through_run_feed_counts_and_reports(isolated: Settings, test_id: str) -> None:
    """The path of `nexanest feed run binance`: run_feed with its FeedMonitor, so the gap, the
    malformed frames and the reconnect become nexanest_feed_* metrics and feed_* system events."""
    trades, bad = frames("binance", "trades"), frames("binance", "malformed")
    before = {name: _metric(name) for name in ("ticks_in", "published", "rejected", "reconnects", "gaps")}
    stop = asyncio.Event()
    async with VenueServer([[Send(trades + bad), Drop()], [Send(frames("binance", "gaps"))]]) as server:
        config = BinanceConfig(["btcusdt", "ethusdt"], server.url, {}, f"binance-{test_id}")
        feed = BinanceFeed(config, OPTIONS)
        running = asyncio.create_task(run_feed(isolated, feed, stop))
        got = await read_ticks(isolated, len(trades) + 4)
        stop.set()
        published_count = await asyncio.wait_for(running, 30)
    assert published_count == len(got) == len(trades) + 4
    assert {t.exchange for _, _, t in got} == {"BINANCE"}
    after = {name: _metric(name) for name in before}
    assert {name: after[name] - before[name] for name in before} == {
        "ticks_in": 9,
        "published": 9,
        "rejected": len(bad),
        "reconnects": 1,
        "gaps": 2,
    }
    events = await read_events(isolated, {"feed_gap", "feed_malformed", "feed_disconnected", "stopped"})
    gaps = [e.details for e in events if e.event_type == "feed_gap"]
    assert [(d["stream"], d["expected"], d["received"]) for d in gaps] == [
        ("btcusdt@trade", 104, 107),
        ("ethusdt@trade", 203, 210),
    ]
    assert [e.event_type for e in events].count("feed_connected") == 2
    assert any(e.event_type == "feed_disconnected" and "1006" in e.message for e in events)
    assert any(e.event_type == "feed_malformed" for e in events)


def _metric(name: str) -> float:
    value = REGISTRY.get_sample_value(f"nexanest_feed_{name}_total", {"adapter": "binance"})
    return value or 0.0


async def test_nexanest_feed_run_coinbase(isolated: Settings, test_id: str) -> None:
    """The README's command, as a child process against the local venue server, ended with Ctrl-C."""
    matches = frames("coinbase", "matches")
    async with VenueServer(
        [[Send(matches), Drop()], [Send(frames("coinbase", "gaps"))]], subscribe_within_s=2
    ) as server:
        args = ["feed", "run", "coinbase", "--symbols", "BTC-USD,ETH-USD", "--url", server.url, "--source", test_id]
        child = await spawn_nexanest(isolated, *args)
        try:
            got = await read_ticks(isolated, 7)
        finally:
            await interrupt(child)
        out, err = await child.communicate()
    assert child.returncode == 0, (out + err).decode()[-3000:]
    assert [(t.symbol, t.price_e9) for _, _, t in sorted(got, key=lambda g: g[2].seq)] == [
        ("BTC-USD", 91_000_000_000_000),
        ("BTC-USD", 91_000_010_000_000),
        ("ETH-USD", 3_000_500_000_000),
        ("BTC-USD", 91_000_020_000_000),
        ("BTC-USD", 91_000_030_000_000),
        ("BTC-USD", 91_000_040_000_000),
        ("ETH-USD", 3_001_000_000_000),
    ]
    assert {t.source for _, _, t in got} == {test_id}
    assert "published 7 ticks" in out.decode()
    assert "rejected 0, reconnects 1, gaps 2" in out.decode()
    assert len(server.connections) == 2
