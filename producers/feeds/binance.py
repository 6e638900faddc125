"""Binance spot trade streams: ``nexanest feed run binance --symbols btcusdt,ethusdt``.

One connection to the combined stream endpoint,
``<url>/stream?streams=btcusdt@trade/ethusdt@trade``: the URL subscribes, so
nothing is sent after connecting (Binance counts every message a client sends
against 5 per second). Each frame is ``{"stream": "btcusdt@trade", "data":
{...}}`` with the trade event of Binance's published documentation::

    {"e": "trade", "E": 1672515782136, "s": "BTCUSDT", "t": 12345,
     "p": "0.001", "q": "100", "T": 1672515782136, "m": true, "M": true}

``p`` and ``q`` become exact e9 integers (never floats), ``T`` (trade time, ms)
the tick's time, ``s`` the symbol through the configured map, and the venue
code ``BINANCE`` its exchange. Bid and ask are not in a trade event: they stay
empty.

Limits honoured: the library answers Binance's ping (every 20 s; a pong more
than a minute late ends the connection) as frames arrive, in the reader's task;
a connection lives at most 24 hours, so the feed reconnects at
``venues.binance_max_connection_age_s`` (23.5 h) on its own terms; a
``serverShutdown`` event (bare, wrapped in ``event`` or in a combined frame)
means "reconnect now", done at once; at most 1024 streams per connection.

Gaps: trade ids (``t``) are consecutive per symbol, so an id more than one
past the last one seen, on this connection or before a reconnect, is a gap
(reported as ``<symbol>@trade``, expected id, received id); an id at or below
the last one is a repeat and is dropped.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final

import msgspec

from nexanest.pipeline.settings import Settings
from nexanest.producers.feeds.trade_ids import TradeIds
from nexanest.producers.feeds.venue_parser import FrameResult, sample, trade_amounts
from nexanest.producers.feeds.venue_plugin import add_venue_arguments, connection_options, venue_normaliser
from nexanest.producers.feeds.websocket import ConnectionOptions, WebSocketFeed
from nexanest.producers.normalise import NormaliseError, Normaliser, check_symbols, ts_ns_from_ms

VENUE: Final = "BINANCE"
#: Binance refuses a connection that asks for more streams.
MAX_STREAMS: Final = 1024


class _Trade(msgspec.Struct, tag_field="e", tag="trade"):
    s: str
    t: int
    p: str
    q: str
    T: int


class _Shutdown(msgspec.Struct, tag_field="e", tag="serverShutdown"):
    E: int = 0


class _Frame(msgspec.Struct):
    """A combined-stream frame, or a bare or ``event``-wrapped shutdown notice."""

    stream: str | None = None
    data: _Trade | _Shutdown | None = None
    e: str | None = None
    event: _Shutdown | None = None


_decoder: Final = msgspec.json.Decoder(_Frame)


class BinanceParser:
    """Frames of Binance's combined trade streams to ticks (see the module docstring)."""

    def __init__(self, base_url: str, normaliser: Normaliser, venue_symbols: Sequence[str]) -> None:
        if not venue_symbols:
            raise ValueError("binance: at least one symbol")
        if len(venue_symbols) > MAX_STREAMS:
            raise ValueError(f"binance: at most {MAX_STREAMS} symbols on one connection")
        self._base_url = base_url.rstrip("/")
        self._streams = [f"{symbol.lower()}@trade" for symbol in venue_symbols]
        self._normaliser = normaliser
        self._trade_ids = TradeIds(lambda symbol: f"{symbol.lower()}@trade")
        #: Trades dropped because their id was not past the last one (a venue repeat).
        self.repeats = 0

    def url(self) -> str:
        return f"{self._base_url}/stream?streams={'/'.join(self._streams)}"

    def subscribe_messages(self) -> Sequence[str]:
        return ()  # the URL names the streams

    def parse(self, frame: str | bytes, out: FrameResult) -> None:
        try:
            message = _decoder.decode(frame)
        except msgspec.ValidationError as exc:
            out.malformed = ("bad_shape", f"{exc}: {sample(frame)}")
            return
        except msgspec.DecodeError:
            out.malformed = ("bad_json", sample(frame))
            return
        data = message.data
        if isinstance(data, _Trade):
            self._trade(data, frame, out)
        elif isinstance(data, _Shutdown) or message.event is not None or message.e == "serverShutdown":
            out.reconnect = "serverShutdown"
        else:
            out.malformed = ("unexpected_frame", sample(frame))

    def _trade(self, trade: _Trade, frame: str | bytes, out: FrameResult) -> None:
        normaliser = self._normaliser
        symbol = normaliser.symbol(trade.s)
        if symbol is None:
            out.malformed = ("unknown_symbol", f"{trade.s!r} is not subscribed: {sample(frame)}")
            return
        try:
            price_e9, size_e9 = trade_amounts(trade.p, trade.q)
            ts_ns = ts_ns_from_ms(trade.T)
        except NormaliseError as exc:
            out.malformed = (exc.reason, f"{exc}: {sample(frame)}")
            return
        if not self._trade_ids.accept(trade.s, trade.t, out):
            self.repeats += 1
            return
        out.ticks.append(normaliser.tick(symbol, price_e9, size_e9, ts_ns))


@dataclass(frozen=True, slots=True)
class BinanceConfig:
    """What ``nexanest feed run binance`` needs besides the connection options."""

    #: Binance's spelling, any case: ``btcusdt``.
    symbols: Sequence[str]
    url: str = "wss://stream.binance.com:9443"
    #: Binance symbol (upper case) -> canonical symbol; unmapped symbols keep their upper-case form.
    symbol_map: Mapping[str, str] = field(default_factory=dict)
    source: str = "binance"


class BinanceFeed(WebSocketFeed):
    """Binance spot trades as ticks."""

    name: ClassVar[str] = "binance"
    venue: ClassVar[str] = VENUE

    def __init__(self, config: BinanceConfig, options: ConnectionOptions, *, seq_start: int | None = None) -> None:
        venue_symbols = [s.upper() for s in config.symbols]
        #: ``symbols``: the canonical symbols of the ticks.
        self.normaliser, self.symbols = venue_normaliser(
            VENUE, config.source, venue_symbols, config.symbol_map, seq_start
        )
        self.parser = BinanceParser(config.url, self.normaliser, venue_symbols)
        super().__init__(self.parser, options)


class BinancePlugin:
    """The ``nexanest.feeds`` entry point of the built-in Binance feed."""

    name = "binance"
    summary = "Binance spot trade streams over a websocket (reconnects, gap detection, 24 h connection limit)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_venue_arguments(
            parser,
            self.name,
            symbols_help="Binance symbols, comma-separated: btcusdt,ethusdt",
            map_help="canonical names: BTCUSDT=BTC-USDT,... (default: the upper-case Binance symbol)",
            url_help="websocket base URL (default: NEXANEST_VENUES__BINANCE_URL)",
        )

    def create(self, args: argparse.Namespace, settings: Settings) -> BinanceFeed:
        config = BinanceConfig(
            symbols=args.symbols,
            url=args.url or settings.venues.binance_url,
            symbol_map=args.symbol_map,
            source=args.source,
        )
        options = connection_options(settings, max_connection_age_s=settings.venues.binance_max_connection_age_s)
        feed = BinanceFeed(config, options)
        check_symbols(feed.symbols, settings.validation.symbol_pattern)
        return feed
