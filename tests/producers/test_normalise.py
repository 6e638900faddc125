"""``producers/normalise.py``: exact decimals, timestamps, symbols and sequences (pure logic)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexanest.producers.normalise import (
    NormaliseError,
    Normaliser,
    decimal_e9,
    live_seq_start,
    ts_ns_from_iso,
    ts_ns_from_ms,
    ts_ns_from_us,
)
from nexanest.schemas.ticks import format_e9


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("187.25", 187_250_000_000),
        ("0.1", 100_000_000),
        ("-0.5", -500_000_000),
        ("+3", 3_000_000_000),
        ("12.", 12_000_000_000),
        (".5", 500_000_000),
        ("0.000000001", 1),
        ("0.1000000000000", 100_000_000),  # trailing zeros past the 9th place are exact
        ("1.5e2", 150_000_000_000),
        ("1E-9", 1),
        ("20e-10", 2),
        ("-2.5e+1", -25_000_000_000),
        ("0.00010000", 100_000),
        ("99999999999999999999.999999999", 10**29 - 1),
    ],
)
def test_decimal_e9_is_exact(text: str, expected: int) -> None:
    assert decimal_e9(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0.0000000001", "too_precise"),
        ("1e-10", "too_precise"),
        ("25e-10", "too_precise"),
        ("NaN", "bad_decimal"),
        ("nan", "bad_decimal"),
        ("Infinity", "bad_decimal"),
        ("-inf", "bad_decimal"),
        ("", "bad_decimal"),
        (".", "bad_decimal"),
        ("-", "bad_decimal"),
        (" 1.5", "bad_decimal"),
        ("1_000", "bad_decimal"),
        ("1.2.3", "bad_decimal"),
        ("0x10", "bad_decimal"),
        ("1e999", "out_of_range"),
        ("100000000000000000000", "out_of_range"),
        ("1" * 65, "bad_decimal"),
    ],
)
def test_decimal_e9_refuses(text: str, reason: str) -> None:
    with pytest.raises(NormaliseError) as caught:
        decimal_e9(text)
    assert caught.value.reason == reason


@given(st.integers(min_value=-(10**29) + 1, max_value=10**29 - 1))
def test_decimal_e9_inverts_format_e9(value: int) -> None:
    assert decimal_e9(format_e9(value)) == value


def test_never_through_float() -> None:
    assert decimal_e9("0.1") + decimal_e9("0.2") == decimal_e9("0.3")


def test_timestamps_from_integers() -> None:
    assert ts_ns_from_ms(1_700_000_000_123) == 1_700_000_000_123_000_000
    assert ts_ns_from_us(1_700_000_000_123_456) == 1_700_000_000_123_456_000
    with pytest.raises(NormaliseError):
        ts_ns_from_ms(2**62)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2014-11-07T08:19:27.028459Z", 1_415_348_367_028_459_000),
        ("2024-01-02T03:04:05.123456789Z", 1_704_164_645_123_456_789),
        ("2024-01-02T04:04:05.123456789+01:00", 1_704_164_645_123_456_789),
        ("2024-01-01T22:34:05.1-04:30", 1_704_164_645_100_000_000),
        ("2024-02-29t03:04:05z", 1_709_175_845_000_000_000),
        ("1969-12-31T23:59:59.5Z", -500_000_000),
    ],
)
def test_ts_ns_from_iso(text: str, expected: int) -> None:
    assert ts_ns_from_iso(text) == expected


def test_ts_ns_from_iso_agrees_with_datetime() -> None:
    moment = dt.datetime(2025, 6, 30, 12, 1, 2, 345678, tzinfo=dt.UTC)
    expected = int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000
    assert ts_ns_from_iso(moment.isoformat()) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-02T03:04:05",  # no offset: ambiguous
        "2024-01-02",
        "2023-02-29T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2016-12-31T23:59:60Z",
        "2024-01-02T03:04:05.1234567891Z",
        "yesterday",
    ],
)
def test_ts_ns_from_iso_refuses(text: str) -> None:
    with pytest.raises(NormaliseError) as caught:
        ts_ns_from_iso(text)
    assert caught.value.reason == "bad_timestamp"


def test_symbols_by_map_only_when_mapped() -> None:
    mapped = Normaliser("binance", "binance:1", {"BTCUSDT": "BTC-USDT"})
    assert mapped.symbol("BTCUSDT") == "BTC-USDT"
    assert mapped.symbol("ETHUSDT") is None  # not subscribed
    plain = Normaliser("xnas", "file")
    assert plain.symbol("aapl") == "AAPL"
    assert plain.symbol("") is None
    assert plain.symbol("X" * 33) is None
    assert plain.symbol("A\x00") is None


def test_sequence_numbers_and_ticks() -> None:
    norm = Normaliser("coinbase", "coinbase:7", seq_start=10)
    assert [norm.next_seq(), norm.next_seq()] == [10, 11]
    tick = norm.tick("BTC-USD", decimal_e9("50000.01"), decimal_e9("0.5"), 5, bid_e9=1, ask_e9=2)
    assert (tick.exchange, tick.source, tick.seq, tick.price_e9) == ("coinbase", "coinbase:7", 12, 50_000_010_000_000)
    assert norm.tick("BTC-USD", 1, 1, 5, exchange="CBX", seq=99).exchange == "CBX"
    norm.skip_to(500)
    assert norm.next_seq() == 500
    with pytest.raises(ValueError, match="only increase"):
        norm.skip_to(3)


def test_live_seq_start_beyond_any_previous_run() -> None:
    first = live_seq_start()
    norm = Normaliser("v", "s", seq_start=first)
    last = max(norm.next_seq() for _ in range(1000))
    # the clock, not a counter: a restart starts above the previous run's numbers
    # (1,000 numbers take far more than 1 µs to hand out)
    assert live_seq_start() > last
