from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexanest.schemas.ticks import Tick, decode_tick, encode_tick, format_e9, parse_e9

# A version-1 tick as another language's MessagePack library would write it
# (a map with string keys, fields in any order). Frozen: if this stops decoding
# to the tick below, the wire format changed and every producer breaks.
FROZEN_V1 = bytes.fromhex(
    "8a"  # map of 10
    "a176"
    "01"  # v: 1
    "a673796d626f6c"
    "a44141504c"  # symbol: AAPL
    "a865786368616e6765"
    "a4584e4153"  # exchange: XNAS
    "a870726963655f6539"
    "cf0000002b98f84080"  # price_e9: 187250000000
    "a773697a655f6539"
    "cf000000174876e800"  # size_e9: 100000000000
    "a66269645f6539"
    "cf0000002b985faa00"  # bid_e9: 187240000000
    "a661736b5f6539"
    "cf0000002b9990d700"  # ask_e9: 187260000000
    "a574735f6e73"
    "cf187afca767ca0000"  # ts_ns: 1764000000000000000
    "a6736f75726365"
    "a474657374"  # source: test
    "a3736571"
    "07"  # seq: 7
)


def test_frozen_v1_sample_decodes() -> None:
    tick = decode_tick(FROZEN_V1)
    assert tick == Tick(
        symbol="AAPL",
        exchange="XNAS",
        price_e9=187_250_000_000,
        size_e9=100_000_000_000,
        bid_e9=187_240_000_000,
        ask_e9=187_260_000_000,
        ts_ns=1_764_000_000_000_000_000,
        source="test",
        seq=7,
    )


def test_round_trip_and_optional_quote_fields() -> None:
    tick = Tick(symbol="BTC-USD", exchange="X", price_e9=1, size_e9=0, ts_ns=1, source="s", seq=0)
    assert decode_tick(encode_tick(tick)) == tick
    assert tick.bid_e9 is None
    assert tick.ask_e9 is None


def test_unknown_fields_are_ignored_so_producers_can_add_fields() -> None:
    data = msgspec.msgpack.encode(
        {"symbol": "A", "exchange": "X", "price_e9": 1, "size_e9": 1, "ts_ns": 1, "source": "s", "seq": 1, "new": 3}
    )
    assert decode_tick(data).symbol == "A"


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",
        msgspec.msgpack.encode({"symbol": "A"}),  # missing fields
        msgspec.msgpack.encode(
            {"symbol": "A", "exchange": "X", "price_e9": "1", "size_e9": 1, "ts_ns": 1, "source": "s", "seq": 1}
        ),
    ],
)
def test_malformed_bytes_raise_decode_error(payload: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_tick(payload)


@pytest.mark.parametrize(
    ("value", "text"),
    [(187_250_000_000, "187.25"), (1, "0.000000001"), (5 * 10**9, "5"), (-1_500_000_000, "-1.5"), (0, "0")],
)
def test_format_e9(value: int, text: str) -> None:
    assert format_e9(value) == text
    assert parse_e9(text) == value


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_format_parse_round_trip(value: int) -> None:
    assert parse_e9(format_e9(value)) == value


def test_parse_e9_rejects_excess_precision() -> None:
    with pytest.raises(ValueError, match="more than 9 decimal places"):
        parse_e9("1.0000000001")
