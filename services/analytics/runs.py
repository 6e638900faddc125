"""Running saved reports: on demand (``GET /analytics/reports/{id}/run``) and on
their schedule (the analytics worker), and the record of scheduled runs
(analytics/0003 ``report_runs``).

A run always acts as the report's owner (``acting_as``), on both databases: the
report is read, the metrics are read and the run is stored under row-level
security, so a scheduled run sees exactly what its owner's request would, and
cannot be stored in another user's name. The only step across users is
``due_reports``, the SECURITY DEFINER function that names the due reports (id,
owner, schedule) and nothing else.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from nexanest.pipeline.log import get_logger
from nexanest.services.analytics import reports, store
from nexanest.services.analytics.compute import rows_out
from nexanest.services.analytics.models import ReportOut, ReportRun, StoredRun
from nexanest.services.rls import acting_as

_log = get_logger("nexanest.services.analytics.runs")


@dataclass(frozen=True, slots=True)
class DueReport:
    report_id: uuid.UUID
    user_id: uuid.UUID
    schedule: str


@dataclass(frozen=True, slots=True)
class ScheduledResult:
    """One worker round's scheduled runs: ``ran`` stored, ``failed`` logged and left
    due (the next round tries them again)."""

    due: int
    ran: int
    failed: int


async def run(
    reports_pool: asyncpg.Pool, metrics_pool: asyncpg.Pool, user_id: uuid.UUID, report_id: uuid.UUID
) -> ReportRun | None:
    """The report run now as ``user_id``: None when that user has no such report."""
    async with acting_as(reports_pool, user_id) as conn:
        report = await reports.get(conn, report_id)
    if report is None:
        return None
    return await run_query(metrics_pool, user_id, report)


async def run_query(metrics_pool: asyncpg.Pool, user_id: uuid.UUID, report: ReportOut) -> ReportRun:
    """The latest stored metrics of each subject of ``report``, narrowed to its
    metrics and windows, read as ``user_id``: a portfolio that is not theirs is
    ``missing``, as one without metrics is."""
    query = report.definition
    names, windows = set(query.metric_names()), set(query.window_names())
    results, missing = [], []
    async with acting_as(metrics_pool, user_id) as conn:
        for subject in query.subject_ids:
            rows = [
                r
                for r in await store.latest(conn, query.subject_kind, subject)
                if r["metric"] in names and r["time_window"] in windows
            ]
            if rows:
                results.append(rows_out(query.subject_kind, subject, rows))
            else:
                missing.append(subject)
    return ReportRun(report_id=report.id, results=results, missing=missing)


async def due_reports(conn: asyncpg.Connection, at: datetime, limit: int) -> list[DueReport]:
    """The scheduled reports due at ``at`` across users, longest waiting first, at most ``limit``."""
    rows = await conn.fetch("SELECT report_id, user_id, schedule FROM analytics_due_reports($1, $2)", at, limit)
    return [DueReport(r["report_id"], r["user_id"], r["schedule"]) for r in rows]


async def store_run(conn: asyncpg.Connection, user_id: uuid.UUID, at: datetime, result: ReportRun) -> bool:
    """Store ``result`` as the report's run at ``at`` (inside ``acting_as(user_id)``);
    False when a run at ``at`` is stored already (another worker's, same round)."""
    status: str = await conn.execute(
        "INSERT INTO report_runs (report_id, user_id, ran_at, result) VALUES ($1, $2, $3, $4::jsonb) "
        "ON CONFLICT DO NOTHING",
        result.report_id,
        user_id,
        at,
        result.model_dump_json(),
    )
    return status.rsplit(" ", 1)[-1] != "0"


async def list_runs(conn: asyncpg.Connection, report_id: uuid.UUID, limit: int) -> list[StoredRun]:
    """The report's stored runs, newest first, at most ``limit`` (inside ``acting_as``:
    another user's report has none)."""
    rows = await conn.fetch(
        "SELECT ran_at, result::text AS result FROM report_runs WHERE report_id = $1 ORDER BY ran_at DESC LIMIT $2",
        report_id,
        limit,
    )
    return [StoredRun(ran_at=r["ran_at"], result=ReportRun.model_validate_json(r["result"])) for r in rows]


async def run_due(
    reports_pool: asyncpg.Pool, metrics_pool: asyncpg.Pool, *, at: datetime, limit: int
) -> ScheduledResult:
    """Run and store every report due at ``at`` (at most ``limit``), each as its
    owner. A report that fails is logged and counted; the others run regardless.
    A report deleted (or unscheduled) since the listing is skipped."""
    async with reports_pool.acquire() as conn:
        due = await due_reports(conn, at, limit)
    ran = failed = 0
    for item in due:
        try:
            ran += await _run_one(reports_pool, metrics_pool, item, at)
        except Exception as exc:  # noqa: BLE001 - one report's failure must not stop the others or the worker
            failed += 1
            _log.error("report_run_failed", report_id=str(item.report_id), error=repr(exc))
    return ScheduledResult(len(due), ran, failed)


async def _run_one(reports_pool: asyncpg.Pool, metrics_pool: asyncpg.Pool, item: DueReport, at: datetime) -> int:
    async with acting_as(reports_pool, item.user_id) as conn:
        report = await reports.get(conn, item.report_id)
    if report is None or report.schedule is None:
        return 0
    result = await run_query(metrics_pool, item.user_id, report)
    async with acting_as(reports_pool, item.user_id) as conn:
        return int(await store_run(conn, item.user_id, at, result))
