"""Trade-id gap tracking for venues whose trade ids are consecutive per symbol.

Binance trade ids and Coinbase trade ids per product count up by one: an id
past the next one means trades were missed (a gap, reported with the expected
and the received id), one at or below the last is a repeat (dropped). The last
id of each symbol outlives a connection, so trades missed during a reconnect
are a gap too.
"""

from __future__ import annotations

from collections.abc import Callable

from nexanest.producers.feeds.venue_parser import FrameResult


class TradeIds:
    """The last trade id per venue symbol, for venues whose trade ids are consecutive
    per symbol: an id past the next one is a gap, one at or below the last is a repeat.
    The ids outlive a connection, so trades missed during a reconnect are a gap too.
    ``stream_of`` names a symbol's stream in a gap report (called only for a gap)."""

    __slots__ = ("_last", "_stream_of")

    def __init__(self, stream_of: Callable[[str], str]) -> None:
        #: Bounded by the subscribed symbols.
        self._last: dict[str, int] = {}
        self._stream_of = stream_of

    def accept(self, symbol: str, trade_id: int, out: FrameResult) -> bool:
        """Record ``trade_id``; ``False`` for a repeat (drop the trade), a gap reported
        to ``out`` as ``(stream, expected id, received id)``."""
        last = self._last.get(symbol)
        if last is not None:
            if trade_id <= last:
                return False
            if trade_id != last + 1:
                out.gaps.append((self._stream_of(symbol), last + 1, trade_id))
        self._last[symbol] = trade_id
        return True

    def seen_up_to(self, symbol: str, last_trade_id: int, out: FrameResult) -> None:
        """The venue says trades up to ``last_trade_id`` happened: those never seen
        (after the last one, when there is one) are a gap up to ``last_trade_id + 1``."""
        last = self._last.get(symbol)
        if last is None or last_trade_id > last:
            if last is not None:
                out.gaps.append((self._stream_of(symbol), last + 1, last_trade_id + 1))
            self._last[symbol] = last_trade_id
