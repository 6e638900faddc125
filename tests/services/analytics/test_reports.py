"""Saved reports (integration, the analytics_test database): CRUD, validation of
the query definition as problems, and row-level security (user B reaches none
of A's reports, by id or by SQL through the service's own pool)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from nexanest.services.analytics.compute import Parameters, compute_portfolios
from nexanest.services.analytics.models import ReportQuery
from nexanest.services.rls import acting_as
from tests.services.analytics.conftest import Service, Snapshot, write_snapshots

pytestmark = pytest.mark.integration


def report(name: str = "risk", **definition: Any) -> dict[str, object]:
    query = {"subject_kind": "symbol", "subject_ids": ["SYN0001", "SYN0002"], "metrics": ["vwap"], **definition}
    return {"name": name, "definition": query, "schedule": "daily"}


async def test_crud_of_ones_own_reports(service: Service, users: list[uuid.UUID]) -> None:
    alice, _ = users
    headers = service.auth(alice)
    created = await service.http.post("/analytics/reports", json=report(), headers=headers)
    assert created.status_code == 201, created.text
    body = created.json()
    assert created.headers["location"] == f"/analytics/reports/{body['id']}"
    assert body["definition"] == {
        "subject_kind": "symbol",
        "subject_ids": ["SYN0001", "SYN0002"],
        "metrics": ["vwap"],
        "windows": [],
    }
    assert body["schedule"] == "daily"
    again = await service.http.post("/analytics/reports", json=report(), headers=headers)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"

    listed = await service.http.get("/analytics/reports", headers=headers)
    assert [r["id"] for r in listed.json()] == [body["id"]]
    replaced = await service.http.put(
        f"/analytics/reports/{body['id']}", json={**report("renamed"), "schedule": None}, headers=headers
    )
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["name"], replaced.json()["schedule"]) == ("renamed", None)
    fetched = await service.http.get(f"/analytics/reports/{body['id']}", headers=headers)
    assert fetched.json() == replaced.json()
    assert datetime.fromisoformat(fetched.json()["updated_at"]) >= datetime.fromisoformat(body["updated_at"])

    deleted = await service.http.delete(f"/analytics/reports/{body['id']}", headers=headers)
    assert deleted.status_code == 204
    gone = await service.http.get(f"/analytics/reports/{body['id']}", headers=headers)
    assert gone.status_code == 404
    assert (await service.http.get("/analytics/reports", headers=headers)).json() == []


@pytest.mark.parametrize(
    ("definition", "where"),
    [
        ({"subject_kind": "portfolio", "subject_ids": ["SYN0001"]}, "a portfolio id"),
        ({"metrics": ["sharpe"]}, "not symbol metrics"),
        ({"subject_ids": ["lower"]}, "a symbol subject"),
        ({"subject_ids": []}, "at least 1"),
        ({"windows": ["2y"]}, "windows"),
        ({"subject_ids": ["A", "A"]}, "twice"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_a_bad_definition_is_a_problem_and_nothing_is_stored(
    service: Service, users: list[uuid.UUID], definition: dict[str, Any], where: str
) -> None:
    alice, _ = users
    response = await service.http.post("/analytics/reports", json=report(**definition), headers=service.auth(alice))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert where in response.text
    assert (await service.http.get("/analytics/reports", headers=service.auth(alice))).json() == []


async def test_another_user_reaches_none_of_a_users_reports(service: Service, users: list[uuid.UUID]) -> None:
    alice, bob = users
    created = await service.http.post("/analytics/reports", json=report(), headers=service.auth(alice))
    report_id = created.json()["id"]
    for method, path, body in (
        ("GET", f"/analytics/reports/{report_id}", None),
        ("GET", f"/analytics/reports/{report_id}/run", None),
        ("PUT", f"/analytics/reports/{report_id}", report("mine now")),
        ("DELETE", f"/analytics/reports/{report_id}", None),
    ):
        response = await service.http.request(method, path, json=body, headers=service.auth(bob))
        assert response.status_code == 404, (method, response.text)
        assert response.json()["detail"] == "no such report"
    assert (await service.http.get("/analytics/reports", headers=service.auth(bob))).json() == []
    # Bob may use the same name: names are per user.
    assert (await service.http.post("/analytics/reports", json=report(), headers=service.auth(bob))).status_code == 201

    # The database decides: through the service's own pool, as Bob or as nobody.
    pool = service.reports_pool
    async with acting_as(pool, bob) as conn:
        assert await conn.fetchval("SELECT count(*) FROM saved_reports WHERE report_id = $1", uuid.UUID(report_id)) == 0
        assert await conn.execute("UPDATE saved_reports SET name = 'x' WHERE report_id = $1", uuid.UUID(report_id)) == (
            "UPDATE 0"
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await conn.execute(
                "INSERT INTO saved_reports (report_id, user_id, name, definition) VALUES ($1, $2, 'planted', '{}')",
                uuid.uuid4(),
                alice,
            )
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM saved_reports") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE saved_reports SET user_id = $1", bob)
    async with acting_as(pool, alice) as conn:
        assert (
            await conn.fetchval("SELECT name FROM saved_reports WHERE report_id = $1", uuid.UUID(report_id)) == "risk"
        )


async def test_running_a_report_shows_only_ones_own_portfolios(service: Service, users: list[uuid.UUID]) -> None:
    alice, bob = users
    at = datetime(2025, 7, 20, 12, 0, tzinfo=UTC)
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    for portfolio, owner in ((mine, alice), (theirs, bob)):
        values = ((59, 1000), (40, 1010), (20, 990), (1, 1005))
        snapshots = [Snapshot(at - timedelta(minutes=k), Decimal(v), Decimal(1000)) for k, v in values]
        await write_snapshots(service.settings, portfolio, owner, snapshots)
    await compute_portfolios(service.pool, None, Parameters(0.0, None), at=at, portfolio_ids=[mine, theirs])
    definition = {"subject_kind": "portfolio", "subject_ids": [str(mine), str(theirs)], "metrics": ["max_drawdown"]}
    created = await service.http.post(
        "/analytics/reports", json={"name": "both", "definition": definition}, headers=service.auth(alice)
    )
    assert created.status_code == 201, created.text
    run = await service.http.get(f"/analytics/reports/{created.json()['id']}/run", headers=service.auth(alice))
    assert run.status_code == 200, run.text
    body = run.json()
    assert body["missing"] == [str(theirs)]
    assert [r["subject_id"] for r in body["results"]] == [str(mine)]
    # Four one-minute points: both windows sampled at 1 minute have them; the coarser ones one point, no return.
    assert body["results"][0]["metrics"] == {
        "1h": {"max_drawdown": pytest.approx(990 / 1010 - 1, rel=1e-9)},
        "1d": {"max_drawdown": pytest.approx(990 / 1010 - 1, rel=1e-9)},
    }


def test_the_definition_model_names_its_defaults() -> None:
    query = ReportQuery(subject_kind="portfolio", subject_ids=[str(uuid.uuid4())])
    assert query.metric_names() == ("return", "volatility", "max_drawdown", "sharpe", "beta")
    assert query.window_names() == ("1h", "1d", "1w", "1m", "ytd")
