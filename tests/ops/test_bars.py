"""``ops.bars``: how bars are printed (unit). Reading and repairing are tested
through the command, in ``tests/cli/test_bars.py``."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from nexanest.ops.bars import BarRow, format_bars

T0 = datetime(2025, 2, 3, 14, 30, tzinfo=UTC)


def test_bars_print_exact_numbers_without_padding_zeros() -> None:
    bar = BarRow(T0, "AAPL", Decimal("187.250000000"), Decimal("188.000000001"), Decimal("187"), Decimal("187.5"),
                 Decimal("1200.000000000"), 3, None)  # fmt: skip
    assert bar.to_json() == {
        "bucket": "2025-02-03T14:30:00Z",
        "symbol": "AAPL",
        "open": "187.25",
        "high": "188.000000001",
        "low": "187",
        "close": "187.5",
        "volume": "1200",
        "trade_count": 3,
        "vwap": None,
    }
    header, line = format_bars([bar], "1m").splitlines()
    assert header.split() == ["bucket", "(UTC)", "open", "high", "low", "close", "volume", "trades", "vwap"]
    assert line.split() == ["2025-02-03", "14:30", "187.25", "188.000000001", "187", "187.5", "1200", "3"]
    assert format_bars([bar], "1d").splitlines()[1].split()[0] == "2025-02-03"
