"""Normalisation in one place: venue text to the pipeline's ``Tick`` fields.

Every adapter parses its venue's frames or a file's rows with a ``Normaliser``,
so that symbols, prices, sizes, timestamps and sequence numbers mean the same
thing whichever feed they came from:

* symbols: the venue's spelling mapped by configuration (``BTCUSDT`` ->
  ``BTC-USDT`` only because a map says so); without a map, the upper-case form.
  ``None`` means "not ours" (unknown or not subscribed): the adapter reports
  the frame as malformed instead of inventing a symbol;
* prices and sizes: exact from the decimal string, never through ``float``
  (``0.1 + 0.2`` must not become ``0.30000000000000004``); more than 9 decimal
  places would be rounded by the ``e9`` representation, so it is refused;
* timestamps: integers of UTC nanoseconds since the epoch, from milliseconds or
  from RFC 3339 text with up to nanosecond precision;
* sequence numbers: ``(source, seq)`` names a tick uniquely and lets the
  consumer drop a repeat (its partition's high-water mark of ``seq``). A live
  adapter starts at ``time.time_ns()`` (``live_seq_start``), so a restarted
  adapter with the same ``source`` never reuses a number (it would need more
  than 1e9 ticks/s to catch up with the clock); a file replay uses
  ``source = "replay:<file identity>"`` and the row number, so a resumed
  replay re-sends the same pairs and the repeats are dropped.

Errors are ``NormaliseError`` (a ``ValueError``) with a short reason code, which
the adapter passes to ``FeedObserver.malformed`` with a sample of the input.
"""

from __future__ import annotations

import argparse
import calendar
import re
import time
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Final

from nexanest.schemas.ticks import INT64_MAX, INT64_MIN, MAX_SYMBOL_CHARS, PRICE_SCALE, Tick

_SCALE_DIGITS: Final = 9
#: Longest decimal text accepted: NUMERIC(20, 9) has at most 29 digits, plus sign, point and exponent.
_MAX_DECIMAL_CHARS: Final = 64
#: Largest magnitude in e9 units the database column holds (NUMERIC(20, 9): below 10**20 units).
_MAX_E9: Final = 10**29
_PLAIN: Final = re.compile(r"([+-]?)(\d*)(?:\.(\d*))?")
_EXPONENT: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)[eE][+-]?\d{1,3}")
_RFC3339: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_NS_PER_S: Final = 1_000_000_000
_NS_PER_MS: Final = 1_000_000
_NS_PER_US: Final = 1_000


class NormaliseError(ValueError):
    """A value that cannot become a tick field; ``reason`` is a short, stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def live_seq_start() -> int:
    """The first sequence number of a live adapter's run: the wall clock in ns,
    so a restart with the same ``source`` never reuses a number."""
    return time.time_ns()


def decimal_e9(text: str) -> int:
    """``text`` as an exact integer of 1e-9 units: ``"187.25"`` -> ``187_250_000_000``.

    Accepts plain decimals (``"-0.5"``, ``"12."``, ``".5"``) and exponent forms
    when they are exact at 9 places (``"1.5e2"``, ``"1e-9"``). Trailing zeros
    beyond the 9th place are exact (``"0.1000000000"``); any other digit there
    is refused, as are NaN, infinities, whitespace, underscores and values the
    database column cannot hold.
    """
    if len(text) > _MAX_DECIMAL_CHARS:
        raise NormaliseError("bad_decimal", f"decimal too long ({len(text)} characters)")
    plain = _PLAIN.fullmatch(text)
    if plain is not None:
        sign, units, frac = plain.group(1), plain.group(2), plain.group(3) or ""
        if not units and not frac:
            raise NormaliseError("bad_decimal", f"not a decimal: {text!r}")
        if len(frac) > _SCALE_DIGITS:
            if frac[_SCALE_DIGITS:].strip("0"):
                raise NormaliseError("too_precise", f"{text!r} has more than 9 decimal places")
            frac = frac[:_SCALE_DIGITS]
        value = int(units or "0") * PRICE_SCALE + int(frac.ljust(_SCALE_DIGITS, "0"))
        return _bounded(-value if sign == "-" else value, text)
    if _EXPONENT.fullmatch(text) is None:
        raise NormaliseError("bad_decimal", f"not a decimal: {text!r}")
    try:
        parsed = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only valid text
        raise NormaliseError("bad_decimal", f"not a decimal: {text!r}") from exc
    sign_bit, digits, exponent = parsed.as_tuple()
    assert isinstance(exponent, int)  # noqa: S101 - finite by the pattern
    mantissa = int("".join(map(str, digits)) or "0")
    shift = exponent + _SCALE_DIGITS
    if shift >= 0:
        if shift > 40:  # far beyond any column: refuse before computing a huge power
            raise NormaliseError("out_of_range", f"{text!r} is too large")
        value = mantissa * 10**shift
    else:
        value, remainder = divmod(mantissa, 10**-shift)
        if remainder:
            raise NormaliseError("too_precise", f"{text!r} has more than 9 decimal places")
    return _bounded(-value if sign_bit else value, text)


def _bounded(value_e9: int, text: str) -> int:
    if -_MAX_E9 < value_e9 < _MAX_E9:
        return value_e9
    raise NormaliseError("out_of_range", f"{text!r} is too large for NUMERIC(20, 9)")


def _int64(value: int, what: str) -> int:
    if INT64_MIN <= value <= INT64_MAX:
        return value
    raise NormaliseError("bad_timestamp", f"{what} out of the 64-bit nanosecond range: {value}")


def ts_ns_from_s(seconds: int) -> int:
    """Whole epoch seconds to ns."""
    return _int64(seconds * _NS_PER_S, "timestamp")


def ts_ns_from_ms(millis: int) -> int:
    """Epoch milliseconds (Binance ``T``, most REST APIs) to ns."""
    return _int64(millis * _NS_PER_MS, "timestamp")


def ts_ns_from_us(micros: int) -> int:
    """Epoch microseconds to ns."""
    return _int64(micros * _NS_PER_US, "timestamp")


def ts_ns_from_iso(text: str) -> int:
    """RFC 3339 text to UTC ns: ``2014-11-07T08:19:27.028459Z`` (Coinbase),
    ``2024-01-02T03:04:05.123456789+01:00``. The offset is required (a time
    without one is ambiguous); the fraction has at most 9 digits; a leap second
    (``:60``) is refused, as in ``datetime``."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise NormaliseError("bad_timestamp", f"not an RFC 3339 time with an offset: {text[:40]!r}")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        raise NormaliseError("bad_timestamp", f"no such date: {text[:40]!r}")
    if hour > 23 or minute > 59 or second > 59:
        raise NormaliseError("bad_timestamp", f"no such time of day: {text[:40]!r}")
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if match.group(8) is None:
        offset = (int(match.group(10)) * 60 + int(match.group(11))) * 60
        seconds -= offset if match.group(9) == "+" else -offset
    fraction = int((match.group(7) or "").ljust(_SCALE_DIGITS, "0"))
    return _int64(seconds * _NS_PER_S + fraction, "timestamp")


def parse_symbol_map(text: str) -> dict[str, str]:
    """``"BTCUSDT=BTC-USDT,ETHUSDT=ETH-USDT"`` -> a dict (venue spelling upper-cased):
    the ``--symbol-map`` option of every feed that has one."""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        venue_symbol, sep, canonical = item.partition("=")
        if not sep or not venue_symbol.strip() or not canonical.strip():
            raise argparse.ArgumentTypeError(f"expected VENUE=CANONICAL, got {item!r}")
        mapping[venue_symbol.strip().upper()] = canonical.strip()
    return mapping


def add_symbol_map_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--symbol-map VENUE=CANONICAL,...`` (``parse_symbol_map``; default: no renames)."""
    parser.add_argument(
        "--symbol-map", type=parse_symbol_map, default={}, metavar="VENUE=CANONICAL,...", help=help_text
    )


def check_symbols(symbols: Iterable[str], pattern: str) -> None:
    """Refuse canonical symbols the consumer would dead-letter (``validation.symbol_pattern``):
    a typo in ``--symbol-map`` fails at start, not as every tick in the DLQ."""
    matches = re.compile(pattern).fullmatch
    refused = sorted(symbol for symbol in set(symbols) if matches(symbol) is None)
    if refused:
        raise ValueError(f"symbols the consumer would refuse (pattern {pattern}): {', '.join(refused)}")


class Normaliser:
    """One adapter run's normalisation state: its venue, source, symbol map and sequence.

    ``symbols`` maps the venue's spelling to the canonical symbol
    (``{"BTCUSDT": "BTC-USDT"}``); a venue symbol missing from it is not
    subscribed, and ``symbol`` returns ``None``. Without a map, a symbol is its
    upper-case form (when it fits the column). ``renames`` is the map of a
    source whose symbols are not known up front (a file): each symbol's
    upper-case form is looked up in it, and one not there keeps that form. ``seq_start`` is the first
    sequence number: ``live_seq_start()`` for a live feed, the row number for a
    file replay (see the module docstring).
    """

    __slots__ = ("_next_seq", "_renames", "_symbols", "source", "venue")

    def __init__(
        self,
        venue: str,
        source: str,
        symbols: Mapping[str, str] | None = None,
        seq_start: int = 0,
        *,
        renames: Mapping[str, str] | None = None,
    ) -> None:
        if not venue or not source:
            raise ValueError("venue and source must be non-empty")
        if seq_start < 0:
            raise ValueError("seq_start must be >= 0")
        self.venue = venue
        self.source = source
        if symbols is not None and renames:
            raise ValueError("a closed symbol map (symbols) or renames, not both")
        self._symbols = dict(symbols) if symbols is not None else None
        self._renames = dict(renames or {})
        self._next_seq = seq_start

    def symbol(self, venue_symbol: str) -> str | None:
        """The canonical symbol, or ``None`` when it is not ours (report it as malformed)."""
        if self._symbols is not None:
            return self._symbols.get(venue_symbol)
        if not venue_symbol or len(venue_symbol) > MAX_SYMBOL_CHARS or "\x00" in venue_symbol:
            return None
        upper = venue_symbol.upper()
        return self._renames.get(upper, upper)

    def next_seq(self) -> int:
        """The next sequence number of this run (strictly increasing)."""
        seq = self._next_seq
        self._next_seq = seq + 1
        return seq

    def skip_to(self, seq: int) -> None:
        """Continue numbering at ``seq`` (a file replay resuming at a row)."""
        if seq < self._next_seq:
            raise ValueError(f"sequence numbers only increase: {seq} < {self._next_seq}")
        self._next_seq = seq

    def tick(
        self,
        symbol: str,
        price_e9: int,
        size_e9: int,
        ts_ns: int,
        *,
        bid_e9: int | None = None,
        ask_e9: int | None = None,
        exchange: str | None = None,
        seq: int | None = None,
    ) -> Tick:
        """A ``Tick`` of this run: ``exchange`` defaults to the venue, ``seq`` to ``next_seq()``."""
        return Tick(
            symbol=symbol,
            exchange=exchange or self.venue,
            price_e9=price_e9,
            size_e9=size_e9,
            ts_ns=ts_ns,
            source=self.source,
            seq=self.next_seq() if seq is None else seq,
            bid_e9=bid_e9,
            ask_e9=ask_e9,
        )
