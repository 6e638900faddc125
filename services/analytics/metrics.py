"""The analytics figures: pure functions over series, no I/O.

Everything the worker stores and the routes answer is computed here, from series
that ``series.py`` reads (portfolio values from ``portfolio_snapshots``, bars
from the ``ohlcv_*`` views, index values from ``market_indices``, spread sums
from ``stock_prices``). The tests check every figure against numpy on the same
series (``tests/services/analytics/test_metrics.py``).

**Windows.** Every metric is computed per window ending at the round's time
``end``: ``1h``, ``1d`` (sampled at 1 minute), ``1w`` (1 hour), ``1m`` (30
days) and ``ytd`` (since 1 January UTC of ``end``'s year), both at 1 day. A
series is a list of points, one per bucket of the window's resolution (the bar,
or the last snapshot in the bucket), stamped with the bucket's start. A
window's points are its **anchor**, the latest point at or before the window's
start, and every point after it; without a point that old the history is
shorter than the window: its ``return`` is not reported (a return over less
time than the window says would mislead), and the other metrics use the points
there are.

**Portfolio returns leave deposits out.** A snapshot's ``contributions`` are
``cash + cost_basis - realised``: deposits minus withdrawals, which buys, sells
and fees leave unchanged. The return of a period is ``(V_i - (C_i - C_{i-1})) /
V_{i-1} - 1`` (a flow counts at the period's end: time-weighted return), and is
skipped when ``V_{i-1} <= 0`` (nothing was at risk). A gap in the series (no
priced snapshot for a while) is one period.

**Formulas** (``r``: the window's period returns, ``n`` of them; ``P``: periods
per year, ``365 * 86400 / resolution in seconds``: the markets here trade every
day of the year; standard deviations with ``n - 1``):

- ``return``: ``prod(1 + r) - 1`` (portfolio), ``close_last / close_anchor - 1`` (symbol);
- ``volatility`` (portfolio): ``std(r) * sqrt(P)``, n >= 2;
- ``sharpe``: ``mean(r - rf) / std(r) * sqrt(P)`` with ``rf = (1 + R)^(1/P) - 1``,
  ``R`` the annual risk-free rate; n >= 2 and ``std(r) > 0``;
- ``max_drawdown``: ``min_k (W_k / max_{j<=k} W_j - 1)`` on the wealth ``W_0 = 1``,
  ``W_k = prod_{i<=k}(1 + r_i)``; 0 or negative;
- ``beta``: ``cov(r_p, r_m) / var(r_m)`` over the periods both the portfolio and
  the benchmark index have (same two bucket times); at least 2 and ``var > 0``;
- ``realised_volatility`` (symbol): ``sqrt(P * mean(ln(c_i / c_{i-1})^2))`` over
  consecutive bar closes, n >= 1;
- ``vwap`` (symbol): ``sum(vwap_b * volume_b) / sum(volume_b)`` over the bars
  inside the window (not the anchor), bars without volume left out;
- ``avg_spread`` (symbol): the mean of ``ask - bid`` over the window's ticks that
  carry both (the bars carry no quotes), only for ``1h`` (raw ticks are many:
  a round must not scan a day of them per symbol).

**Precision.** Inputs are exact decimals converted to binary doubles once;
every figure is a double computed with ``math.fsum`` sums, and agrees with the
same computation in numpy to a relative 1e-9 (absolute 1e-12 near zero). A
bar's VWAP is already rounded to 9 decimals, so a window's VWAP is within
5e-10 of the ticks' own.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

SubjectKind = Literal["portfolio", "symbol"]
WindowName = Literal["1h", "1d", "1w", "1m", "ytd"]
Resolution = Literal["1m", "1h", "1d"]

YEAR_S: Final = 365 * 86400
RESOLUTION_WIDTHS: Final[dict[Resolution, timedelta]] = {
    "1m": timedelta(minutes=1),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
PORTFOLIO_METRICS: Final = ("return", "volatility", "max_drawdown", "sharpe", "beta")
SYMBOL_METRICS: Final = ("return", "realised_volatility", "vwap", "avg_spread")
#: Windows whose average spread is computed (from raw ticks: a day of them is
#: millions of rows per symbol at the synthetic feed's rates, an hour is not).
SPREAD_WINDOWS: Final[tuple[WindowName, ...]] = ("1h",)


@dataclass(frozen=True, slots=True)
class Window:
    name: WindowName
    #: None: since 1 January UTC of the end's year.
    length: timedelta | None
    resolution: Resolution

    def start(self, end: datetime) -> datetime:
        """Where the window begins, for a window ending at ``end`` (aware)."""
        if self.length is not None:
            return end - self.length
        return datetime(end.astimezone(UTC).year, 1, 1, tzinfo=UTC)

    @property
    def periods_per_year(self) -> float:
        return YEAR_S / RESOLUTION_WIDTHS[self.resolution].total_seconds()


WINDOWS: Final[dict[WindowName, Window]] = {
    "1h": Window("1h", timedelta(hours=1), "1m"),
    "1d": Window("1d", timedelta(days=1), "1m"),
    "1w": Window("1w", timedelta(days=7), "1h"),
    "1m": Window("1m", timedelta(days=30), "1d"),
    "ytd": Window("ytd", None, "1d"),
}


@dataclass(frozen=True, slots=True)
class Point:
    """One bucket of a series: its start, the value at its end (a portfolio's
    total value, a bar's close, an index value), and for a portfolio its net
    contributions at that time."""

    time: datetime
    value: float
    contributions: float = 0.0


@dataclass(frozen=True, slots=True)
class Bar:
    """What the symbol metrics need of a bar."""

    time: datetime
    close: float
    volume: float
    #: None when every tick of the bar had size 0.
    vwap: float | None


@dataclass(frozen=True, slots=True)
class SpreadSum:
    """Of the ticks in a window that carry bid and ask: the sum of ``ask - bid``, and how many."""

    total: float
    count: int


@dataclass(frozen=True, slots=True)
class MetricValue:
    metric: str
    window: WindowName
    value: float


@dataclass(frozen=True, slots=True)
class PeriodReturn:
    """The return from the bucket starting ``start`` to the one starting ``end``."""

    start: datetime
    end: datetime
    value: float


def window_points(points: Sequence[Point], start: datetime) -> tuple[list[Point], bool]:
    """The anchor (latest point at or before ``start``) and every later point,
    and whether there was an anchor (the series covers the window). Without one,
    every point. ``points`` ascend in time."""
    anchor = None
    for i, p in enumerate(points):
        if p.time <= start:
            anchor = i
        else:
            break
    if anchor is None:
        return list(points), False
    return list(points[anchor:]), True


def period_returns(points: Sequence[Point]) -> list[PeriodReturn]:
    """Flow-adjusted returns between consecutive points; a period starting at a
    value of 0 or less is skipped."""
    out = []
    for before, after in itertools.pairwise(points):
        if before.value <= 0:
            continue
        flow = after.contributions - before.contributions
        out.append(PeriodReturn(before.time, after.time, (after.value - flow) / before.value - 1.0))
    return out


def chained_return(returns: Iterable[float]) -> float:
    wealth = 1.0
    for r in returns:
        wealth *= 1.0 + r
    return wealth - 1.0


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _sample_std(values: Sequence[float]) -> float:
    mean = _mean(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def annualised_volatility(returns: Sequence[float], periods_per_year: float) -> float | None:
    if len(returns) < 2:
        return None
    return _sample_std(returns) * math.sqrt(periods_per_year)


def sharpe_ratio(returns: Sequence[float], periods_per_year: float, risk_free_rate: float) -> float | None:
    if len(returns) < 2:
        return None
    std = _sample_std(returns)
    if std == 0:
        return None
    rf = (1.0 + risk_free_rate) ** (1.0 / periods_per_year) - 1.0
    return _mean([r - rf for r in returns]) / std * math.sqrt(periods_per_year)


def max_drawdown(returns: Sequence[float]) -> float | None:
    if not returns:
        return None
    wealth = peak = 1.0
    worst = 0.0
    for r in returns:
        wealth *= 1.0 + r
        peak = max(peak, wealth)
        worst = min(worst, wealth / peak - 1.0)
    return worst


def beta(portfolio: Sequence[PeriodReturn], benchmark: Sequence[PeriodReturn]) -> float | None:
    """Over the periods (same start and end) both series have."""
    market = {(r.start, r.end): r.value for r in benchmark}
    pairs = [(r.value, market[(r.start, r.end)]) for r in portfolio if (r.start, r.end) in market]
    if len(pairs) < 2:
        return None
    rp = [p for p, _ in pairs]
    rm = [m for _, m in pairs]
    mean_p, mean_m = _mean(rp), _mean(rm)
    var_m = math.fsum((m - mean_m) ** 2 for m in rm)
    if var_m == 0:
        return None
    return math.fsum((p - mean_p) * (m - mean_m) for p, m in pairs) / var_m


def realised_volatility(closes: Sequence[float], periods_per_year: float) -> float | None:
    if len(closes) < 2 or any(c <= 0 for c in closes):
        return None
    logs = [math.log(after / before) for before, after in itertools.pairwise(closes)]
    return math.sqrt(periods_per_year * math.fsum(x * x for x in logs) / len(logs))


def volume_weighted_price(bars: Sequence[Bar]) -> float | None:
    weighted = [(b.vwap, b.volume) for b in bars if b.vwap is not None and b.volume > 0]
    volume = math.fsum(v for _, v in weighted)
    if volume <= 0:
        return None
    return math.fsum(p * v for p, v in weighted) / volume


def average_spread(spread: SpreadSum) -> float | None:
    return spread.total / spread.count if spread.count > 0 else None


def portfolio_metrics(
    series: Mapping[Resolution, Sequence[Point]],
    benchmark: Mapping[Resolution, Sequence[Point]],
    *,
    end: datetime,
    risk_free_rate: float,
) -> list[MetricValue]:
    """Every portfolio metric of every window whose inputs suffice (the others
    are left out, never reported as 0). ``series`` and ``benchmark`` hold the
    points of each resolution, ascending, up to ``end``."""
    out: list[MetricValue] = []
    for window in WINDOWS.values():
        points, covered = window_points(series.get(window.resolution, ()), window.start(end))
        returns = period_returns(points)
        values = [r.value for r in returns]
        ppy = window.periods_per_year
        market_points, _ = window_points(benchmark.get(window.resolution, ()), window.start(end))
        figures = {
            "return": chained_return(values) if covered and returns else None,
            "volatility": annualised_volatility(values, ppy),
            "max_drawdown": max_drawdown(values),
            "sharpe": sharpe_ratio(values, ppy, risk_free_rate),
            "beta": beta(returns, period_returns(market_points)),
        }
        out += _finite(figures, window.name)
    return out


def symbol_metrics(
    bars: Mapping[Resolution, Sequence[Bar]], spreads: Mapping[WindowName, SpreadSum], *, end: datetime
) -> list[MetricValue]:
    """Every symbol metric of every window whose inputs suffice. ``bars`` holds
    the bars of each resolution, ascending; ``spreads`` the spread sums of the
    windows in ``SPREAD_WINDOWS``."""
    out: list[MetricValue] = []
    for window in WINDOWS.values():
        start = window.start(end)
        of_resolution = bars.get(window.resolution, ())
        points, covered = window_points([Point(b.time, b.close) for b in of_resolution], start)
        closes = [p.value for p in points]
        spread = spreads.get(window.name)
        figures = {
            "return": closes[-1] / closes[0] - 1.0 if covered and len(closes) >= 2 else None,
            "realised_volatility": realised_volatility(closes, window.periods_per_year),
            "vwap": volume_weighted_price([b for b in of_resolution if start <= b.time < end]),
            "avg_spread": None if spread is None else average_spread(spread),
        }
        out += _finite(figures, window.name)
    return out


def _finite(figures: Mapping[str, float | None], window: WindowName) -> list[MetricValue]:
    return [
        MetricValue(name, window, value)
        for name, value in figures.items()
        if value is not None and math.isfinite(value)
    ]
