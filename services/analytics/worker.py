"""The analytics worker: every portfolio's and every active symbol's metrics, at
each multiple of ``analytics_interval_s`` (every five minutes on the five
minutes), as the snapshot worker of the portfolio service does its rounds.

It runs inside the service (``analytics_worker_in_service``, the default) or
alone (``nexanest serve analytics-worker``). A round's rows are stamped with its
aligned time and stored once per (subject, metric, window, time), so two
workers side by side write each row once. A round that fails (a database or
Redis away) is logged and the next one runs as usual.

After a round's metrics, it runs the saved reports whose schedule is due
(``runs.run_due``, at most ``analytics_reports_per_round``), each as its owner,
and stores each run stamped with the round's time, so two workers store a
round's run once. A report that fails is logged and counted; it stays due.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from nexanest.pipeline.log import get_logger
from nexanest.pipeline.settings import Settings
from nexanest.services.analytics import runs, series
from nexanest.services.analytics.cache import MetricsCache
from nexanest.services.analytics.compute import Parameters, compute_portfolios, compute_symbols
from nexanest.services.app import Resource
from nexanest.services.background import run_rounds, worker_resource
from nexanest.services.resources import postgres_pool, redis_client

_log = get_logger("nexanest.services.analytics.worker")


@dataclass(frozen=True, slots=True)
class RoundResult:
    at: datetime
    portfolios: int
    symbols: int


def parameters_of(settings: Settings) -> Parameters:
    s = settings.services
    return Parameters(risk_free_rate=s.analytics_risk_free_rate, benchmark_index=s.analytics_benchmark_index)


def cache_ttl_s(settings: Settings) -> float:
    """Three intervals: a missed round or two keeps the cache, a stopped worker does not."""
    return 3 * settings.services.analytics_interval_s


async def analytics_round(
    pool: asyncpg.Pool, cache: MetricsCache | None, settings: Settings, *, at: datetime
) -> RoundResult:
    """Compute, store and cache every metric for windows ending at ``at``."""
    portfolios = await compute_portfolios(pool, cache, parameters_of(settings), at=at)
    symbols = await series.active_symbols(pool, at, settings.services.analytics_max_symbols)
    computed = await compute_symbols(pool, cache, symbols, at=at)
    return RoundResult(at, len(portfolios), len(computed))


async def scheduled_reports(
    reports_pool: asyncpg.Pool, metrics_pool: asyncpg.Pool, settings: Settings, *, at: datetime
) -> runs.ScheduledResult | None:
    """Run the saved reports due at ``at``; None (logged) when the listing itself
    failed (the analytics database away): the next round lists them again."""
    started = time.perf_counter()
    try:
        result = await runs.run_due(
            reports_pool, metrics_pool, at=at, limit=settings.services.analytics_reports_per_round
        )
    except Exception as exc:  # noqa: BLE001 - the worker outlives the analytics database's absence
        _log.error("report_runs_failed", at=at.isoformat(), error=repr(exc))
        return None
    if result.due:
        _log.info(
            "report_runs",
            at=at.isoformat(),
            due=result.due,
            ran=result.ran,
            failed=result.failed,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
    return result


async def run_analytics(settings: Settings, *, stop: asyncio.Event, interval_s: float | None = None) -> None:
    """Rounds at each multiple of ``interval_s`` (default
    ``settings.services.analytics_interval_s``) until ``stop`` is set. Connects as
    the analytics role (``analytics_timescale_dsn``) and to Redis ``db_analytics``;
    raises when TimescaleDB cannot be reached at start, logs (and outlives) a
    failed round afterwards. Returns soon after ``stop``, once a round in
    progress has finished."""
    interval = interval_s or settings.services.analytics_interval_s
    if interval <= 0:
        raise ValueError(f"interval_s must be positive, not {interval}")
    s = settings.services
    async with (
        postgres_pool("analytics-worker-db", s.analytics_timescale_dsn, max_size=2).open() as pool,
        postgres_pool("analytics-worker-reports-db", s.analytics_dsn, max_size=2).open() as reports_pool,
        redis_client("analytics-worker-redis", settings.redis.url, db=settings.redis.db_analytics).open() as client,
    ):
        cache = MetricsCache(client, prefix=s.analytics_cache_prefix, ttl_s=cache_ttl_s(settings))
        _log.info("analytics_worker_started", interval_s=interval)

        async def one_round(at: datetime) -> dict[str, object]:
            try:
                result = await analytics_round(pool, cache, settings, at=at)
            finally:  # the due reports run even when the metrics failed (logged as analytics_round_failed)
                await scheduled_reports(reports_pool, pool, settings, at=at)
            return {"at": result.at.isoformat(), "portfolios": result.portfolios, "symbols": result.symbols}

        await run_rounds(interval, stop, one_round, log=_log, event="analytics_round")
    _log.info("analytics_worker_stopped")


def analytics_worker(settings: Settings, *, name: str = "analytics-worker") -> Resource[asyncio.Task[None]]:
    """The worker as a resource of the service: started with it, stopped with it;
    ``/readyz`` fails if it died."""
    return worker_resource(
        name,
        lambda stop: run_analytics(settings, stop=stop),
        task_name="analytics-worker",
        log=_log,
        failed_event="analytics_worker_failed",
    )
