"""What the market data service answers, and how it writes numbers and times.

**Prices, sizes, volumes are decimal strings**: ``"187.25"``, ``"0.000000001"``,
``"100"``. The pipeline carries them as integers x 1e9 (``schemas/ticks.py``)
and stores them as ``NUMERIC(20, 9)``; both render here through the same
``format_e9`` (the shortest exact decimal, never an exponent), so a quote, a
tick and a bar write one price identically, and a client reads it into its own
decimal type without rounding. A JSON number would go through an IEEE double in
most clients (JavaScript, jq) and lose digits past the 15th or so.

**Times** are RFC 3339 in UTC. Stored ticks and bars have microseconds (the
database's resolution). A quote has the tick's exchange time both ways:
``time`` (to the microsecond) and ``ts_ns`` (the exact integer nanoseconds the
feed gave, which also orders quotes with ``seq``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, Field

from nexanest.pipeline.db import ns_to_datetime
from nexanest.pipeline.sinks.ohlcv import Resolution
from nexanest.schemas.ticks import format_e9

#: An exact decimal as a string.
DecimalText = Annotated[str, Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", examples=["187.25"])]


def decimal_text(value: Decimal) -> str:
    """A stored ``NUMERIC(p, 9)`` as the pipeline writes an e9 integer (``format_e9``)."""
    return format_e9(int(value.scaleb(9)))


def optional_decimal_text(value: Decimal | None) -> str | None:
    return None if value is None else decimal_text(value)


class Quote(BaseModel):
    """The latest quote of a symbol (or of a market index), as the pipeline keeps it in Redis."""

    symbol: str
    price: DecimalText
    bid: DecimalText | None
    ask: DecimalText | None
    size: DecimalText
    exchange: str
    #: The exchange time of the tick that set the quote.
    time: datetime
    ts_ns: int
    #: The feed's sequence number of that tick.
    seq: int
    #: When the pipeline wrote the quote (its age is ``now - updated_at``).
    updated_at: datetime

    @classmethod
    def from_fields(
        cls,
        symbol: str,
        *,
        ts_ns: int,
        seq: int,
        price: str,
        bid: str | None,
        ask: str | None,
        size: str,
        exchange: str,
        updated_ns: int,
    ) -> Quote:
        return cls(
            symbol=symbol,
            price=price,
            bid=bid,
            ask=ask,
            size=size,
            exchange=exchange,
            time=ns_to_datetime(ts_ns),
            ts_ns=ts_ns,
            seq=seq,
            updated_at=ns_to_datetime(updated_ns),
        )


class Quotes(BaseModel):
    """The quotes found, in the order asked for, and the symbols that have none."""

    quotes: list[Quote]
    missing: list[str]


class TickRow(BaseModel):
    """One stored tick."""

    time: datetime
    price: DecimalText
    size: DecimalText
    bid: DecimalText | None
    ask: DecimalText | None
    exchange: str
    #: The feed adapter instance and its sequence number: together with ``time``
    #: they name the tick (and order the ticks of one time).
    source: str
    seq: int


class TickPage(BaseModel):
    """Ticks in ``[from, to)``, oldest first. ``next_cursor`` continues the listing
    (pass it as ``cursor``); ``null`` on the last page."""

    symbol: str
    ticks: list[TickRow]
    next_cursor: str | None


class Bar(BaseModel):
    """One OHLCV bar; ``bucket`` is its start. ``vwap`` is ``null`` when every tick had size 0."""

    bucket: datetime
    open: DecimalText
    high: DecimalText
    low: DecimalText
    close: DecimalText
    volume: DecimalText
    trade_count: int
    vwap: DecimalText | None


class Bars(BaseModel):
    """The bars of ``symbol`` whose bucket overlaps ``[from, to)``, oldest first."""

    symbol: str
    interval: Resolution
    bars: list[Bar]


class IndexValue(BaseModel):
    """One computed value of a market index."""

    time: datetime
    value: DecimalText
    constituents: int
    #: How it was computed (``equal_weight`` or ``price_weighted``; see ``IndexDefinition``).
    method: str


class IndexPage(BaseModel):
    """Values of an index in ``[from, to)``, oldest first, paged like ticks."""

    name: str
    values: list[IndexValue]
    next_cursor: str | None
