"""The venue's half of a websocket feed: its parser, and what one frame held.

A venue feed (``binance.py``, ``coinbase.py``) supplies a ``VenueParser``: the
URL, the subscribe messages, and a ``parse`` that adds what a frame holds to a
``FrameResult`` (ticks, sequence gaps, a malformed-frame report, a request to
reconnect, a notice). ``websocket.py`` owns the connection and reports the
results. The helpers here are what both venues' parsers share: exact trade
amounts (``trade_amounts``) and the sample of a frame that a malformed report
carries (``sample``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from nexanest.producers.normalise import NormaliseError, decimal_e9
from nexanest.schemas.ticks import Tick

#: Characters of a malformed frame passed to the observer (which may truncate further).
SAMPLE_CHARS: Final = 512


@dataclass(slots=True)
class FrameResult:
    """What one frame held. ``parse`` fills it; the connection loop reports it and clears it.

    ``malformed`` is ``(reason, sample)``: ``reason`` a short stable code
    (``bad_json``, ``bad_shape``, ``unknown_symbol``, ``bad_decimal``, ...),
    ``sample`` the detail and the frame's start. ``reconnect`` says why the venue
    wants a new connection (its shutdown notice); the frame's ticks still count.
    """

    ticks: list[Tick] = field(default_factory=list)
    gaps: list[tuple[str, int, int]] = field(default_factory=list)
    malformed: tuple[str, str] | None = None
    reconnect: str | None = None
    #: Something the venue said that is neither data nor malformed (its error message): logged, shown in health.
    notice: str | None = None

    def clear(self) -> None:
        self.ticks.clear()
        self.gaps.clear()
        self.malformed = None
        self.reconnect = None
        self.notice = None


class VenueParser(Protocol):
    """The venue-specific half of a websocket feed.

    ``parse`` keeps the state it needs across frames and connections (the last
    trade id of each symbol), so a gap that spans a reconnect is reported too.
    It must not raise for anything a venue might send: a frame it cannot use is
    ``out.malformed``.
    """

    def url(self) -> str:
        """The URL to connect to (for Binance it names the streams)."""

    def subscribe_messages(self) -> Sequence[str]:
        """Text frames to send right after every connect (none when the URL subscribes)."""

    def parse(self, frame: str | bytes, out: FrameResult) -> None:
        """Add what ``frame`` holds to ``out``."""


def trade_amounts(price_text: str, size_text: str) -> tuple[int, int]:
    """A trade's price and size in e9 units, exact from the venue's strings.
    Raises ``NormaliseError`` for text that is no exact decimal, a price that is
    not positive or a negative size (the consumer would dead-letter the tick)."""
    price_e9, size_e9 = decimal_e9(price_text), decimal_e9(size_text)
    if price_e9 <= 0:
        raise NormaliseError("bad_price", f"price {price_text!r} is not positive")
    if size_e9 < 0:
        raise NormaliseError("bad_size", f"size {size_text!r} is negative")
    return price_e9, size_e9


def sample(frame: str | bytes) -> str:
    """The start of ``frame`` as text, for a malformed-frame report."""
    text = frame if isinstance(frame, str) else frame[:SAMPLE_CHARS].decode("utf-8", "replace")
    return text[:SAMPLE_CHARS]
