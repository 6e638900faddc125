"""What one request of the market data service may ask for, and how its streams behave.

Every read is bounded before it reaches Redis or the database: a request names
at most so many symbols, a tick page holds at most so many rows over at most so
long a range, a bar request at most so many bars. A request beyond a bound is
refused (422 with a problem body), never silently cut short, so a client never
mistakes a truncated answer for the whole one.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator


class MarketDataLimits(BaseModel):
    """The service's bounds and stream settings; the defaults suit production."""

    model_config = ConfigDict(frozen=True)

    #: Symbols in one ``GET /quotes?symbols=``: one Redis round trip reads them all.
    max_quote_symbols: int = Field(default=100, ge=1, le=1000)
    #: Rows of one tick page when ``limit`` is not given, and the most it may ask for.
    default_tick_page: int = Field(default=500, ge=1)
    max_tick_page: int = Field(default=5000, ge=1)
    #: The longest ``[from, to)`` of a tick listing (a range scan over that many
    #: hourly chunks is planned on every page), and the range when ``from`` is not given.
    max_tick_range: timedelta = Field(default=timedelta(days=1), gt=timedelta(0))
    default_tick_range: timedelta = Field(default=timedelta(hours=1), gt=timedelta(0))
    #: Bars in one ``GET /bars`` (the range divided by the interval), and how many
    #: bars back ``from`` lies when it is not given.
    max_bars: int = Field(default=5000, ge=1)
    default_bars: int = Field(default=500, ge=1)
    #: Longest a database read may take before it is cancelled (and answered with 500).
    query_timeout_s: float = Field(default=10.0, gt=0)
    #: Symbols one stream may follow.
    max_stream_symbols: int = Field(default=200, ge=1, le=1000)
    #: Streams one process serves at once; one more is refused with 503.
    max_streams: int = Field(default=1000, ge=1)
    #: A keep-alive comment goes out this often on every stream (proxies close
    #: connections silent for longer than about a minute; 15 s is the usual figure).
    keepalive_s: float = Field(default=15.0, gt=0, le=15.0)
    #: Updates waiting for one client. A client that lets this many pile up is
    #: dropped (its stream ends), rather than buffered without bound. One batch of
    #: the consumer may update every symbol a stream follows at once, so this is at
    #: least ``max_stream_symbols`` (the default leaves five such batches of slack).
    stream_queue: int = Field(default=1024, ge=1)
    #: A send that a client's socket does not accept within this long ends its
    #: stream: a client that stopped reading holds its connection no longer than
    #: this after its queue overflowed (or after a keep-alive, on a quiet stream).
    stream_send_timeout_s: float = Field(default=10.0, gt=0)
    #: How often a stream checks that its access token is still accepted (a
    #: revoked session ends the stream within this time).
    stream_reverify_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> MarketDataLimits:
        if self.stream_queue < self.max_stream_symbols:
            raise ValueError("stream_queue must be at least max_stream_symbols: one batch may update every symbol")
        if self.default_tick_page > self.max_tick_page or self.default_bars > self.max_bars:
            raise ValueError("a default page or bar count is above its maximum")
        if self.default_tick_range > self.max_tick_range:
            raise ValueError("default_tick_range is longer than max_tick_range")
        return self
