"""Every analytics figure against an independent computation in numpy on the same
series (unit: pure functions), to the documented precision (relative 1e-9)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from nexanest.services.analytics.metrics import (
    RESOLUTION_WIDTHS,
    WINDOWS,
    Bar,
    Point,
    Resolution,
    SpreadSum,
    portfolio_metrics,
    symbol_metrics,
)
from tests.services.analytics.reference import by_key, expected_portfolio, expected_symbol

END = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
RTOL = 1e-9
ATOL = 1e-12
RISK_FREE = 0.04


def close(actual: float, expected: float) -> bool:
    return math.isclose(actual, expected, rel_tol=RTOL, abs_tol=ATOL)


def times_of(resolution: Resolution, count: int, rng: np.random.Generator) -> list[datetime]:
    """``count`` bucket starts before END, about one per bucket, some missing (gaps)."""
    width = RESOLUTION_WIDTHS[resolution]
    kept = [k for k in range(1, int(count * 1.2)) if rng.random() > 0.15][:count]
    return sorted(END - k * width for k in kept)


def portfolio_series(rng: np.random.Generator, count: dict[Resolution, int]) -> dict[Resolution, list[Point]]:
    """A random walk of values with deposits and a withdrawal folded into the contributions."""
    out = {}
    for resolution, n in count.items():
        times = times_of(resolution, n, rng)
        flows = np.where(rng.random(len(times)) < 0.05, rng.choice([-500.0, 2000.0], len(times)), 0.0)
        contributions = 10_000 + np.cumsum(flows)
        growth = np.cumprod(1 + rng.normal(0.0002, 0.01, len(times)))
        values = contributions * growth
        out[resolution] = [Point(t, float(v), float(c)) for t, v, c in zip(times, values, contributions, strict=True)]
    return out


def index_series(rng: np.random.Generator, portfolio: dict[Resolution, list[Point]]) -> dict[Resolution, list[Point]]:
    """Index values on most of the portfolio's buckets (so beta pairs only some periods)."""
    out = {}
    for resolution, points in portfolio.items():
        times = [p.time for p in points if rng.random() > 0.1]
        values = 1000 * np.cumprod(1 + rng.normal(0.0001, 0.008, len(times)))
        out[resolution] = [Point(t, float(v)) for t, v in zip(times, values, strict=True)]
    return out


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_portfolio_metrics_match_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # 1m covers a day and more, 1h a week and more, 1d only 20 days: 1m and YTD lack an anchor.
    series = portfolio_series(rng, {"1m": 1600, "1h": 200, "1d": 20})
    index = index_series(rng, series)
    got = by_key(portfolio_metrics(series, index, end=END, risk_free_rate=RISK_FREE))
    expected = expected_portfolio(series, index, end=END, risk_free_rate=RISK_FREE)
    assert set(got) == set(expected)
    assert ("return", "1m") not in got
    assert ("return", "ytd") not in got
    assert {("return", "1h"), ("return", "1d"), ("return", "1w")} <= set(got)
    for key, value in expected.items():
        assert close(got[key], value), (key, got[key], value)
    assert all(got["max_drawdown", w] <= 0 for w in WINDOWS)


def test_a_deposit_is_not_a_return() -> None:
    """The value doubles by a deposit: the return is 0, the volatility too."""
    t = [END - timedelta(minutes=k) for k in (70, 50, 30, 10)]
    points = [
        Point(t[0], 100.0, 100.0),
        Point(t[1], 100.0, 100.0),
        Point(t[2], 200.0, 200.0),
        Point(t[3], 200.0, 200.0),
    ]
    got = by_key(portfolio_metrics({"1m": points}, {}, end=END, risk_free_rate=0))
    assert got["return", "1h"] == 0.0
    assert got["volatility", "1h"] == 0.0
    assert got["max_drawdown", "1h"] == 0.0
    assert ("sharpe", "1h") not in got  # no dispersion: undefined, never infinite
    assert ("beta", "1h") not in got  # no benchmark


def test_a_period_from_nothing_is_skipped_and_too_little_data_reports_nothing() -> None:
    t = [END - timedelta(minutes=k) for k in (90, 40, 20)]
    points = [Point(t[0], 0.0, 0.0), Point(t[1], 1000.0, 1000.0), Point(t[2], 1100.0, 1000.0)]
    got = by_key(portfolio_metrics({"1m": points}, {}, end=END, risk_free_rate=0))
    assert close(got["return", "1h"], 0.1)
    assert close(got["max_drawdown", "1h"], 0.0)
    assert ("volatility", "1h") not in got  # one return: no sample deviation
    assert portfolio_metrics({}, {}, end=END, risk_free_rate=0) == []


def bars_of(rng: np.random.Generator, resolution: Resolution, count: int) -> list[Bar]:
    times = times_of(resolution, count, rng)
    closes = 100 * np.cumprod(1 + rng.normal(0, 0.002, len(times)))
    volumes = rng.integers(0, 50, len(times)).astype(float) * rng.random(len(times))
    vwaps = closes * (1 + rng.normal(0, 0.0005, len(times)))
    return [
        Bar(t, float(c), float(v), None if v == 0 else round(float(w), 9))
        for t, c, v, w in zip(times, closes, volumes, vwaps, strict=True)
    ]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_symbol_metrics_match_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    bars: dict[Resolution, list[Bar]] = {"1m": bars_of(rng, "1m", 1500), "1h": bars_of(rng, "1h", 190), "1d": []}
    bars["1d"] = bars_of(rng, "1d", 120)  # more than YTD's 74 days on 15 March: every window is covered
    bid = 100 + rng.normal(0, 1, 500)
    ask = bid + rng.random(500) * 0.05
    spread = SpreadSum(float(np.sum(ask - bid)), 500)
    got: dict[tuple[str, str], float] = {
        (m.metric, m.window): m.value for m in symbol_metrics(bars, {"1h": spread}, end=END)
    }
    expected = expected_symbol(bars, end=END)
    expected["avg_spread", "1h"] = float(np.mean(ask - bid))
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert close(got[key], value), (key, got[key], value)


def test_windows_start_where_documented() -> None:
    assert WINDOWS["ytd"].start(END) == datetime(2026, 1, 1, tzinfo=UTC)
    assert WINDOWS["1m"].start(END) == END - timedelta(days=30)
    assert WINDOWS["1h"].periods_per_year == 365 * 24 * 60
    assert WINDOWS["ytd"].periods_per_year == 365
