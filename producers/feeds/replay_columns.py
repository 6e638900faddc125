"""The replay's column mapping: which file column holds which tick field, and
how one row of a record batch becomes a tick.

``--columns FIELD=COLUMN,...`` maps the tick fields (``FIELDS``) onto a file's
columns; ``ts``, ``symbol``, ``price`` and ``size`` must be there. Prices and
sizes become exact e9 integers from decimal text (CSV columns are read as text
for that reason), Arrow decimals, integers (whole units, or already e9) or
floats (by their shortest repr, which is what was written); timestamps become
UTC ns from Arrow timestamps, RFC 3339 text or epoch integers (``TS_FORMATS``;
``auto`` guesses an integer's unit from its magnitude). A row that cannot be a
tick is a reason (``missing_value``, ``bad_symbol``, ``bad_value: ...``, or a
``NormaliseError``'s), never an exception: the feed reports it and goes on.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from nexanest.producers.normalise import (
    NormaliseError,
    Normaliser,
    decimal_e9,
    ts_ns_from_iso,
    ts_ns_from_ms,
    ts_ns_from_s,
    ts_ns_from_us,
)
from nexanest.schemas.ticks import Tick

#: The tick fields a column can be mapped to (``--columns field=column,...``).
FIELDS: Final = ("ts", "symbol", "price", "size", "bid", "ask", "exchange")
REQUIRED: Final = ("ts", "symbol", "price", "size")
TS_FORMATS: Final = ("auto", "iso", "s", "ms", "us", "ns")
_TS_FROM_INT: Final[Mapping[str, Callable[[int], int]]] = {
    "s": ts_ns_from_s,
    "ms": ts_ns_from_ms,
    "us": ts_ns_from_us,
    "ns": lambda v: v,
}


def parse_columns(text: str) -> dict[str, str]:
    """``ts=time,price=px`` -> ``{"ts": "time", "price": "px"}`` over the defaults (field = column)."""
    mapping = {field: field for field in FIELDS}
    for item in filter(None, (part.strip() for part in text.split(","))):
        field, sep, column = item.partition("=")
        if not sep or field not in FIELDS or not column:
            raise argparse.ArgumentTypeError(
                f"--columns takes FIELD=COLUMN with FIELD in {', '.join(FIELDS)}: {item!r}"
            )
        mapping[field] = column
    return mapping


def unmapped_required(columns: Mapping[str, str]) -> list[str]:
    """The required fields no column is mapped to (empty when the mapping is usable)."""
    return [f for f in REQUIRED if not columns.get(f)]


def check_required(columns: Mapping[str, str], names: set[str], path: Path) -> None:
    """Raises ``ValueError`` naming the required fields whose column the file lacks."""
    absent = [f"{f}={columns[f]}" for f in REQUIRED if columns[f] not in names]
    if absent:
        raise ValueError(f"{path}: no column for {', '.join(absent)} (columns: {', '.join(sorted(names))})")


def _by_magnitude(value: int) -> int:
    """Epoch integer to ns, its unit guessed from a value near today: s < 1e11 <= ms < 1e14 <= us < 1e17 <= ns."""
    n = abs(value)
    unit = "s" if n < 10**11 else "ms" if n < 10**14 else "us" if n < 10**17 else "ns"
    return _TS_FROM_INT[unit](value)


def _auto_text(value: str) -> int:
    """CSV text under ``--ts-format auto``: digits are an epoch integer, anything else RFC 3339."""
    if value.lstrip("-").isdigit():
        return _by_magnitude(int(value))
    return ts_ns_from_iso(value)


def _ts_converter(column: pa.ChunkedArray | pa.Array, ts_format: str) -> Callable[[Any], int]:
    """How to turn one value of the timestamp column into ns, from its Arrow type and ``ts_format``."""
    kind = column.type
    if ts_format == "iso":
        return ts_ns_from_iso
    if ts_format in _TS_FROM_INT:
        unit = _TS_FROM_INT[ts_format]
        return lambda v: unit(int(v))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _auto_text
    if pa.types.is_integer(kind):
        return lambda v: _by_magnitude(int(v))
    raise ValueError(f"cannot read timestamps of type {kind} (see --ts-format)")


def _e9_converter(kind: pa.DataType, int_scale: str) -> Callable[[Any], int]:
    """Exact e9 integers from decimal text, Arrow decimals, integers (whole units, or
    already e9 with ``int_scale="e9"``) or (by their shortest repr, which is what
    was written) floats."""
    if pa.types.is_integer(kind):
        return int if int_scale == "e9" else lambda v: decimal_e9(str(v))
    if pa.types.is_floating(kind):
        return lambda v: decimal_e9(repr(float(v)))
    if pa.types.is_decimal(kind):
        return lambda v: decimal_e9(format(v, "f") if isinstance(v, Decimal) else str(v))
    return decimal_e9


def row_reader(
    batch: pa.RecordBatch,
    columns: Mapping[str, str],
    ts_format: str,
    int_scale: str,
    norm: Normaliser,
    first_row: int,
) -> Callable[[int], Tick | str]:
    """A function from a row index of ``batch`` to its tick (``seq`` = ``first_row`` +
    index) or the reason it cannot be one. The columns are converted once here, so
    reading every row costs one Python call each. Raises ``ValueError`` when the
    timestamp column's type cannot hold times (a mistake in the whole file)."""
    present = set(batch.schema.names)

    def column(field: str) -> list[Any] | None:
        name = columns.get(field)
        return batch.column(name).to_pylist() if name and name in present else None

    ts_column = batch.column(columns["ts"])
    if pa.types.is_timestamp(ts_column.type):
        as_ns = pc.cast(ts_column, pa.timestamp("ns", tz=ts_column.type.tz)).cast(pa.int64())
        ts_values: list[Any] = as_ns.to_pylist()
        to_ns: Callable[[Any], int] = int
    else:
        ts_values = ts_column.to_pylist()
        to_ns = _ts_converter(ts_column, ts_format)
    converters = {
        f: _e9_converter(batch.column(columns[f]).type, int_scale)
        for f in ("price", "size", "bid", "ask")
        if columns.get(f) in present
    }
    symbols, prices, sizes = column("symbol"), column("price"), column("size")
    if symbols is None or prices is None or sizes is None:
        raise ValueError("a required column is missing")  # checked by check_required
    bids, asks, exchanges = column("bid"), column("ask"), column("exchange")
    price_of, size_of = converters["price"], converters["size"]
    bid_of, ask_of = converters.get("bid"), converters.get("ask")
    known: dict[str, str | None] = {}

    def row_tick(i: int) -> Tick | str:
        """Row ``i`` as a tick, or the reason it cannot be one."""
        raw_symbol = symbols[i]
        if raw_symbol is None or ts_values[i] is None or prices[i] is None or sizes[i] is None:
            return "missing_value"
        symbol = known.get(raw_symbol)
        if symbol is None:
            symbol = known[raw_symbol] = norm.symbol(str(raw_symbol))
            if symbol is None:
                return "bad_symbol"
        bid = bids[i] if bids is not None else None
        ask = asks[i] if asks is not None else None
        exchange = exchanges[i] if exchanges is not None else None
        return norm.tick(
            symbol,
            price_of(prices[i]),
            size_of(sizes[i]),
            to_ns(ts_values[i]),
            bid_e9=None if bid is None or bid_of is None else bid_of(bid),
            ask_e9=None if ask is None or ask_of is None else ask_of(ask),
            exchange=str(exchange) if exchange else None,
            seq=first_row + i,
        )

    def read(i: int) -> Tick | str:
        try:
            return row_tick(i)
        except NormaliseError as exc:
            return exc.reason
        except (ValueError, TypeError, msgspec.ValidationError) as exc:  # a value no converter takes
            return f"bad_value: {exc}"

    return read
