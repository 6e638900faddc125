"""One computation of metrics: read the series, compute (``metrics.py``), store
the rows in ``analytics_metrics``, cache the answer in Redis.

Shared by the scheduled worker (``worker.py``: every portfolio and every active
symbol) and the on-demand routes (one portfolio, one symbol), so both store and
answer the same figures. A portfolio's rows are written as its owner
(``acting_as``), which row-level security demands; the owner comes from the
portfolio's snapshots. The cache is optional: a Redis failure is logged and the
rows stay the truth.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from redis.exceptions import RedisError

from nexanest.pipeline.log import get_logger
from nexanest.services.analytics import series, store
from nexanest.services.analytics.cache import MetricsCache
from nexanest.services.analytics.metrics import MetricValue, SubjectKind, portfolio_metrics, symbol_metrics
from nexanest.services.analytics.models import MetricsOut
from nexanest.services.rls import acting_as

_log = get_logger("nexanest.services.analytics")


@dataclass(frozen=True, slots=True)
class Parameters:
    """What the computation takes from the settings (``settings.services.analytics_*``)."""

    risk_free_rate: float
    #: None: no beta.
    benchmark_index: str | None


def metrics_out(
    kind: SubjectKind, subject_id: str, as_of: datetime | None, values: Sequence[MetricValue]
) -> MetricsOut:
    grouped: dict[str, dict[str, float]] = defaultdict(dict)
    for v in values:
        grouped[v.window][v.metric] = v.value
    return MetricsOut.model_validate(
        {"subject_kind": kind, "subject_id": subject_id, "as_of": as_of, "metrics": dict(grouped)}
    )


def rows_out(kind: SubjectKind, subject_id: str, rows: Sequence[asyncpg.Record]) -> MetricsOut:
    """The answer for stored rows of one time (``store.latest``)."""
    values = [MetricValue(r["metric"], r["time_window"], r["value"]) for r in rows]
    return metrics_out(kind, subject_id, rows[0]["time"] if rows else None, values)


def body(out: MetricsOut) -> bytes:
    return out.model_dump_json(by_alias=True).encode()


async def compute_portfolios(
    pool: asyncpg.Pool,
    cache: MetricsCache | None,
    parameters: Parameters,
    *,
    at: datetime,
    portfolio_ids: Sequence[uuid.UUID] | None = None,
) -> dict[uuid.UUID, MetricsOut]:
    """The metrics of every portfolio with priced snapshots (or of ``portfolio_ids``)
    for windows ending at ``at``, stored and cached; by portfolio id."""
    found = await series.portfolio_series(pool, at, portfolio_ids)
    benchmark = await series.index_series(pool, parameters.benchmark_index, at) if parameters.benchmark_index else {}
    by_user: dict[uuid.UUID, list[tuple[uuid.UUID, list[MetricValue]]]] = defaultdict(list)
    for portfolio_id, s in found.items():
        values = portfolio_metrics(s.points, benchmark, end=at, risk_free_rate=parameters.risk_free_rate)
        by_user[s.user_id].append((portfolio_id, values))
    out: dict[uuid.UUID, MetricsOut] = {}
    for user_id, portfolios in by_user.items():
        try:
            async with acting_as(pool, user_id) as conn:
                for portfolio_id, values in portfolios:
                    await store.write_metrics(conn, "portfolio", str(portfolio_id), user_id, at, values)
        except asyncpg.InsufficientPrivilegeError as exc:
            # The policy refused: the portfolio's snapshots went (it was deleted) after they
            # were read. The user's other portfolios come again next round; others go on.
            _log.warning("analytics_portfolio_gone", user_id=str(user_id), error=repr(exc))
            continue
        for portfolio_id, values in portfolios:
            out[portfolio_id] = metrics_out("portfolio", str(portfolio_id), at, values)
            if cache is not None:
                await _cache(cache, cache.portfolio_key(user_id, portfolio_id), out[portfolio_id])
    return out


async def compute_symbols(
    pool: asyncpg.Pool, cache: MetricsCache | None, symbols: Sequence[str], *, at: datetime
) -> dict[str, MetricsOut]:
    """The metrics of ``symbols`` for windows ending at ``at``, stored and cached;
    a symbol without any bar in reach is left out."""
    out: dict[str, MetricsOut] = {}
    for symbol in symbols:
        async with pool.acquire() as conn:
            bars = await series.symbol_bars(conn, symbol, at)
            if not any(bars.values()):
                continue
            spreads = await series.spread_sums(conn, symbol, at)
            values = symbol_metrics(bars, spreads, end=at)
            await store.write_metrics(conn, "symbol", symbol, None, at, values)
        out[symbol] = metrics_out("symbol", symbol, at, values)
        if cache is not None:
            await _cache(cache, cache.symbol_key(symbol), out[symbol])
    return out


async def _cache(cache: MetricsCache, key: str, out: MetricsOut) -> None:
    try:
        await cache.put(key, body(out))
    except (RedisError, OSError) as exc:
        _log.warning("analytics_cache_unavailable", error=repr(exc))
