"""Time arguments: one parser for every command's ``--from``/``--since``."""

from __future__ import annotations

import time

import pytest

from nexanest.ops.times import format_ns, parse_time

S = 1_000_000_000
NOW = 1_764_000_000_123_456_789


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("NOW", NOW),
        ("-10m", NOW - 600 * S),
        ("-1h30m", NOW - 5_400 * S),
        ("+5s", NOW + 5 * S),
        ("-0.5s", NOW - S // 2),
        ("-250ms", NOW - 250_000_000),
        ("-2d", NOW - 2 * 86_400 * S),
        ("-1w", NOW - 7 * 86_400 * S),
        ("-3us", NOW - 3_000),
        ("-7ns", NOW - 7),
        ("0", 0),
        ("1764000000000000000", 1_764_000_000_000_000_000),
        ("2025-11-24T16:00:00Z", 1_764_000_000 * S),
        ("2025-11-24T16:00:00", 1_764_000_000 * S),  # no zone: UTC
        ("2025-11-24 17:00:00+01:00", 1_764_000_000 * S),
        ("2025-11-24T16:00:00.123456789Z", 1_764_000_000 * S + 123_456_789),
        ("2025-11-24T16:00:00.5+00:00", 1_764_000_000 * S + S // 2),
        ("2025-11-24", 1_763_942_400 * S),
    ],
)
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text, now_ns=NOW) == expected


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("-10", "needs a unit"),
        ("1764000000", "seconds or ms"),  # seconds where ns were meant
        ("1764000000000", "seconds or ms"),  # milliseconds
        ("yesterday", "cannot read"),
        ("-10x", "cannot read"),
        ("2025-11-24T16:00:00.1234567891Z", "9 fractional digits"),
        ("2025-13-01", "cannot read"),
    ],
)
def test_parse_time_rejects_with_a_hint(text: str, hint: str) -> None:
    with pytest.raises(ValueError, match=hint):
        parse_time(text, now_ns=NOW)


def test_parse_time_now_is_the_clock() -> None:
    before = time.time_ns()
    assert before <= parse_time("now") <= time.time_ns()


@pytest.mark.parametrize("ts_ns", [0, 1_764_000_000 * S, NOW, NOW + 1])
def test_format_ns_round_trips(ts_ns: int) -> None:
    assert parse_time(format_ns(ts_ns)) == ts_ns


def test_format_ns() -> None:
    assert format_ns(NOW) == "2025-11-24T16:00:00.123456789Z"
    assert format_ns(1_764_000_000 * S) == "2025-11-24T16:00:00Z"


# -- the comparison (unit) -------------------------------------------------------------
