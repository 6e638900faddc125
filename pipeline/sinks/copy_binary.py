"""PostgreSQL's binary COPY format for ``stock_prices`` rows, straight from a tick's integers.

``asyncpg.Connection.copy_records_to_table`` needs a ``Decimal`` per price and a
``datetime`` per time, and then turns each back into bytes; the profile in
``benchmarks/RESULTS.md`` put about 70% of the consumer's CPU there. This module
writes the same COPY stream from the wire integers (``price_e9``, ``ts_ns``, ...)
without building those objects; send it with::

    data = encoder.encode(rows)  # a bytearray
    await conn.copy_to_table(table, source=data, columns=COPY_COLUMNS, format="binary")

Pass the bytearray (or a memoryview of it), never ``bytes(data)``: asyncpg's
``copy_to_table`` takes a ``bytes`` source for a file *name* (``os.fspath``
accepts bytes) and fails with "embedded null byte". One buffer per batch is
also what measured best: an async iterable of 1,000-row chunks (so that the
server parses one while the next is encoded) was the same within noise.

Measured with ``python -m benchmarks.micro.copy_encoding`` (200,000 synthetic ticks,
5,000-row COPY transactions into empty copies of ``stock_prices``, the 2-core
dev machine under load ~2, three runs): ``stock_price_row`` +
``copy_records_to_table`` 40-42 us/row against 21-23 us/row for this encoder +
``copy_to_table`` (1.81-1.90x). The client's CPU per row went from ~22.5 us to
~4.1 us; the rest, ~18.5 us, is the server's (COPY of buffers encoded
beforehand: 18.3-19.1 us/row), so the COPY is now bound by the server.

The stream (PostgreSQL's documentation, "COPY", section "Binary Format"): the
11-byte signature, an int32 of flags (0), an int32 header extension length (0);
per row an int16 field count, then per field an int32 length (-1 for NULL) and
the value in the type's binary send/recv form; an int16 -1 as trailer. All
integers are big-endian. The values:

* ``timestamptz``: int64 microseconds since 2000-01-01 00:00 UTC;
* ``text``: the UTF-8 bytes (asyncpg always sets ``client_encoding`` to UTF8,
  and the server reads binary text in the client encoding);
* ``numeric``: int16 ndigits, int16 weight, int16 sign (0x0000 positive,
  0x4000 negative), int16 dscale, then ndigits int16 base-10000 digits, most
  significant first; the value is the sum of ``digit[i] * 10000 ** (weight - i)``.
  Leading and trailing zero digits are left out, as PostgreSQL itself sends
  them; zero is no digits at all. dscale is always 9: the column is
  ``NUMERIC(20, 9)`` and an e9 integer has exactly 9 decimal places;
* ``int8``/``int4``: the integer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Final

from nexanest.schemas.ticks import Tick

#: The columns of ``stock_prices``, in the order :meth:`StockPriceCopyEncoder.encode`
#: writes them; ``pipeline.sinks.timescale.COLUMNS`` is this tuple.
COPY_COLUMNS: Final = (
    "time",
    "symbol",
    "price",
    "size",
    "bid",
    "ask",
    "exchange",
    "source",
    "source_seq",
    "kafka_partition",
    "kafka_offset",
)

COPY_SIGNATURE: Final = b"PGCOPY\n\xff\r\n\x00"
#: Signature, flags (no OIDs), header extension length 0.
COPY_HEADER: Final = COPY_SIGNATURE + struct.pack("!ii", 0, 0)
COPY_TRAILER: Final = struct.pack("!h", -1)

NUMERIC_DSCALE: Final = 9
NUMERIC_POS: Final = 0x0000
NUMERIC_NEG: Final = 0x4000
#: 2000-01-01 00:00 UTC in microseconds since the Unix epoch.
PG_EPOCH_US: Final = 946_684_800_000_000

_E9: Final = 1_000_000_000
_E13: Final = 10**13
_NULL: Final = struct.pack("!i", -1)
_LENGTH: Final = struct.Struct("!i").pack
# A row ends with source_seq, kafka_partition and kafka_offset (with their lengths)
# and the next one starts with its field count and time: one pack writes both.
_ROW_TAIL: Final = struct.Struct("!iqiiiq")
_ROW_TAIL_AND_HEAD: Final = struct.Struct("!iqiiiqhiq").pack
_FIELD_COUNT: Final = len(COPY_COLUMNS)
_PLACEHOLDER: Final = _ROW_TAIL.size

# A whole numeric field (int32 length, then the value) per digit count, so that one
# pack call writes it. e9 integers that fit an int64 need at most 6 digits.
_NUMERIC_FIELDS: Final = tuple(struct.Struct(f"!ihhhh{n}H") for n in range(8))
_P3: Final = _NUMERIC_FIELDS[3].pack
_P4: Final = _NUMERIC_FIELDS[4].pack
_ZERO: Final = _NUMERIC_FIELDS[0].pack(8, 0, 0, NUMERIC_POS, NUMERIC_DSCALE)
# Tables for the commonest shapes, whole prices and sizes (one digit) and prices
# to 4 decimal places, e.g. in cents (two digits): looking up and concatenating
# is cheaper than a pack call. 30,000 small bytes objects, about 1.5 MB, built in
# a few ms at import. Indexed by the first (integer) digit, 1 to 9999.
_DIGIT: Final = tuple(struct.pack("!H", d) for d in range(10_000))
_ONE_DIGIT: Final = tuple(_NUMERIC_FIELDS[1].pack(10, 1, 0, NUMERIC_POS, NUMERIC_DSCALE, d) for d in range(10_000))
_TWO_DIGITS_FIRST: Final = tuple(
    struct.pack("!ihhhhH", 12, 2, 0, NUMERIC_POS, NUMERIC_DSCALE, d) for d in range(10_000)
)


def encode_numeric_e9(value_e9: int) -> bytes:
    """The COPY field (int32 length + binary numeric) of ``value_e9 / 1e9`` at scale 9.

    Any integer is encoded exactly; whether it fits the column is the server's
    check (``NUMERIC(20, 9)`` holds below 10**11, so beyond that COPY fails with
    "numeric field overflow", as it would for the ``Decimal``). Raises
    ``struct.error`` only for values beyond what a numeric can hold at all.
    """
    # The fast path: 1 <= value < 10000, most prices and sizes. One integer digit
    # (weight 0); the 9 decimal places, padded to 12, make three more digits:
    # frac // 10**5, (frac % 10**5) // 10 and (frac % 10) * 1000. Only trailing
    # zero digits can need stripping. (// and % beat divmod's tuple here.)
    if _E9 <= value_e9 < _E13:
        units = value_e9 // _E9
        frac = value_e9 % _E9
        if not frac:
            return _ONE_DIGIT[units]
        rest = frac % 100_000
        if not rest:
            return _TWO_DIGITS_FIRST[units] + _DIGIT[frac // 100_000]
        last = rest % 10
        if not last:
            return _P3(14, 3, 0, NUMERIC_POS, NUMERIC_DSCALE, units, frac // 100_000, rest // 10)
        return _P4(16, 4, 0, NUMERIC_POS, NUMERIC_DSCALE, units, frac // 100_000, rest // 10, last * 1000)
    return _encode_numeric_any(value_e9)


def _encode_numeric_any(value_e9: int) -> bytes:
    """Every other value: zero, negative, below 1, or 10000 and above."""
    if not value_e9:
        return _ZERO
    sign = NUMERIC_POS
    if value_e9 < 0:
        sign = NUMERIC_NEG
        value_e9 = -value_e9
    units, frac = divmod(value_e9, _E9)
    d1, rest = divmod(frac, 100_000)
    d2, d3 = divmod(rest, 10)
    digits = [d1, d2, d3 * 1000]
    weight = -1  # of the first fractional digit
    if units:
        whole: list[int] = []
        while units:
            units, digit = divmod(units, 10_000)
            whole.append(digit)
        whole.reverse()
        digits = whole + digits
        weight = len(whole) - 1
    else:
        while not digits[0]:  # the value is not zero, so a digit is not zero
            del digits[0]
            weight -= 1
    while not digits[-1]:
        del digits[-1]
    n = len(digits)
    fields = _NUMERIC_FIELDS[n] if n < len(_NUMERIC_FIELDS) else struct.Struct(f"!ihhhh{n}H")
    return fields.pack(8 + 2 * n, n, weight, sign, NUMERIC_DSCALE, *digits)


def encode_text_field(text: str) -> bytes:
    """The COPY field (int32 length + UTF-8) of a text value.

    Raises ``UnicodeEncodeError`` for a lone surrogate. A NUL character encodes
    but the server rejects it (text cannot hold one), failing the whole COPY.
    """
    data = text.encode()
    return _LENGTH(len(data)) + data


class StockPriceCopyEncoder:
    """Encodes batches of ticks as binary COPY streams for ``stock_prices``.

    Keep one per sink: it caches the encoded symbol, exchange and source text
    fields across batches (up to ``max_cached_texts`` distinct strings, then it
    starts over), and the numeric fields of prices and sizes (up to
    ``max_cached_numerics`` values, plus at most four per row of the batch being
    encoded; 0 turns it off). Not thread-safe; ``encode`` does no I/O and never
    blocks.
    """

    #: Batches encoded without the numeric cache after one in which it missed
    #: more often than it hit (prices with no repeats, e.g. random sizes).
    NUMERIC_CACHE_REST: Final = 16

    def __init__(self, *, max_cached_texts: int = 100_000, max_cached_numerics: int = 65_536) -> None:
        if max_cached_texts < 3:
            raise ValueError("max_cached_texts must be at least 3 (one row's texts)")
        if max_cached_numerics < 0:
            raise ValueError("max_cached_numerics must be at least 0 (0: no numeric cache)")
        self._max_cached_texts = max_cached_texts
        # A plain dict: looking up in a subclass (with __missing__) costs twice as much.
        self._texts: dict[str, bytes] = {}
        # e9 value -> its numeric field. Prices sit on a tick grid and sizes in
        # lots, so a batch repeats a few thousand values: a dict lookup is a third
        # of an ``encode_numeric_e9`` call (benchmarks/micro/take_path.py). About
        # 100 bytes per entry; forgotten all at once when full.
        self._max_cached_numerics = max_cached_numerics
        self._numerics: dict[int, bytes] = {}
        self._numeric_rest = 0 if max_cached_numerics else -1

    def _text_fields(self, tick: Tick) -> tuple[bytes, bytes, bytes]:
        """The symbol, exchange and source fields of ``tick``, cached; the cache is
        forgotten all at once when full (these strings repeat, but nothing bounds them)."""
        texts = self._texts
        if len(texts) > self._max_cached_texts - 3:
            texts.clear()
        fields = []
        for text in (tick.symbol, tick.exchange, tick.source):
            field = texts.get(text)
            if field is None:
                field = texts[text] = encode_text_field(text)
            fields.append(field)
        return fields[0], fields[1], fields[2]

    def encode(self, rows: Sequence[tuple[Tick, int, int]]) -> bytearray:
        """One complete COPY stream (header, rows, trailer) of ``COPY_COLUMNS``.

        ``rows`` are ``(tick, kafka_partition, kafka_offset)``, the arguments of
        ``timescale.stock_price_row``: a list of such tuples is the cheapest
        shape to iterate, and the caller keeps the ticks for any other use (the
        ``INSERT ... ON CONFLICT`` fallback needs them as ``stock_price_row``s).
        Pass the returned buffer as ``source`` of ``copy_to_table(...,
        format="binary", columns=COPY_COLUMNS)``.

        Raises ``struct.error`` for an integer outside its column's type
        (``source_seq`` or ``kafka_offset`` beyond int64, a partition beyond
        int32) and ``UnicodeEncodeError`` for a text with a lone surrogate;
        nothing else is checked here (the server checks the rest).
        """
        rest = self._numeric_rest
        if rest:  # resting after a batch of misses (> 0), or no numeric cache at all (-1)
            if rest > 0:
                self._numeric_rest = rest - 1
            return self._encode_plain(rows)
        numerics = self._numerics
        if len(numerics) > self._max_cached_numerics:
            numerics.clear()
        before = len(numerics)
        out = self._encode_cached(rows, numerics)
        if 2 * (len(numerics) - before) > 4 * len(rows):  # more misses than hits
            numerics.clear()
            self._numeric_rest = self.NUMERIC_CACHE_REST
        return out

    def _encode_cached(self, rows: Sequence[tuple[Tick, int, int]], numerics: dict[int, bytes]) -> bytearray:
        """``_encode_plain`` with the numeric fields looked up in ``numerics`` first
        (and added to it): the same bytes."""
        texts = self._texts
        numeric = encode_numeric_e9
        cached = numerics.get
        null = _NULL
        epoch_us = PG_EPOCH_US
        tail_and_head = _ROW_TAIL_AND_HEAD
        field_count = _FIELD_COUNT
        out = bytearray()
        seq = partition_ = offset_ = 0  # the first row's "previous row": a placeholder
        for tick, partition, offset in rows:
            try:
                symbol, exchange, source = texts[tick.symbol], texts[tick.exchange], texts[tick.source]
            except KeyError:
                symbol, exchange, source = self._text_fields(tick)
            out += tail_and_head(8, seq, 4, partition_, 8, offset_, field_count, 8, tick.ts_ns // 1000 - epoch_us)
            out += symbol
            value = tick.price_e9
            field = cached(value)
            if field is None:
                field = numerics[value] = numeric(value)
            out += field
            value = tick.size_e9
            field = cached(value)
            if field is None:
                field = numerics[value] = numeric(value)
            out += field
            bid = tick.bid_e9
            if bid is None:
                out += null
            else:
                field = cached(bid)
                if field is None:
                    field = numerics[bid] = numeric(bid)
                out += field
            ask = tick.ask_e9
            if ask is None:
                out += null
            else:
                field = cached(ask)
                if field is None:
                    field = numerics[ask] = numeric(ask)
                out += field
            out += exchange
            out += source
            seq = tick.seq
            partition_ = partition
            offset_ = offset
        return _finish(out, seq, partition_, offset_)

    def _encode_plain(self, rows: Iterable[tuple[Tick, int, int]]) -> bytearray:
        """The stream with every numeric field encoded afresh."""
        texts = self._texts
        numeric = encode_numeric_e9
        null = _NULL
        epoch_us = PG_EPOCH_US
        tail_and_head = _ROW_TAIL_AND_HEAD
        field_count = _FIELD_COUNT
        out = bytearray()
        seq = partition_ = offset_ = 0  # the first row's "previous row": a placeholder
        for tick, partition, offset in rows:
            try:
                symbol, exchange, source = texts[tick.symbol], texts[tick.exchange], texts[tick.source]
            except KeyError:
                symbol, exchange, source = self._text_fields(tick)
            out += tail_and_head(8, seq, 4, partition_, 8, offset_, field_count, 8, tick.ts_ns // 1000 - epoch_us)
            out += symbol
            out += numeric(tick.price_e9)
            out += numeric(tick.size_e9)
            value = tick.bid_e9
            out += null if value is None else numeric(value)
            value = tick.ask_e9
            out += null if value is None else numeric(value)
            out += exchange
            out += source
            seq = tick.seq
            partition_ = partition
            offset_ = offset
        return _finish(out, seq, partition_, offset_)

    def encode_parts(self, rows: Sequence[tuple[Tick, int, int]], rows_per_part: int) -> Iterator[bytes]:
        """The stream ``encode(rows)`` gives, in parts of ``rows_per_part`` rows,
        encoded one part at a time as the caller asks for it: the caller can
        let other work run between parts (a large batch encodes in tens of
        milliseconds, too long to hold an event loop), and the server parses
        one part while the next is encoded. The parts joined are exactly
        ``encode(rows)``."""
        if rows_per_part < 1:
            raise ValueError("rows_per_part must be at least 1")
        if len(rows) <= rows_per_part:
            yield bytes(self.encode(rows))
            return
        head, tail = len(COPY_HEADER), len(COPY_TRAILER)
        last = len(rows) - rows_per_part
        for start in range(0, len(rows), rows_per_part):
            part = self.encode(rows[start : start + rows_per_part])
            # Every part is a whole stream: keep the first's header, the last's trailer.
            yield bytes(memoryview(part)[0 if start == 0 else head : len(part) if start >= last else -tail])


def _finish(out: bytearray, seq: int, partition: int, offset: int) -> bytearray:
    """Close a stream of rows written with a placeholder before the first row:
    the last row's tail, the trailer, and the header in the placeholder's place."""
    if not out:
        return bytearray(COPY_HEADER + COPY_TRAILER)
    out += _ROW_TAIL.pack(8, seq, 4, partition, 8, offset)
    out += COPY_TRAILER
    # The placeholder tail is 32 bytes: its last 19 become the header, the
    # first 13 go (deleting a bytearray's head only moves its start).
    out[_PLACEHOLDER - len(COPY_HEADER) : _PLACEHOLDER] = COPY_HEADER
    del out[: _PLACEHOLDER - len(COPY_HEADER)]
    return out
