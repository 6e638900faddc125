"""Coinbase Exchange trades: ``nexanest feed run coinbase --symbols BTC-USD,ETH-USD``.

On every connect the feed sends, before reading anything (Coinbase closes a
connection that has not subscribed within 5 seconds)::

    {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["matches", "heartbeat"]}

and reads the messages of Coinbase's published documentation: ``subscriptions``
(the confirmation), ``last_match`` (the product's latest trade, sent on
subscribing) and ``match`` (each trade)::

    {"type": "match", "trade_id": 10, "sequence": 50, "maker_order_id": "...",
     "taker_order_id": "...", "time": "2014-11-07T08:19:27.028459Z",
     "product_id": "BTC-USD", "size": "5.23512", "price": "400.23", "side": "sell"}

``heartbeat`` (every second per product: ``sequence``, ``last_trade_id``,
``product_id``, ``time``) and ``error`` (logged and shown in the feed's
status). Other message types are ignored, as Coinbase asks of clients (it may
add types at any time).

A ``match`` or ``last_match`` becomes a tick: ``price`` and ``size`` exact e9
integers, ``time`` (RFC 3339, microseconds) UTC nanoseconds, ``product_id``
the symbol through the configured map, exchange ``COINBASE``.

Sequence numbers and gaps. ``sequence`` counts every message of a product's
order book (the full channel), so the matches subset skips numbers all the
time: a jump in ``sequence`` is no loss here. It still orders messages: one at
or below the product's last ``sequence`` is late or repeated and is dropped
(the documentation's advice). Trade ids are consecutive per product, so a
``match`` whose ``trade_id`` is more than one past the last one seen is a gap
(``<product> matches``, expected id, received id), and a ``heartbeat`` whose
``last_trade_id`` is past the last trade seen reports the trades that never
arrived (expected id, ``last_trade_id + 1``), even when no later match comes.
Trades missed during a reconnect are reported the same way: the ids outlive the
connection. A trade id at or below the last one is a repeat (``last_match``
after a reconnect) and is dropped.
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
from nexanest.producers.normalise import NormaliseError, Normaliser, check_symbols, ts_ns_from_iso

VENUE: Final = "COINBASE"
CHANNELS: Final = ("matches", "heartbeat")


class _Match(msgspec.Struct, tag_field="type", tag="match"):
    trade_id: int
    sequence: int
    product_id: str
    price: str
    size: str
    time: str


class _LastMatch(_Match, tag="last_match"):
    pass


class _Heartbeat(msgspec.Struct, tag_field="type", tag="heartbeat"):
    sequence: int
    last_trade_id: int
    product_id: str


class _Subscriptions(msgspec.Struct, tag_field="type", tag="subscriptions"):
    pass


class _Error(msgspec.Struct, tag_field="type", tag="error"):
    message: str = ""
    reason: str = ""


class _Envelope(msgspec.Struct):
    type: str


_decoder: Final = msgspec.json.Decoder(_Match | _LastMatch | _Heartbeat | _Subscriptions | _Error)
_envelope: Final = msgspec.json.Decoder(_Envelope)
_KNOWN: Final = frozenset({"match", "last_match", "heartbeat", "subscriptions", "error"})


class CoinbaseParser:
    """Coinbase Exchange ``matches`` and ``heartbeat`` messages to ticks and gaps."""

    def __init__(self, url: str, normaliser: Normaliser, product_ids: Sequence[str]) -> None:
        if not product_ids:
            raise ValueError("coinbase: at least one product")
        self._url = url
        self._products = list(product_ids)
        self._normaliser = normaliser
        self._subscribe = msgspec.json.encode(
            {"type": "subscribe", "product_ids": self._products, "channels": list(CHANNELS)}
        ).decode()
        #: Per product (bounded by the subscribed products): the last sequence seen.
        self._last_sequence: dict[str, int] = {}
        self._trade_ids = TradeIds(lambda product: f"{product} matches")
        #: Messages dropped as late or repeated (sequence or trade id not past the last one).
        self.repeats = 0
        #: Messages of types this feed does not use (ignored, as Coinbase asks).
        self.ignored = 0

    def url(self) -> str:
        return self._url

    def subscribe_messages(self) -> Sequence[str]:
        return (self._subscribe,)

    def parse(self, frame: str | bytes, out: FrameResult) -> None:
        try:
            message = _decoder.decode(frame)
        except msgspec.ValidationError as exc:
            self._unknown_or_bad(frame, exc, out)
            return
        except msgspec.DecodeError:
            out.malformed = ("bad_json", sample(frame))
            return
        if isinstance(message, _Match):  # and _LastMatch
            self._match(message, frame, out)
        elif isinstance(message, _Heartbeat):
            self._heartbeat(message, frame, out)
        elif isinstance(message, _Error):
            out.notice = f"error: {message.message} {message.reason}".strip()

    def _unknown_or_bad(self, frame: str | bytes, exc: msgspec.ValidationError, out: FrameResult) -> None:
        """A message of a type we do not use is ignored; one of a type we use, with a
        missing or mistyped field, is malformed (as is anything without a ``type``)."""
        try:
            kind = _envelope.decode(frame).type
        except msgspec.DecodeError:
            kind = None
        if kind is not None and kind not in _KNOWN:
            self.ignored += 1
            return
        out.malformed = ("bad_shape", f"{exc}: {sample(frame)}")

    def _in_order(self, product: str, sequence: int) -> bool:
        last = self._last_sequence.get(product)
        if last is not None and sequence <= last:
            self.repeats += 1
            return False
        self._last_sequence[product] = sequence
        return True

    def _match(self, match: _Match, frame: str | bytes, out: FrameResult) -> None:
        normaliser = self._normaliser
        product = match.product_id
        symbol = normaliser.symbol(product)
        if symbol is None:
            out.malformed = ("unknown_symbol", f"{product!r} is not subscribed: {sample(frame)}")
            return
        try:
            price_e9, size_e9 = trade_amounts(match.price, match.size)
            ts_ns = ts_ns_from_iso(match.time)
        except NormaliseError as exc:
            out.malformed = (exc.reason, f"{exc}: {sample(frame)}")
            return
        if not self._in_order(product, match.sequence):
            return
        if not self._trade_ids.accept(product, match.trade_id, out):
            self.repeats += 1
            return
        out.ticks.append(normaliser.tick(symbol, price_e9, size_e9, ts_ns))

    def _heartbeat(self, heartbeat: _Heartbeat, frame: str | bytes, out: FrameResult) -> None:
        product = heartbeat.product_id
        if self._normaliser.symbol(product) is None:
            out.malformed = ("unknown_symbol", f"{product!r} is not subscribed: {sample(frame)}")
            return
        if not self._in_order(product, heartbeat.sequence):
            return
        self._trade_ids.seen_up_to(product, heartbeat.last_trade_id, out)


@dataclass(frozen=True, slots=True)
class CoinbaseConfig:
    """What ``nexanest feed run coinbase`` needs besides the connection options."""

    #: Coinbase product ids: ``BTC-USD``.
    products: Sequence[str]
    url: str = "wss://ws-feed.exchange.coinbase.com"
    #: Product id -> canonical symbol; unmapped products keep their id (upper case).
    symbol_map: Mapping[str, str] = field(default_factory=dict)
    source: str = "coinbase"


class CoinbaseFeed(WebSocketFeed):
    """Coinbase Exchange trades as ticks."""

    name: ClassVar[str] = "coinbase"
    venue: ClassVar[str] = VENUE

    def __init__(self, config: CoinbaseConfig, options: ConnectionOptions, *, seq_start: int | None = None) -> None:
        products = [p.upper() for p in config.products]
        #: ``symbols``: the canonical symbols of the ticks.
        self.normaliser, self.symbols = venue_normaliser(VENUE, config.source, products, config.symbol_map, seq_start)
        self.parser = CoinbaseParser(config.url, self.normaliser, products)
        super().__init__(self.parser, options)


class CoinbasePlugin:
    """The ``nexanest.feeds`` entry point of the built-in Coinbase feed."""

    name = "coinbase"
    summary = "Coinbase Exchange matches + heartbeat over a websocket (reconnects, trade-id gap detection)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_venue_arguments(
            parser,
            self.name,
            symbols_help="Coinbase product ids, comma-separated: BTC-USD,ETH-USD",
            map_help="canonical names: BTC-USD=XBT-USD,... (default: the product id)",
            url_help="websocket URL (default: NEXANEST_VENUES__COINBASE_URL)",
        )

    def create(self, args: argparse.Namespace, settings: Settings) -> CoinbaseFeed:
        config = CoinbaseConfig(
            products=args.symbols,
            url=args.url or settings.venues.coinbase_url,
            symbol_map=args.symbol_map,
            source=args.source,
        )
        feed = CoinbaseFeed(
            config, connection_options(settings, idle_timeout_s=settings.venues.coinbase_idle_timeout_s)
        )
        check_symbols(feed.symbols, settings.validation.symbol_pattern)
        return feed
