"""The analytics service's routes, under ``/analytics``.

Every route acts for the user its bearer token names. Portfolio metrics and
saved reports are read and written only inside ``acting_as``
(``services/rls.py``), so row-level security decides what a user reaches: a
portfolio or report of another user answers 404 exactly as one that does not
exist. Symbol metrics are market data, the same for every user.

No ``from __future__ import annotations`` here: the routes close over their
resources (``services/app.py``, ``Resource``).
"""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

import asyncpg
import redis.asyncio as redis
from fastapi import APIRouter, Depends, Path, Query, Response, status
from redis.exceptions import RedisError

from nexanest.pipeline.log import get_logger
from nexanest.pipeline.settings import Settings
from nexanest.services.analytics import reports, runs, store
from nexanest.services.analytics.cache import MetricsCache
from nexanest.services.analytics.compute import body, compute_portfolios, compute_symbols, rows_out
from nexanest.services.analytics.metrics import SubjectKind, WindowName
from nexanest.services.analytics.models import (
    SYMBOL_PATTERN,
    MetricHistoryOut,
    MetricName,
    MetricPoint,
    MetricsOut,
    ReportIn,
    ReportOut,
    ReportRun,
    StoredRun,
)
from nexanest.services.analytics.worker import cache_ttl_s, parameters_of
from nexanest.services.app import Resource
from nexanest.services.problems import Problem, problem_responses
from nexanest.services.rls import acting_as, count_under_lock
from nexanest.services.tokens import AUTH_RESPONSES, BearerAuth, Identity, TokenVerifier

_log = get_logger("nexanest.services.analytics")

_NO_PORTFOLIO: Final = "no such portfolio (or it has no snapshots yet)"
_NO_SYMBOL: Final = "no metrics for that symbol (no bars in reach)"
_NO_REPORT: Final = "no such report"
#: A history answers at most this many values.
MAX_HISTORY_POINTS: Final = 5000
#: Reports one user may keep (bounds ``GET /analytics/reports``).
MAX_REPORTS: Final = 200
#: A report's runs answer at most this many.
MAX_RUNS: Final = 500
_EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST: Final = datetime(2200, 1, 1, tzinfo=UTC)
_JSON: Final = "application/json"


def build_router(
    settings: Settings,
    *,
    verifier: TokenVerifier,
    metrics_db: Resource[asyncpg.Pool],
    reports_db: Resource[asyncpg.Pool],
    cache: Resource[redis.Redis],
) -> APIRouter:
    """The routes under ``/analytics``, over the given resources."""
    s = settings.services
    current_user = BearerAuth(verifier)
    User = Annotated[Identity, Depends(current_user)]
    MetricsDb = Annotated[asyncpg.Pool, Depends(metrics_db.get)]
    ReportsDb = Annotated[asyncpg.Pool, Depends(reports_db.get)]
    Cache = Annotated[redis.Redis, Depends(cache.get)]
    PortfolioId = Annotated[uuid.UUID, Path(description="the portfolio's id")]
    SymbolPath = Annotated[str, Path(pattern=SYMBOL_PATTERN, description="a symbol, e.g. SYN0001")]
    ReportId = Annotated[uuid.UUID, Path(description="the report's id")]
    From = Annotated[datetime | None, Query(alias="from", description="inclusive; default: `to` minus one day")]
    To = Annotated[datetime | None, Query(description="exclusive; default: now")]
    Name = Annotated[MetricName | None, Query(description="one metric; default: all")]
    Window = Annotated[WindowName | None, Query(description="one window; default: all")]
    Limit = Annotated[int, Query(ge=1, le=MAX_HISTORY_POINTS)]
    RunsLimit = Annotated[int, Query(ge=1, le=MAX_RUNS)]
    router = APIRouter(prefix="/analytics", tags=["analytics"], responses={**AUTH_RESPONSES, **problem_responses(422)})
    parameters = parameters_of(settings)

    def metrics_cache(client: redis.Redis) -> MetricsCache:
        return MetricsCache(client, prefix=s.analytics_cache_prefix, ttl_s=cache_ttl_s(settings))

    async def cached(client: redis.Redis, key: str) -> bytes | None:
        try:
            return await metrics_cache(client).get(key)
        except (RedisError, OSError) as exc:
            _log.warning("analytics_cache_unavailable", error=repr(exc))
            return None

    @router.get(
        "/portfolios/{portfolio_id}",
        response_model=MetricsOut,
        responses=problem_responses(404),
        summary="The latest metrics of one of your portfolios",
    )
    async def portfolio_latest(portfolio_id: PortfolioId, user: User, pool: MetricsDb, client: Cache) -> Response:
        """Returns over 1h, 1d, 1w, 1m and YTD, annualised volatility, maximum
        drawdown, Sharpe ratio and beta, per window, as the worker last computed
        them (cached). 404 for a portfolio that is not yours."""
        hit = await cached(client, metrics_cache(client).portfolio_key(user.user_id, portfolio_id))
        if hit is not None:
            return Response(hit, media_type=_JSON)
        async with acting_as(pool, user.user_id) as conn:
            rows = await store.latest(conn, "portfolio", str(portfolio_id))
            if not rows and not await store.owns_portfolio(conn, portfolio_id):
                raise Problem(404, _NO_PORTFOLIO)
        return Response(body(rows_out("portfolio", str(portfolio_id), rows)), media_type=_JSON)

    @router.post(
        "/portfolios/{portfolio_id}/compute",
        response_model=MetricsOut,
        responses=problem_responses(404),
        summary="Compute one of your portfolio's metrics now",
    )
    async def portfolio_compute(portfolio_id: PortfolioId, user: User, pool: MetricsDb, client: Cache) -> Response:
        """Computes, stores and caches the portfolio's metrics for windows ending
        now, without waiting for the worker's next round."""
        async with acting_as(pool, user.user_id) as conn:
            owned = await store.owns_portfolio(conn, portfolio_id)
        if not owned:
            raise Problem(404, _NO_PORTFOLIO)
        computed = await compute_portfolios(
            pool, metrics_cache(client), parameters, at=datetime.now(UTC), portfolio_ids=[portfolio_id]
        )
        out = computed.get(portfolio_id) or rows_out("portfolio", str(portfolio_id), [])
        return Response(body(out), media_type=_JSON)

    @router.get(
        "/portfolios/{portfolio_id}/metrics",
        responses=problem_responses(404),
        summary="One of your portfolio's stored metrics over time",
    )
    async def portfolio_history(
        portfolio_id: PortfolioId,
        user: User,
        pool: MetricsDb,
        name: Name = None,
        window: Window = None,
        from_: From = None,
        to: To = None,
        limit: Limit = 1000,
    ) -> MetricHistoryOut:
        """The stored values in [from, to), oldest first, at most ``limit``."""
        start, end = _range(from_, to)
        async with acting_as(pool, user.user_id) as conn:
            rows = await store.history(
                conn, "portfolio", str(portfolio_id), metric=name, window=window, start=start, end=end, limit=limit
            )
            if not rows and not await store.owns_portfolio(conn, portfolio_id):
                raise Problem(404, _NO_PORTFOLIO)
        return _history("portfolio", str(portfolio_id), start, end, rows)

    @router.get(
        "/symbols/{symbol}",
        response_model=MetricsOut,
        responses=problem_responses(404),
        summary="The latest metrics of a symbol",
    )
    async def symbol_latest(symbol: SymbolPath, user: User, pool: MetricsDb, client: Cache) -> Response:
        """Return and realised volatility from the bars, average spread from the
        ticks' bid and ask (1h), VWAP, per window. 404 when none were computed."""
        hit = await cached(client, metrics_cache(client).symbol_key(symbol))
        if hit is not None:
            return Response(hit, media_type=_JSON)
        async with pool.acquire() as conn:
            rows = await store.latest(conn, "symbol", symbol)
        if not rows:
            raise Problem(404, _NO_SYMBOL)
        return Response(body(rows_out("symbol", symbol, rows)), media_type=_JSON)

    @router.post(
        "/symbols/{symbol}/compute",
        response_model=MetricsOut,
        responses=problem_responses(404),
        summary="Compute a symbol's metrics now",
    )
    async def symbol_compute(symbol: SymbolPath, user: User, pool: MetricsDb, client: Cache) -> Response:
        computed = await compute_symbols(pool, metrics_cache(client), [symbol], at=datetime.now(UTC))
        if symbol not in computed:
            raise Problem(404, _NO_SYMBOL)
        return Response(body(computed[symbol]), media_type=_JSON)

    @router.get("/symbols/{symbol}/metrics", summary="A symbol's stored metrics over time")
    async def symbol_history(
        symbol: SymbolPath,
        user: User,
        pool: MetricsDb,
        name: Name = None,
        window: Window = None,
        from_: From = None,
        to: To = None,
        limit: Limit = 1000,
    ) -> MetricHistoryOut:
        start, end = _range(from_, to)
        async with pool.acquire() as conn:
            rows = await store.history(
                conn, "symbol", symbol, metric=name, window=window, start=start, end=end, limit=limit
            )
        return _history("symbol", symbol, start, end, rows)

    # --- saved reports -----------------------------------------------------------------

    @router.post(
        "/reports",
        status_code=status.HTTP_201_CREATED,
        responses=problem_responses(409),
        summary="Save a report",
    )
    async def create_report(body_in: ReportIn, user: User, pool: ReportsDb, response: Response) -> ReportOut:
        """409 when you already have a report of that name, or as many as allowed."""
        try:
            async with acting_as(pool, user.user_id) as conn:
                if await count_under_lock(conn, "saved_reports", f"analytics-report:{user.user_id}") >= MAX_REPORTS:
                    raise Problem(409, f"you have {MAX_REPORTS} reports, the most allowed")
                report = await reports.create(conn, user.user_id, body_in)
        except reports.NameTaken:
            raise Problem(409, "you already have a report of that name") from None
        response.headers["Location"] = f"/analytics/reports/{report.id}"
        return report

    @router.get("/reports", summary="Your reports")
    async def list_reports(user: User, pool: ReportsDb) -> list[ReportOut]:
        """Oldest first."""
        async with acting_as(pool, user.user_id) as conn:
            return await reports.list_reports(conn, MAX_REPORTS)

    @router.get("/reports/{report_id}", responses=problem_responses(404), summary="One report")
    async def get_report(report_id: ReportId, user: User, pool: ReportsDb) -> ReportOut:
        async with acting_as(pool, user.user_id) as conn:
            report = await reports.get(conn, report_id)
        if report is None:
            raise Problem(404, _NO_REPORT)
        return report

    @router.put("/reports/{report_id}", responses=problem_responses(404, 409), summary="Replace a report")
    async def replace_report(report_id: ReportId, body_in: ReportIn, user: User, pool: ReportsDb) -> ReportOut:
        try:
            async with acting_as(pool, user.user_id) as conn:
                report = await reports.replace(conn, report_id, body_in)
        except reports.NameTaken:
            raise Problem(409, "you already have a report of that name") from None
        if report is None:
            raise Problem(404, _NO_REPORT)
        return report

    @router.delete(
        "/reports/{report_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=problem_responses(404),
        summary="Delete a report",
    )
    async def delete_report(report_id: ReportId, user: User, pool: ReportsDb) -> Response:
        async with acting_as(pool, user.user_id) as conn:
            deleted = await reports.delete(conn, report_id)
        if not deleted:
            raise Problem(404, _NO_REPORT)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.get("/reports/{report_id}/run", responses=problem_responses(404), summary="Run a report now")
    async def run_report(report_id: ReportId, user: User, pool: ReportsDb, metrics_pool: MetricsDb) -> ReportRun:
        """The latest stored metrics of each subject of the report, narrowed to its
        metrics and windows. A portfolio that is not yours is ``missing``, as one
        without metrics is."""
        result = await runs.run(pool, metrics_pool, user.user_id, report_id)
        if result is None:
            raise Problem(404, _NO_REPORT)
        return result

    @router.get("/reports/{report_id}/runs", responses=problem_responses(404), summary="A report's scheduled runs")
    async def report_runs(report_id: ReportId, user: User, pool: ReportsDb, limit: RunsLimit = 20) -> list[StoredRun]:
        """The runs the worker stored on the report's schedule, newest first, at most
        ``limit``; each ``result`` is what ``/run`` answered at ``ran_at``."""
        async with acting_as(pool, user.user_id) as conn:
            if not await reports.exists(conn, report_id):
                raise Problem(404, _NO_REPORT)
            return await runs.list_runs(conn, report_id, limit)

    return router


def _history(
    kind: SubjectKind, subject_id: str, start: datetime, end: datetime, rows: list[asyncpg.Record]
) -> MetricHistoryOut:
    return MetricHistoryOut(
        subject_kind=kind,
        subject_id=subject_id,
        from_=start,
        to=end,
        points=[
            MetricPoint(time=r["time"], metric=r["metric"], window=r["time_window"], value=r["value"]) for r in rows
        ],
    )


def _range(from_: datetime | None, to: datetime | None) -> tuple[datetime, datetime]:
    end = _bounded(to, "to") if to is not None else datetime.now(UTC)
    start = _bounded(from_, "from") if from_ is not None else end - timedelta(days=1)
    if start >= end:
        raise Problem(422, "`from` must be before `to`")
    return start, end


def _bounded(value: datetime, name: str) -> datetime:
    """``value`` in UTC, or 422 when it has no UTC offset or lies outside 1970-2200."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise Problem(422, f"`{name}` needs a UTC offset, e.g. 2026-01-31T12:00:00Z")
    outside = Problem(422, f"`{name}` must lie between 1970 and 2200")
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise outside from None
    if not _EARLIEST <= utc < _LATEST:
        raise outside
    return utc
