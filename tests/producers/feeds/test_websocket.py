"""The pieces the websocket feeds share: option parsing, the plugins' options and
settings, trade amounts, and what a feed does with an invalid URL or a parser bug."""

from __future__ import annotations

import argparse
import time

import pytest

from nexanest.pipeline.settings import RetrySettings, Settings, VenueSettings
from nexanest.producers.feeds import registry
from nexanest.producers.feeds.binance import BinanceFeed, BinancePlugin
from nexanest.producers.feeds.coinbase import CoinbaseFeed, CoinbasePlugin
from nexanest.producers.feeds.venue_parser import FrameResult, trade_amounts
from nexanest.producers.feeds.venue_plugin import parse_symbols
from nexanest.producers.feeds.websocket import ConnectionOptions, WebSocketFeed
from nexanest.producers.normalise import NormaliseError, parse_symbol_map
from tests.producers.feeds.venue_server import FeedRun, Send, VenueServer, frames, until


def test_symbol_lists_and_maps() -> None:
    assert parse_symbols(" btcusdt, ethusdt ,") == ["btcusdt", "ethusdt"]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_symbols(" , ")
    assert parse_symbol_map("btcusdt=BTC-USDT, ETHUSDT = ETH-USDT") == {"BTCUSDT": "BTC-USDT", "ETHUSDT": "ETH-USDT"}
    for bad in ("BTCUSDT", "=BTC", "BTC="):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_symbol_map(bad)


def test_trade_amounts_are_exact_and_positive() -> None:
    assert trade_amounts("0.1", "0.2") == (100_000_000, 200_000_000)
    assert trade_amounts("91234.123456789", "0") == (91_234_123_456_789, 0)
    for price, size, reason in (("0", "1", "bad_price"), ("-1", "1", "bad_price"), ("1", "-0.5", "bad_size")):
        with pytest.raises(NormaliseError) as error:
            trade_amounts(price, size)
        assert error.value.reason == reason


def settings() -> Settings:
    return Settings(
        venues=VenueSettings(binance_url="ws://127.0.0.1:1", coinbase_url="ws://127.0.0.1:2/feed"),
        retry=RetrySettings(initial_backoff_s=0.3, max_backoff_s=3.0),
    )


def test_the_binance_plugin_builds_a_feed_from_options_and_settings() -> None:
    plugin = BinancePlugin()
    parser = argparse.ArgumentParser()
    plugin.add_arguments(parser)
    feed = plugin.create(
        parser.parse_args(["--symbols", "btcusdt,ethusdt", "--symbol-map", "btcusdt=BTC-USDT"]), settings()
    )
    assert isinstance(feed, BinanceFeed)
    assert feed.url == "ws://127.0.0.1:1/stream?streams=btcusdt@trade/ethusdt@trade"
    assert feed.normaliser.symbol("BTCUSDT") == "BTC-USDT"
    assert feed.normaliser.symbol("ETHUSDT") == "ETHUSDT"
    assert feed.normaliser.symbol("DOGEUSDT") is None
    assert feed.normaliser.source == "binance"
    # A live feed numbers from the clock, so a restart with the same source never reuses a number.
    assert abs(feed.normaliser.next_seq() - time.time_ns()) < 60 * 10**9
    other = plugin.create(
        parser.parse_args(["--symbols", "btcusdt", "--url", "ws://h:9", "--source", "b2"]), settings()
    )
    assert other.url == "ws://h:9/stream?streams=btcusdt@trade"
    assert other.normaliser.source == "b2"
    assert (BinanceFeed.name, BinanceFeed.venue) == ("binance", "BINANCE")
    # A canonical symbol the consumer would dead-letter is refused at start.
    with pytest.raises(ValueError, match="btc-usdt"):
        plugin.create(parser.parse_args(["--symbols", "btcusdt", "--symbol-map", "BTCUSDT=btc-usdt"]), settings())


def test_the_coinbase_plugin_builds_a_feed_with_the_idle_timeout() -> None:
    plugin = CoinbasePlugin()
    parser = argparse.ArgumentParser()
    plugin.add_arguments(parser)
    feed = plugin.create(parser.parse_args(["--symbols", "btc-usd"]), settings())
    assert isinstance(feed, CoinbaseFeed)
    assert feed.url == "ws://127.0.0.1:2/feed"
    assert feed.normaliser.symbol("BTC-USD") == "BTC-USD"
    assert feed._options.idle_timeout_s == settings().venues.coinbase_idle_timeout_s
    assert feed._options.retry.initial_backoff_s == 0.3
    assert (CoinbaseFeed.name, CoinbaseFeed.venue) == ("coinbase", "COINBASE")
    with pytest.raises(ValueError, match="BTC USD"):
        plugin.create(parser.parse_args(["--symbols", "BTC-USD", "--symbol-map", "BTC-USD=BTC USD"]), settings())


class _Parser:
    """A parser whose ``parse`` raises on every other frame: a bug, not a bad frame."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.calls = 0

    def url(self) -> str:
        return self._url

    def subscribe_messages(self) -> tuple[str, ...]:
        return ()

    def parse(self, frame: str | bytes, out: FrameResult) -> None:
        self.calls += 1
        if self.calls % 2 == 0:
            raise KeyError("a bug")
        out.notice = None


def test_an_invalid_url_fails_at_once() -> None:
    with pytest.raises(ValueError, match="not a websocket URL"):
        WebSocketFeed(_Parser("http://not-a-websocket"), ConnectionOptions())


async def test_a_parser_bug_is_counted_as_malformed_and_reading_goes_on() -> None:
    lines = frames("binance", "trades")
    async with VenueServer([[Send(lines)]]) as server:
        parser = _Parser(server.url)
        async with FeedRun(WebSocketFeed(parser, ConnectionOptions())) as run:
            await until(lambda: parser.calls == len(lines), "every frame parsed")
        assert [reason for reason, _ in run.observer.bad] == ["parser_error", "parser_error"]
        assert "KeyError('a bug')" in run.observer.bad[0][1]
        assert run.feed.health().rejected == 2


def test_both_feeds_are_registered_entry_points() -> None:
    assert isinstance(registry.load("binance"), BinancePlugin)
    assert isinstance(registry.load("coinbase"), CoinbasePlugin)
