"""Scheduled saved reports (integration, analytics_test and timescale_test): the
worker's round runs a due report as its owner and stores what ``/run`` answers;
a report runs again only once its period has passed; a report without schedule
never runs; one failing report does not stop the others; user B reaches none of
A's runs (route, and SQL through the service's own pool); the due-report index
is the one SECURITY DEFINER way across users, executable by the service alone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from nexanest.pipeline.settings import Settings
from nexanest.services.analytics import runs
from nexanest.services.analytics.compute import Parameters, compute_portfolios
from nexanest.services.analytics.worker import scheduled_reports
from nexanest.services.rls import acting_as
from tests.services.analytics.catalog import CROSSING_FUNCTION, function_facts, row_security
from tests.services.analytics.conftest import Service, Snapshot, write_snapshots

pytestmark = pytest.mark.integration

#: Enough for every report the suite's tests may have due at once.
_LIMIT = 10_000


async def _portfolio_report(service: Service, owner: uuid.UUID, schedule: str | None, name: str = "risk") -> str:
    """A report over one of ``owner``'s portfolios, with metrics computed for it."""
    at = datetime.now(UTC).replace(microsecond=0)
    portfolio = uuid.uuid4()
    values = ((59, 1000), (40, 1010), (20, 990), (1, 1005))
    snapshots = [Snapshot(at - timedelta(minutes=k), Decimal(v), Decimal(1000)) for k, v in values]
    await write_snapshots(service.settings, portfolio, owner, snapshots)
    await compute_portfolios(service.pool, None, Parameters(0.0, None), at=at, portfolio_ids=[portfolio])
    definition = {"subject_kind": "portfolio", "subject_ids": [str(portfolio), str(uuid.uuid4())]}
    created = await service.http.post(
        "/analytics/reports",
        json={"name": name, "definition": definition, "schedule": schedule},
        headers=service.auth(owner),
    )
    assert created.status_code == 201, created.text
    report_id: str = created.json()["id"]
    return report_id


async def _runs(service: Service, owner: uuid.UUID, report_id: str) -> list[dict[str, object]]:
    response = await service.http.get(f"/analytics/reports/{report_id}/runs", headers=service.auth(owner))
    assert response.status_code == 200, response.text
    listed: list[dict[str, object]] = response.json()
    return listed


async def _round(service: Service, *, at: datetime) -> runs.ScheduledResult | None:
    """The worker's scheduled step of a round at ``at``, bounded high enough that
    other tests' due reports in the test database cannot crowd this test's out."""
    s = service.settings
    settings = s.model_copy(update={"services": s.services.model_copy(update={"analytics_reports_per_round": _LIMIT})})
    return await scheduled_reports(service.reports_pool, service.pool, settings, at=at)


def _round_time() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0)


async def test_an_hourly_report_runs_once_per_hour_and_stores_what_run_answers(
    service: Service, users: list[uuid.UUID]
) -> None:
    alice, _ = users
    report_id = await _portfolio_report(service, alice, "hourly")
    at = _round_time()
    first = await _round(service, at=at)
    assert first is not None
    assert first.ran >= 1
    stored = await _runs(service, alice, report_id)
    on_demand = await service.http.get(f"/analytics/reports/{report_id}/run", headers=service.auth(alice))
    assert on_demand.status_code == 200, on_demand.text
    assert len(stored) == 1
    assert datetime.fromisoformat(str(stored[0]["ran_at"])) == at
    assert stored[0]["result"] == on_demand.json()
    assert on_demand.json()["results"]
    assert on_demand.json()["missing"]

    # Within the hour: not due, not run again. An hour on: due again, newest first.
    for later in (timedelta(minutes=5), timedelta(minutes=59, seconds=59)):
        await _round(service, at=at + later)
    assert len(await _runs(service, alice, report_id)) == 1
    await _round(service, at=at + timedelta(hours=1))
    again = await _runs(service, alice, report_id)
    assert [datetime.fromisoformat(str(r["ran_at"])) for r in again] == [at + timedelta(hours=1), at]
    limited = await service.http.get(f"/analytics/reports/{report_id}/runs?limit=1", headers=service.auth(alice))
    assert [r["ran_at"] for r in limited.json()] == [again[0]["ran_at"]]


async def test_the_same_round_twice_stores_its_run_once(service: Service, users: list[uuid.UUID]) -> None:
    """Two workers side by side reach the same round time: the run is stored once."""
    alice, _ = users
    report_id = await _portfolio_report(service, alice, "daily")
    result = await runs.run(service.reports_pool, service.pool, alice, uuid.UUID(report_id))
    assert result is not None
    at = _round_time()
    async with acting_as(service.reports_pool, alice) as conn:
        assert await runs.store_run(conn, alice, at, result) is True
        assert await runs.store_run(conn, alice, at, result) is False
    assert len(await _runs(service, alice, report_id)) == 1


async def test_a_report_without_schedule_never_runs(service: Service, users: list[uuid.UUID]) -> None:
    alice, _ = users
    report_id = await _portfolio_report(service, alice, None)
    at = _round_time()
    for later in (timedelta(0), timedelta(hours=1), timedelta(days=8)):
        async with service.reports_pool.acquire() as conn:
            due = await runs.due_reports(conn, at + later, _LIMIT)
        assert uuid.UUID(report_id) not in {d.report_id for d in due}
        await _round(service, at=at + later)
    assert await _runs(service, alice, report_id) == []


async def test_a_failing_report_is_counted_and_the_others_still_run(
    service: Service, users: list[uuid.UUID], migrated: Settings
) -> None:
    alice, bob = users
    report_id = await _portfolio_report(service, alice, "weekly")
    # A definition the service no longer accepts (planted as the owner): reading it fails.
    broken = uuid.uuid4()
    conn = await asyncpg.connect(migrated.postgres.analytics_dsn.get_secret_value())
    try:
        await conn.execute(
            "INSERT INTO saved_reports (report_id, user_id, name, definition, schedule) "
            "VALUES ($1, $2, 'broken', '{\"subject_kind\": \"planet\"}', 'hourly')",
            broken,
            bob,
        )
    finally:
        await conn.close()
    result = await _round(service, at=_round_time())
    assert result is not None
    assert result.failed >= 1
    assert len(await _runs(service, alice, report_id)) == 1
    async with service.reports_pool.acquire() as conn:
        due = await runs.due_reports(conn, _round_time(), _LIMIT)
    assert broken in {d.report_id for d in due}  # left due: the next round tries it again


async def test_another_user_reaches_none_of_a_users_runs(service: Service, users: list[uuid.UUID]) -> None:
    alice, bob = users
    report_id = await _portfolio_report(service, alice, "hourly")
    await _round(service, at=_round_time())
    assert len(await _runs(service, alice, report_id)) == 1
    refused = await service.http.get(f"/analytics/reports/{report_id}/runs", headers=service.auth(bob))
    assert refused.status_code == 404
    assert refused.json()["detail"] == "no such report"
    assert (
        await service.http.get(f"/analytics/reports/{uuid.uuid4()}/runs", headers=service.auth(alice))
    ).status_code == 404

    rid = uuid.UUID(report_id)
    pool = service.reports_pool
    async with pool.acquire() as conn:  # no acting user: nothing
        assert await conn.fetchval("SELECT count(*) FROM report_runs WHERE report_id = $1", rid) == 0
    async with acting_as(pool, bob) as conn:
        assert await conn.fetchval("SELECT count(*) FROM report_runs WHERE report_id = $1", rid) == 0
        assert await conn.fetchval("SELECT count(*) FROM report_runs") == 0
    # B cannot store a run in A's name, nor one of A's report in B's own name.
    for owner, error in (
        (alice, asyncpg.InsufficientPrivilegeError),
        (bob, asyncpg.ForeignKeyViolationError),
    ):
        with pytest.raises(error):
            async with acting_as(pool, bob) as conn:
                await conn.execute(
                    "INSERT INTO report_runs (report_id, user_id, ran_at, result) VALUES ($1, $2, now(), '{}')",
                    rid,
                    owner,
                )
    # Runs are records: not even their owner changes or deletes one.
    for statement in ("UPDATE report_runs SET result = '{}'", "DELETE FROM report_runs"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with acting_as(pool, alice) as conn:
                await conn.execute(statement)
    assert len(await _runs(service, alice, report_id)) == 1
    # A deleted report takes its runs.
    deleted = await service.http.delete(f"/analytics/reports/{report_id}", headers=service.auth(alice))
    assert deleted.status_code == 204
    owner_conn = await asyncpg.connect(service.settings.postgres.analytics_dsn.get_secret_value())
    try:
        assert await owner_conn.fetchval("SELECT count(*) FROM report_runs WHERE report_id = $1", rid) == 0
    finally:
        await owner_conn.close()


async def test_the_due_index_is_the_one_way_across_users_and_only_the_service_may_use_it(
    migrated: Settings,
) -> None:
    conn = await asyncpg.connect(migrated.postgres.analytics_dsn.get_secret_value())
    try:
        assert await function_facts(conn, "analytics_due_reports(timestamptz, integer)") == CROSSING_FUNCTION
        assert await row_security(conn, "report_runs") == (True, True)
        policies = await conn.fetch(
            "SELECT policyname, cmd, qual IS NOT NULL AS using, with_check IS NOT NULL AS checks "
            "FROM pg_policies WHERE tablename = 'report_runs' AND 'nexanest_analytics' = ANY(roles)"
        )
        assert [tuple(p) for p in policies] == [("report_runs_acting_user", "ALL", True, True)]
    finally:
        await conn.close()
