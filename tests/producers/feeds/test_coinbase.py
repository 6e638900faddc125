"""The Coinbase feed: its parser on recorded frames (playback), then the whole
adapter against the local venue server, which closes a connection that does not
subscribe in time as Coinbase does: exact ticks, the subscribe message sent at
once and again after every reconnect, malformed frames counted, trade-id gaps
reported (within a connection, across a reconnect, and from heartbeats), the
idle timeout."""

from __future__ import annotations

import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from nexanest.producers.feeds.coinbase import CoinbaseConfig, CoinbaseFeed, CoinbaseParser
from nexanest.producers.feeds.websocket import ConnectionOptions
from nexanest.producers.normalise import Normaliser
from nexanest.schemas.ticks import Tick
from tests.producers.feeds.venue_server import FAST_RETRY, Drop, FeedRun, Send, VenueServer, frames, play, until

SOURCE = "coinbase-test"
SUBSCRIBE = {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channels": ["matches", "heartbeat"]}
#: 2025-12-01T00:00:00Z in ns.
MIDNIGHT_NS = 1_764_547_200 * 10**9


def tick(symbol: str, price_e9: int, size_e9: int, ts_ns: int, seq: int) -> Tick:
    return Tick(
        symbol=symbol,
        exchange="COINBASE",
        price_e9=price_e9,
        size_e9=size_e9,
        ts_ns=ts_ns,
        source=SOURCE,
        seq=seq,
    )


#: tests/data/feeds/coinbase/matches.jsonl as ticks (ETH-USD mapped to ETH-USDX to show the map at work).
MATCHES = [
    tick("BTC-USD", 91_000_000_000_000, 10_000_000, MIDNIGHT_NS + 1_000, 0),  # last_match 5000
    tick("BTC-USD", 91_000_010_000_000, 250_000_000, MIDNIGHT_NS + 1_123_456_000, 1),  # 5001
    tick("ETH-USDX", 3_000_500_000_000, 2_000_000_000, MIDNIGHT_NS + 1_200_000_000, 2),  # 801
    tick("BTC-USD", 91_000_020_000_000, 100_000_000, MIDNIGHT_NS + 1_300_000_000, 3),  # 5002
]


def match_frame(trade_id: int, sequence: int, price: str, product: str = "BTC-USD", kind: str = "match") -> str:
    return json.dumps(
        {
            "type": kind,
            "trade_id": trade_id,
            "maker_order_id": "m",
            "taker_order_id": "t",
            "side": "buy",
            "size": "1",
            "price": price,
            "product_id": product,
            "sequence": sequence,
            "time": "2025-12-01T00:00:05.000000Z",
        }
    )


def parser() -> CoinbaseParser:
    normaliser = Normaliser("COINBASE", SOURCE, {"BTC-USD": "BTC-USD", "ETH-USD": "ETH-USDX"}, 0)
    return CoinbaseParser("ws://x", normaliser, ["BTC-USD", "ETH-USD"])


# --- playback: the parser alone ------------------------------------------------


def test_matches_become_exact_ticks_and_other_types_are_ignored() -> None:
    p = parser()
    results = play(p, frames("coinbase", "matches"))
    assert [t for r in results for t in r.ticks] == MATCHES
    assert all(r.malformed is None and not r.gaps and r.reconnect is None for r in results)
    assert p.ignored == 1  # the ticker message
    assert json.loads(p.subscribe_messages()[0]) == SUBSCRIBE


def test_malformed_messages_are_reported_not_raised() -> None:
    p = parser()
    play(p, frames("coinbase", "matches"))
    results = play(p, frames("coinbase", "malformed"))
    assert [r.malformed[0] if r.malformed else None for r in results] == [
        "bad_json",  # cut off
        "bad_shape",  # no price
        "bad_shape",  # trade id as a string
        "bad_shape",  # size as a JSON number
        "unknown_symbol",  # DOGE-USD is not subscribed
        "bad_timestamp",  # "yesterday"
        "bad_decimal",  # Infinity
        "bad_shape",  # a heartbeat without last_trade_id
        "bad_shape",  # no type
        "bad_shape",  # not an object
        None,  # status: a type this feed does not use, ignored
        None,  # error: a notice, not a malformed frame
    ]
    assert results[-1].notice == "error: Failed to subscribe ZZZ-USD is not a valid product"
    assert all(not r.ticks and not r.gaps for r in results)
    # Nothing was consumed by the bad frames: 5003 follows 5002 without a gap, with the next seq.
    after = play(p, [match_frame(5003, 70_100, "91000.5")])[0]
    assert after.gaps == []
    assert after.ticks[0].seq == len(MATCHES)


def test_trade_id_gaps_are_reported_late_and_repeated_messages_dropped() -> None:
    p = parser()
    play(p, frames("coinbase", "matches"))  # BTC-USD up to trade 5002, ETH-USD up to 801
    results = play(p, frames("coinbase", "gaps"))
    assert [g for r in results for g in r.gaps] == [
        ("BTC-USD matches", 5004, 5006),  # a match skipped two trades
        ("ETH-USD matches", 802, 805),  # a heartbeat says three trades were never sent
    ]
    assert [(t.symbol, t.price_e9) for r in results for t in r.ticks] == [
        ("BTC-USD", 91_000_030_000_000),  # 5003
        ("BTC-USD", 91_000_040_000_000),  # 5006
        ("ETH-USDX", 3_001_000_000_000),  # 805
    ]
    assert p.repeats == 2  # 5005 came with an older sequence, 5006 twice


def test_sequence_jumps_alone_are_no_gap() -> None:
    """The matches channel carries a subset of the product's sequence: 70005 then 70009 is normal."""
    p = parser()
    results = play(p, [match_frame(1, 100, "1"), match_frame(2, 250, "2"), match_frame(3, 900, "3")])
    assert [g for r in results for g in r.gaps] == []
    assert len([t for r in results for t in r.ticks]) == 3


# --- the adapter against the local venue server ----------------------------------


def feed(url: str, **options: float | None) -> CoinbaseFeed:
    config = CoinbaseConfig(products=["BTC-USD", "eth-usd"], url=url, symbol_map={"ETH-USD": "ETH-USDX"}, source=SOURCE)
    return CoinbaseFeed(config, ConnectionOptions(retry=FAST_RETRY, **options), seq_start=0)  # type: ignore[arg-type]


async def test_the_server_closes_a_client_that_does_not_subscribe() -> None:
    """The replay server enforces Coinbase's rule, so the next tests can prove the feed keeps it."""
    async with VenueServer([[Send(frames("coinbase", "matches"))]], subscribe_within_s=0.3) as server:
        async with connect(server.url) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
        assert server.connections[0].ended == "closed 1008: no subscribe"


async def test_a_session_subscribes_at_once_and_yields_the_exact_ticks() -> None:
    async with VenueServer([[Send(frames("coinbase", "matches"))]], subscribe_within_s=0.5) as server:
        async with FeedRun(feed(server.url)) as run:
            await run.ticks_at_least(len(MATCHES))
        assert run.ticks == MATCHES
        connection = server.connections[0]
        assert [json.loads(m) for m in connection.received] == [SUBSCRIBE]
        assert connection.first_message_after_s is not None
        assert connection.first_message_after_s < 0.5
        assert run.observer.gaps == []
        assert run.observer.bad == []


async def test_malformed_messages_are_counted_and_the_feed_goes_on() -> None:
    good, bad = frames("coinbase", "matches"), frames("coinbase", "malformed")
    async with VenueServer([[Send(good[:5] + bad + good[5:])]], subscribe_within_s=0.5) as server:
        async with FeedRun(feed(server.url)) as run:
            await run.ticks_at_least(len(MATCHES))
            await until(lambda: "Failed to subscribe" in run.feed.health().detail, "the venue's error in the status")
        assert run.ticks == MATCHES
        assert len(run.observer.bad) == 10 == run.feed.health().rejected
        assert len(server.connections) == 1


async def test_a_drop_reconnects_resubscribes_and_reports_the_trades_missed() -> None:
    after = [
        '{"type":"subscriptions","channels":[]}',
        match_frame(5004, 70_050, "91000.04", kind="last_match"),  # the latest trade: 5003 was missed
        match_frame(5005, 70_060, "91000.05"),
    ]
    async with VenueServer(
        [[Send(frames("coinbase", "matches")), Drop()], [Send(after)]], subscribe_within_s=0.5
    ) as server:
        async with FeedRun(feed(server.url)) as run:
            await run.ticks_at_least(len(MATCHES) + 2)
        assert run.ticks[: len(MATCHES)] == MATCHES
        assert [(t.price_e9, t.seq) for t in run.ticks[len(MATCHES) :]] == [
            (91_000_040_000_000, 4),
            (91_000_050_000_000, 5),
        ]
        assert run.observer.gaps == [("BTC-USD matches", 5003, 5004)]
        assert len(server.connections) == 2
        assert [json.loads(m) for c in server.connections for m in c.received] == [SUBSCRIBE, SUBSCRIBE]
        assert "1006" in run.observer.disconnects[0]


async def test_a_silent_connection_is_replaced() -> None:
    """Coinbase heartbeats every product each second; a connection silent for longer is dead."""
    matches = frames("coinbase", "matches")
    async with VenueServer([[Send(matches[:5])], [Send(matches[5:])]], subscribe_within_s=0.5) as server:
        async with FeedRun(feed(server.url, idle_timeout_s=0.3)) as run:
            await run.ticks_at_least(len(MATCHES))
        assert run.ticks == MATCHES
        assert len(server.connections) >= 2
        assert run.observer.disconnects[0] == "coinbase: no frame for 0.3 s"
