"""Saved reports (analytics/0002) in the analytics database, in parameterised SQL.

Every function takes a connection inside ``acting_as``: row-level security
(ENABLEd and FORCEd, ``USING`` and ``WITH CHECK`` on ``app.user_id``) then shows,
changes and deletes only the acting user's reports, so another user's report
is indistinguishable from one that does not exist (None, False). Nothing here
filters by user: the database does.
"""

from __future__ import annotations

import uuid

import asyncpg

from nexanest.services.analytics.models import ReportIn, ReportOut, ReportQuery

_COLUMNS = "report_id, name, definition::text AS definition, schedule, created_at, updated_at"


class NameTaken(Exception):
    """The acting user already has a report of that name (409)."""


async def create(conn: asyncpg.Connection, user_id: uuid.UUID, body: ReportIn) -> ReportOut:
    try:
        row = await conn.fetchrow(
            f"INSERT INTO saved_reports (report_id, user_id, name, definition, schedule) "
            f"VALUES ($1, $2, $3, $4::jsonb, $5) RETURNING {_COLUMNS}",
            uuid.uuid4(),
            user_id,
            body.name,
            body.definition.model_dump_json(),
            body.schedule,
        )
    except asyncpg.UniqueViolationError as exc:
        raise NameTaken from exc
    return _report(row)


async def list_reports(conn: asyncpg.Connection, limit: int) -> list[ReportOut]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM saved_reports ORDER BY created_at, report_id LIMIT $1", limit)
    return [_report(r) for r in rows]


async def get(conn: asyncpg.Connection, report_id: uuid.UUID) -> ReportOut | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM saved_reports WHERE report_id = $1", report_id)
    return None if row is None else _report(row)


async def exists(conn: asyncpg.Connection, report_id: uuid.UUID) -> bool:
    """Whether the acting user has the report (its definition is not read)."""
    found: bool = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM saved_reports WHERE report_id = $1)", report_id)
    return found


async def replace(conn: asyncpg.Connection, report_id: uuid.UUID, body: ReportIn) -> ReportOut | None:
    try:
        row = await conn.fetchrow(
            f"UPDATE saved_reports SET name = $2, definition = $3::jsonb, schedule = $4, updated_at = now() "
            f"WHERE report_id = $1 RETURNING {_COLUMNS}",
            report_id,
            body.name,
            body.definition.model_dump_json(),
            body.schedule,
        )
    except asyncpg.UniqueViolationError as exc:
        raise NameTaken from exc
    return None if row is None else _report(row)


async def delete(conn: asyncpg.Connection, report_id: uuid.UUID) -> bool:
    status: str = await conn.execute("DELETE FROM saved_reports WHERE report_id = $1", report_id)
    return status.rsplit(" ", 1)[-1] != "0"


def _report(row: asyncpg.Record) -> ReportOut:
    return ReportOut(
        id=row["report_id"],
        name=row["name"],
        definition=ReportQuery.model_validate_json(row["definition"]),
        schedule=row["schedule"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
