"""The tick: one trade print with the quote around it, as published to ``ticks``.

Wire format, version 1
----------------------
A Kafka record on the ``ticks`` topic:

* key: the symbol, UTF-8 (so all ticks of a symbol share a partition and stay
  in order);
* value: a MessagePack **map** with these string keys (all required unless
  marked optional; unknown keys are ignored, so producers may add fields):

  =============== ======== =====================================================
  key             type     meaning
  =============== ======== =====================================================
  ``v``           int      schema version, ``1``
  ``symbol``      str      instrument, upper case, e.g. ``AAPL``, ``BTC-USD``
                           (at most 32 characters)
  ``exchange``    str      venue the tick came from, e.g. ``XNAS`` (1-64
                           characters)
  ``price_e9``    int      trade price x 1e9
  ``size_e9``     int      trade size x 1e9
  ``bid_e9``      int|nil  best bid x 1e9 (optional)
  ``ask_e9``      int|nil  best ask x 1e9 (optional)
  ``ts_ns``       int      exchange time of the tick, ns since the Unix epoch
                           (a signed 64-bit integer)
  ``source``      str      the feed adapter instance that published it (1-128
                           characters)
  ``seq``         int      the adapter's sequence number for this tick, strictly
                           increasing per ``source``, from 0 to 2**63 - 1; with
                           ``source`` it names a tick uniquely and lets retries
                           be recognised
  =============== ======== =====================================================

Bounds. Every value the decoder accepts must be storable, or one tick would
fail its whole batch in the database (a poison pill). The ``Meta`` bounds below
are those of the columns and indexes: ``seq`` and ``ts_ns`` are ``BIGINT``
(``ts_ns`` as microseconds in ``TIMESTAMPTZ``), and ``exchange`` and
``source`` are kept short (``source`` is a key of the consumer's high-water
marks, ``ingest_seq_marks``). Prices and sizes need no bound: ``NUMERIC(20, 9)`` holds
magnitudes below 10**20 in e9 units, and a MessagePack integer is below 2**64.
A value out of bounds fails decoding with a message that names the field
(``schema_violation``). What a bound cannot say (no NUL character, which
PostgreSQL text cannot hold) is checked in ``pipeline/validation.py``.

Why MessagePack maps: measured with ``python -m benchmarks.micro.wire_encoding``
(msgspec 0.22, 200,000 ticks, one run on the 2-core dev machine), a tick is 141
bytes as MessagePack against 199 as JSON (0.71x), encodes in 0.82x and decodes
in 0.90x the time. Smaller records mean more ticks per Kafka batch and fetch.
Every language has a MessagePack library, and a map (rather than msgspec's
positional arrays) lets producers in other languages evolve without breaking us.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

TICK_SCHEMA_VERSION: Final = 1
PRICE_SCALE: Final = 1_000_000_000

#: Record headers that say "this tick may have been sent before, out of ``seq``
#: order on its partition": a publisher's re-send after a failed delivery, and a
#: dead letter re-published by ``nexanest dlq replay``. The consumer drops a
#: re-sent tick by its partition's high-water mark of ``seq``
#: (``pipeline/runner.py``); a tick with one of these headers is instead looked up
#: in ``stock_prices`` by ``(symbol, time, source, seq)`` and skipped only if it is
#: there (``pipeline/sinks/timescale.py``).
HEADER_RESENT: Final = "nexanest.resent"
HEADER_REPLAYED_FROM: Final = "nexanest.replayed_from"
LOOKUP_HEADERS: Final = frozenset({HEADER_RESENT, HEADER_REPLAYED_FROM})
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
MAX_SYMBOL_CHARS: Final = 32
MAX_EXCHANGE_CHARS: Final = 64
MAX_SOURCE_CHARS: Final = 128

Symbol = Annotated[str, msgspec.Meta(max_length=MAX_SYMBOL_CHARS)]
Exchange = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EXCHANGE_CHARS)]
Source = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SOURCE_CHARS)]
Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]


class Tick(msgspec.Struct, frozen=True, gc=False):
    """One tick. Immutable and untracked by the GC: millions pass through."""

    symbol: Symbol
    exchange: Exchange
    price_e9: int
    size_e9: int
    ts_ns: Int64
    source: Source
    seq: Seq
    bid_e9: int | None = None
    ask_e9: int | None = None
    v: int = TICK_SCHEMA_VERSION


_encoder: Final = msgspec.msgpack.Encoder()
#: The one decoder of ticks. ``TICK_DECODER.decode`` is ``decode_tick`` without
#: the Python call around it, for loops over many records (``pipeline/validation.py``).
TICK_DECODER: Final = msgspec.msgpack.Decoder(Tick)
_decoder: Final = TICK_DECODER


def encode_tick(tick: Tick) -> bytes:
    return _encoder.encode(tick)


def decode_tick(data: bytes) -> Tick:
    """Decode one tick; raises ``msgspec.DecodeError`` (a ``ValidationError`` for
    wrong types, missing fields or values out of bounds) on anything that is not
    a v1 tick, and ``UnicodeDecodeError`` or ``RecursionError`` for invalid UTF-8
    in a string or nesting deeper than msgspec follows: callers that take
    untrusted bytes catch all four (``pipeline/validation.py``)."""
    return _decoder.decode(data)


def format_e9(value_e9: int) -> str:
    """Render a fixed-point e9 integer as a plain decimal string, e.g. ``187.25``."""
    sign = "-" if value_e9 < 0 else ""
    units, frac = divmod(abs(value_e9), PRICE_SCALE)
    if frac == 0:
        return f"{sign}{units}"
    return f"{sign}{units}.{frac:09d}".rstrip("0")


def parse_e9(text: str) -> int:
    """Inverse of :func:`format_e9`; exact for up to 9 decimal places."""
    sign = -1 if text.startswith("-") else 1
    units, _, frac = text.lstrip("+-").partition(".")
    if len(frac) > 9:
        raise ValueError(f"{text!r} has more than 9 decimal places")
    return sign * (int(units or "0") * PRICE_SCALE + int(frac.ljust(9, "0") or "0"))
