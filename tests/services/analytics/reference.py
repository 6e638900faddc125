"""Independent computations of the analytics figures, in numpy, from the
documented formulas (``services/analytics/metrics.py``): what the tests compare
the service's figures with."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import datetime

import numpy as np

from nexanest.services.analytics.metrics import RESOLUTION_WIDTHS, WINDOWS, Bar, MetricValue, Point, Resolution


def by_key(values: Iterable[MetricValue]) -> dict[tuple[str, str], float]:
    """``{(metric, window): value}``."""
    return {(v.metric, v.window): v.value for v in values}


def window_slice(points: list[Point], start: datetime) -> tuple[list[Point], bool]:
    """numpy's view of the window: from the last point at or before ``start``."""
    times = np.array([p.time.timestamp() for p in points])
    anchor = int(np.searchsorted(times, start.timestamp(), side="right")) - 1
    return (points[anchor:], True) if anchor >= 0 else (points, False)


def np_returns(points: list[Point]) -> tuple[np.ndarray, list[tuple[datetime, datetime]]]:
    v = np.array([p.value for p in points])
    c = np.array([p.contributions for p in points])
    r = (v[1:] - np.diff(c)) / v[:-1] - 1
    keep = v[:-1] > 0
    periods = [(a.time, b.time) for a, b in itertools.pairwise(points)]
    return r[keep], [p for p, k in zip(periods, keep, strict=True) if k]


def expected_portfolio(
    series: dict[Resolution, list[Point]],
    index: dict[Resolution, list[Point]],
    *,
    end: datetime,
    risk_free_rate: float,
) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for window in WINDOWS.values():
        start = window.start(end)
        ppy = 365 * 86400 / RESOLUTION_WIDTHS[window.resolution].total_seconds()
        points, covered = window_slice(series[window.resolution], start)
        r, periods = np_returns(points)
        if covered:
            out["return", window.name] = float(np.prod(1 + r) - 1)
        out["volatility", window.name] = float(np.std(r, ddof=1) * np.sqrt(ppy))
        rf = (1 + risk_free_rate) ** (1 / ppy) - 1
        out["sharpe", window.name] = float(np.mean(r - rf) / np.std(r, ddof=1) * np.sqrt(ppy))
        wealth = np.concatenate([[1.0], np.cumprod(1 + r)])
        out["max_drawdown", window.name] = float(np.min(wealth / np.maximum.accumulate(wealth) - 1))
        market_points, _ = window_slice(index[window.resolution], start)
        rm, market_periods = np_returns(market_points)
        market = dict(zip(market_periods, rm, strict=True))
        pairs = np.array([(rp, market[p]) for rp, p in zip(r, periods, strict=True) if p in market])
        out["beta", window.name] = float(np.cov(pairs[:, 0], pairs[:, 1], ddof=1)[0, 1] / np.var(pairs[:, 1], ddof=1))
    return out


def expected_symbol(bars: dict[Resolution, list[Bar]], *, end: datetime) -> dict[tuple[str, str], float]:
    """Return, realised volatility and VWAP of every window (the bars must cover each)."""
    expected: dict[tuple[str, str], float] = {}
    for window in WINDOWS.values():
        start = window.start(end)
        ppy = 365 * 86400 / RESOLUTION_WIDTHS[window.resolution].total_seconds()
        of = bars[window.resolution]
        times = np.array([b.time.timestamp() for b in of])
        anchor = int(np.searchsorted(times, start.timestamp(), side="right")) - 1
        assert anchor >= 0, window.name
        closes = np.array([b.close for b in of[anchor:]])
        expected["return", window.name] = float(closes[-1] / closes[0] - 1)
        expected["realised_volatility", window.name] = float(np.sqrt(ppy * np.mean(np.diff(np.log(closes)) ** 2)))
        inside = [b for b in of if b.time >= start and b.vwap is not None]
        v = np.array([b.volume for b in inside])
        p = np.array([b.vwap for b in inside], dtype=float)
        expected["vwap", window.name] = float(np.sum(p * v) / np.sum(v))
    return expected
