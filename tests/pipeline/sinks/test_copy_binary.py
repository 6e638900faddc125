"""The binary COPY encoder: byte format against a reference decoder, and round trips
through TimescaleDB that must read back exactly what ``stock_price_row`` builds."""

from __future__ import annotations

import struct
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexanest.pipeline.settings import Settings, ValidationSettings
from nexanest.pipeline.sinks.copy_binary import (
    COPY_COLUMNS,
    COPY_HEADER,
    COPY_SIGNATURE,
    COPY_TRAILER,
    StockPriceCopyEncoder,
    encode_numeric_e9,
    encode_text_field,
)
from nexanest.pipeline.sinks.timescale import COLUMNS, StockPriceRow, stock_price_row
from nexanest.schemas.ticks import Tick

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
T0 = 1_764_000_000_123_456_789
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

# -- a reference decoder, written from PostgreSQL's documentation of the format ----------


def e9_string(value_e9: int) -> str:
    """``value_e9 / 1e9`` with exactly 9 decimal places, as PostgreSQL prints NUMERIC(20, 9)."""
    units, frac = divmod(abs(value_e9), 10**9)
    return f"{'-' if value_e9 < 0 else ''}{units}.{frac:09d}"


def decode_numeric(payload: bytes) -> str:
    """A binary numeric back to its decimal string; asserts the encoding is normalised."""
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHH", payload)
    assert len(payload) == 8 + 2 * ndigits
    digits = struct.unpack_from(f"!{ndigits}H", payload, 8)
    assert sign in (0x0000, 0x4000)
    assert dscale == 9
    assert all(d < 10_000 for d in digits)
    if not ndigits:
        assert (weight, sign) == (0, 0), "zero is ndigits=0, weight=0, sign=0"
        return "0.000000000"
    assert digits[0] != 0, "leading zero digits must be stripped"
    assert digits[-1] != 0, "trailing zero digits must be stripped"

    def digit(exponent: int) -> int:  # digits[i] counts 10000 ** (weight - i)
        i = weight - exponent
        return digits[i] if 0 <= i < ndigits else 0

    frac_digits = -(-dscale // 4)
    assert weight - ndigits + 1 >= -frac_digits, "a digit below dscale"
    whole = "".join(f"{digit(e):04d}" for e in range(max(weight, 0), -1, -1)).lstrip("0") or "0"
    frac = "".join(f"{digit(e):04d}" for e in range(-1, -frac_digits - 1, -1))
    assert frac[dscale:].strip("0") == ""
    return f"{'-' if sign == 0x4000 else ''}{whole}.{frac[:dscale]}"


def split_field(field: bytes) -> bytes:
    (length,) = struct.unpack_from("!i", field)
    assert length == len(field) - 4
    return field[4:]


def decode_stream(data: bytes | bytearray) -> list[tuple[Any, ...]]:
    """A whole COPY stream of COPY_COLUMNS back to Python values, as asyncpg reads them."""
    assert data.startswith(COPY_SIGNATURE)
    flags, ext_len = struct.unpack_from("!ii", data, len(COPY_SIGNATURE))
    assert (flags, ext_len) == (0, 0)
    pos = len(COPY_SIGNATURE) + 8
    rows = []
    while True:
        (count,) = struct.unpack_from("!h", data, pos)
        pos += 2
        if count == -1:
            break
        assert count == len(COPY_COLUMNS)
        fields: list[bytes | None] = []
        for _ in range(count):
            (length,) = struct.unpack_from("!i", data, pos)
            pos += 4
            if length == -1:
                fields.append(None)
            else:
                fields.append(bytes(data[pos : pos + length]))
                pos += length
        rows.append(tuple(decode_value(column, f) for column, f in zip(COPY_COLUMNS, fields, strict=True)))
    assert pos == len(data), "bytes after the trailer"
    return rows


def decode_value(column: str, payload: bytes | None) -> Any:
    if payload is None:
        return None
    if column == "time":
        assert len(payload) == 8
        return PG_EPOCH + timedelta(microseconds=struct.unpack("!q", payload)[0])
    if column in ("symbol", "exchange", "source"):
        return payload.decode()
    if column in ("price", "size", "bid", "ask"):
        return Decimal(decode_numeric(payload))
    if column == "kafka_partition":
        return struct.unpack("!i", payload)[0]
    assert len(payload) == 8
    return struct.unpack("!q", payload)[0]


# -- unit ---------------------------------------------------------------------------------


def test_columns_match_the_sink() -> None:
    assert COPY_COLUMNS == COLUMNS


TRICKY_E9 = [
    0,
    1,  # 1e-9: one digit 1000 at weight -3
    10,
    10**4,  # 0.00001
    10**5,  # 0.0001
    10**9 - 1,  # 0.999999999
    10**9,  # 1
    187_250_000_000,  # 187.25
    187_250_000_001,
    10**13,  # 10000: one digit at weight 1
    10**13 + 10,  # 10000.00000001: internal zero digits
    10**13 + 10**9,  # 10001
    123_456_789_123_456_789,  # 123456789.123456789
    10**17,  # 100000000
    10**17 + 1,
    10**20 - 1,  # the largest NUMERIC(20, 9)
    2**63 - 1,  # int64 max
    2**64 - 1,  # uint64 max, the most msgspec decodes
    10**30 + 7,  # beyond the column: still exact, the server refuses it
    -1,
    -(10**9),
    -123_456_789_123_456_789,
    -(2**63),
]


@pytest.mark.parametrize("value_e9", TRICKY_E9)
def test_numeric_decodes_to_the_same_decimal(value_e9: int) -> None:
    assert decode_numeric(split_field(encode_numeric_e9(value_e9))) == e9_string(value_e9)


@pytest.mark.parametrize(
    ("value_e9", "ndigits", "weight", "sign", "digits"),
    [
        (0, 0, 0, 0x0000, ()),
        (1, 1, -3, 0x0000, (1000,)),
        (10**5, 1, -1, 0x0000, (1,)),
        (10**9, 1, 0, 0x0000, (1,)),
        (187_250_000_000, 2, 0, 0x0000, (187, 2500)),
        (10**13, 1, 1, 0x0000, (1,)),
        (10**13 + 10, 4, 1, 0x0000, (1, 0, 0, 1)),
        (123_456_789_123_456_789, 6, 2, 0x0000, (1, 2345, 6789, 1234, 5678, 9000)),
        (-1, 1, -3, 0x4000, (1000,)),
    ],
)
def test_numeric_layout(value_e9: int, ndigits: int, weight: int, sign: int, digits: tuple[int, ...]) -> None:
    expected = struct.pack(f"!ihhHH{ndigits}H", 8 + 2 * ndigits, ndigits, weight, sign, 9, *digits)
    assert encode_numeric_e9(value_e9) == expected


@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_any_integer_round_trips(value_e9: int) -> None:
    assert decode_numeric(split_field(encode_numeric_e9(value_e9))) == e9_string(value_e9)


def test_text_field_is_length_and_utf8() -> None:
    assert encode_text_field("XNAS") == b"\x00\x00\x00\x04XNAS"
    assert encode_text_field("Börse→東京") == struct.pack("!i", len("Börse→東京".encode())) + "Börse→東京".encode()
    assert encode_text_field("") == b"\x00\x00\x00\x00"


def test_empty_batch_is_header_and_trailer() -> None:
    data = StockPriceCopyEncoder().encode([])
    assert data == b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8 + b"\xff\xff"
    assert data == COPY_HEADER + COPY_TRAILER


def make_tick(i: int, **changes: Any) -> Tick:
    fields: dict[str, Any] = {
        "symbol": f"SYM{i % 3}",
        "exchange": "XNAS",
        "price_e9": 187_250_000_000 + i * 10_000_001,
        "size_e9": (i + 1) * 100 * 10**9,
        "ts_ns": T0 + i * 1_000_001,
        "source": "unit",
        "seq": i,
        "bid_e9": 187_240_000_000 + i,
        "ask_e9": 187_260_000_000 + i,
    }
    fields.update(changes)
    return Tick(**fields)


# Edge cases of every column, one row each.
TRICKY_ROWS = [
    (t, partition, offset)
    for offset, (t, partition) in enumerate(
        [
            (make_tick(0), 0),
            (make_tick(1, bid_e9=None), 1),
            (make_tick(2, ask_e9=None), INT32[1]),
            (make_tick(3, bid_e9=None, ask_e9=None, size_e9=0), INT32[0]),
            (make_tick(4, exchange="Börse Frankfurt", source="адаптер-1 🚀", symbol="BTC-USD"), 0),
            (make_tick(5, ts_ns=-1), 0),  # before 1970: floored to the microsecond, like ns_to_datetime
            (make_tick(6, ts_ns=946_684_800_000_000_000 - 1), 0),  # 1 ns before PostgreSQL's epoch
            (make_tick(7, ts_ns=-62_135_596_800 * 10**9), 0),  # 0001-01-01, the first datetime
            (make_tick(8, ts_ns=253_402_300_799_999_999_999), 0),  # the last one
            (make_tick(9, seq=INT64[0], price_e9=2**63 - 1, bid_e9=-5, ask_e9=-(10**13 + 10)), 0),
            (make_tick(10, seq=INT64[1], price_e9=1, size_e9=10**19, bid_e9=0, ask_e9=10**5), 0),
        ]
    )
]


def test_stream_decodes_to_the_rows_stock_price_row_builds() -> None:
    rows = [*TRICKY_ROWS, (make_tick(11), 3, INT64[1])]
    assert decode_stream(StockPriceCopyEncoder().encode(rows)) == [stock_price_row(*r) for r in rows]


@pytest.mark.parametrize("rows_per_part", [1, 3, 11, 12, 100])
def test_parts_join_to_the_whole_stream(rows_per_part: int) -> None:
    rows = [*TRICKY_ROWS, (make_tick(11), 3, INT64[1])]  # 12 rows
    parts = list(StockPriceCopyEncoder().encode_parts(rows, rows_per_part))
    assert len(parts) == -(-len(rows) // rows_per_part)
    assert b"".join(parts) == StockPriceCopyEncoder().encode(rows)
    assert list(StockPriceCopyEncoder().encode_parts([], 5)) == [bytes(StockPriceCopyEncoder().encode([]))]


def test_text_cache_limit_only_bounds_memory() -> None:
    encoder = StockPriceCopyEncoder(max_cached_texts=3)
    for _ in range(2):
        rows = [(make_tick(i, symbol=f"S{i}", exchange=f"E{i}"), 0, i) for i in range(5)]
        assert decode_stream(encoder.encode(rows)) == [stock_price_row(*r) for r in rows]
    assert len(encoder._texts) <= 3


def test_the_cache_holds_at_least_one_row() -> None:
    with pytest.raises(ValueError, match="max_cached_texts"):
        StockPriceCopyEncoder(max_cached_texts=2)


def test_the_numeric_cache_changes_no_byte() -> None:
    """One encoder over batches that repeat prices and sizes (the cache hits),
    and the tricky rows: each stream is the uncached encoder's, byte for byte."""
    cached, plain = StockPriceCopyEncoder(), StockPriceCopyEncoder(max_cached_numerics=0)
    repeating = [(make_tick(i, price_e9=(100 + i % 3) * 10**9, size_e9=10**11, bid_e9=10**9), 0, i) for i in range(40)]
    for rows in (repeating, repeating[::-1], [*TRICKY_ROWS, *repeating]):
        assert cached._numeric_rest == 0  # the cache is in use
        assert cached.encode(rows) == plain.encode(rows)
        assert cached._numerics
        assert not plain._numerics
        assert decode_stream(cached.encode(rows)) == [stock_price_row(*r) for r in rows]


def test_the_numeric_cache_rests_after_a_batch_of_misses_and_stays_bounded() -> None:
    encoder = StockPriceCopyEncoder(max_cached_numerics=10)
    distinct = [(make_tick(i, price_e9=10**9 + i, size_e9=i, bid_e9=i + 1, ask_e9=10**12 + i), 0, i) for i in range(8)]
    assert decode_stream(encoder.encode(distinct)) == [stock_price_row(*r) for r in distinct]
    assert not encoder._numerics  # more misses than hits: forgotten, and not used for a while
    repeating = [(make_tick(i, price_e9=10**9, size_e9=1, bid_e9=1, ask_e9=10**9), 0, i) for i in range(30)]
    for _ in range(StockPriceCopyEncoder.NUMERIC_CACHE_REST):
        assert decode_stream(encoder.encode(repeating)) == [stock_price_row(*r) for r in repeating]
        assert not encoder._numerics
    encoder.encode(repeating)
    assert encoder._numerics  # back in use
    bigger = [(make_tick(i, price_e9=10**9 + i % 12), 0, i) for i in range(200)]
    for _ in range(3):
        assert decode_stream(encoder.encode(bigger)) == [stock_price_row(*r) for r in bigger]
        assert len(encoder._numerics) <= 10 + 4 * len(bigger)
    encoder.encode(repeating)
    assert len(encoder._numerics) <= 10 + 4 * len(repeating)
    with pytest.raises(ValueError, match="max_cached_numerics"):
        StockPriceCopyEncoder(max_cached_numerics=-1)


# -- strategies: any tick the table can hold ---------------------------------------------

# Text PostgreSQL can store: no NUL, no lone surrogates (they have no UTF-8).
any_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=24)
e9_values = st.one_of(
    st.integers(*INT64),
    st.integers(0, 10**13),  # the fast path
    st.builds(lambda k, e: k * 10**e, st.integers(-9999, 9999), st.integers(0, 16)),  # round values
)
# A few hours near T0 plus far times (each distinct hour is a chunk of the hypertable).
times_ns = st.one_of(
    st.integers(T0 - 3600 * 10**9, T0 + 3600 * 10**9),
    st.sampled_from(
        [
            -62_135_596_800 * 10**9,  # 0001-01-01, the first datetime
            253_402_300_799 * 10**9 + 999_999_999,  # the last one
            -1,
            0,
            946_684_800 * 10**9 - 1,
            946_684_800 * 10**9,
        ]
    ),
)
ticks = st.builds(
    Tick,
    symbol=st.from_regex(ValidationSettings().symbol_pattern, fullmatch=True),
    exchange=any_text,
    price_e9=st.one_of(st.integers(1, INT64[1]), st.integers(1, 10**13)),  # CHECK (price > 0)
    size_e9=st.one_of(st.integers(0, INT64[1]), st.integers(0, 10**13)),  # CHECK (size >= 0)
    ts_ns=times_ns,
    source=any_text,
    seq=st.integers(*INT64),
    bid_e9=st.none() | e9_values,
    ask_e9=st.none() | e9_values,
)
batches = st.tuples(
    # One row per tick, (source, seq, time) as the consumer keeps them, time in microseconds.
    st.lists(ticks, max_size=40, unique_by=lambda t: (t.source, t.seq, t.ts_ns // 1000)),
    st.integers(*INT32),
    st.integers(0, INT64[1] - 100),
)


def as_rows(batch: tuple[list[Tick], int, int]) -> list[tuple[Tick, int, int]]:
    """Kafka offsets increase by row, so reading back in offset order gives the batch order."""
    tick_list, partition, first_offset = batch
    return [(t, partition, first_offset + i) for i, t in enumerate(tick_list)]


@settings(max_examples=200, deadline=None)
@given(batches)
def test_any_batch_decodes_to_stock_price_rows(batch: tuple[list[Tick], int, int]) -> None:
    rows = as_rows(batch)
    assert decode_stream(StockPriceCopyEncoder().encode(rows)) == [stock_price_row(*r) for r in rows]


# -- integration: through TimescaleDB -----------------------------------------------------


@pytest.fixture(scope="module")
async def scratch_table(migrated: Settings) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """An empty copy of stock_prices (columns, defaults, indexes, 1 hour chunks), as the owner."""
    conn = await asyncpg.connect(migrated.timescale.admin_dsn.get_secret_value())
    table = f"test_copy_binary_{uuid.uuid4().hex[:10]}"
    try:
        await conn.execute(f"CREATE TABLE {table} (LIKE stock_prices INCLUDING DEFAULTS INCLUDING INDEXES)")
        await conn.execute(f"SELECT create_hypertable('{table}', 'time', chunk_time_interval => INTERVAL '1 hour')")
        yield conn, table
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


async def copy_and_read_back(conn: asyncpg.Connection, table: str, data: bytearray | memoryview) -> list[StockPriceRow]:
    """COPY ``data`` and read the table back, in a transaction that is rolled back."""
    tx = conn.transaction()
    await tx.start()
    try:
        status = await conn.copy_to_table(table, source=data, columns=COPY_COLUMNS, format="binary")
        assert status.startswith("COPY ")
        records = await conn.fetch(f"SELECT {', '.join(COPY_COLUMNS)} FROM {table} ORDER BY kafka_offset")
    finally:
        await tx.rollback()
    return [tuple(r.values()) for r in records]


@pytest.mark.integration
async def test_copied_rows_read_back_as_stock_price_rows(scratch_table: tuple[asyncpg.Connection, str]) -> None:
    conn, table = scratch_table
    data = StockPriceCopyEncoder().encode(TRICKY_ROWS)
    # Not bytes: copy_to_table takes bytes for a file name (os.fspath accepts it).
    read = await copy_and_read_back(conn, table, memoryview(data))
    assert read == [stock_price_row(*r) for r in TRICKY_ROWS]


@pytest.mark.integration
async def test_a_value_beyond_the_column_fails_the_copy(scratch_table: tuple[asyncpg.Connection, str]) -> None:
    """As with a Decimal: NUMERIC(20, 9) holds less than 10**11; the server says so."""
    conn, table = scratch_table
    data = StockPriceCopyEncoder().encode([(make_tick(0, price_e9=10**20), 0, 0)])
    with pytest.raises(asyncpg.NumericValueOutOfRangeError):
        await copy_and_read_back(conn, table, data)


@pytest.mark.integration
@settings(max_examples=40, deadline=None)
@given(batch=batches)
async def test_any_batch_reads_back_exactly(
    scratch_table: tuple[asyncpg.Connection, str], batch: tuple[list[Tick], int, int]
) -> None:
    conn, table = scratch_table
    rows = as_rows(batch)
    read = await copy_and_read_back(conn, table, StockPriceCopyEncoder().encode(rows))
    expected = [stock_price_row(*r) for r in rows]
    assert read == expected
    for got, want in zip(read, expected, strict=True):  # also the same scale and time zone
        assert [str(v) for v in got] == [str(v) for v in want]
