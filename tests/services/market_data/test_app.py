"""The market data app as a whole (integration): its OpenAPI document, a token on
every route but the probes, readiness that checks the role's grants, and the
service as users run it (``nexanest serve market-data``)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from nexanest.pipeline.settings import Settings
from nexanest.services.market_data.app import build_app
from nexanest.services.sessions import session_store
from nexanest.services.tokens import SignedTokens
from tests.services.market_data.conftest import TEST_LIMITS, running, symbol_of
from tests.services.served import served as served_process

pytestmark = pytest.mark.integration

ROUTES = {
    "/quotes",
    "/quotes/{symbol}",
    "/ticks/{symbol}",
    "/bars/{symbol}",
    "/indices/{name}/values",
    "/stream/quotes",
}


async def test_the_openapi_document_lists_every_route_each_behind_a_token(app: FastAPI) -> None:
    async with running(app) as http:
        document = (await http.get("/openapi.json")).json()
        answers = {path: await http.get(path.format(symbol="AAPL", name="NXS")) for path in ROUTES}
    assert set(document["paths"]) == ROUTES | {"/healthz", "/readyz"}
    for path in ROUTES:
        operation = document["paths"][path]["get"]
        assert operation["security"] == [{"bearer": []}], path
        assert {"401", "422"} <= set(operation["responses"]), path
    assert {path: r.status_code for path, r in answers.items()} == dict.fromkeys(ROUTES, 401)
    assert document["paths"]["/stream/quotes"]["get"]["responses"]["200"]["content"] == {
        "text/event-stream": {"schema": {"type": "string"}}
    }


async def test_ready_when_the_role_may_read_everything_and_not_otherwise(
    service_settings: Settings, verifier: SignedTokens
) -> None:
    async with running(build_app(service_settings, verifier=verifier, limits=TEST_LIMITS)) as http:
        ready = await http.get("/readyz")
    # The portfolio service's role reaches the same database but may read none of it.
    elsewhere = service_settings.model_copy(
        update={
            "services": service_settings.services.model_copy(
                update={"market_data_dsn": service_settings.services.portfolio_snapshots_dsn}
            )
        }
    )
    async with running(build_app(elsewhere, verifier=verifier, limits=TEST_LIMITS)) as http:
        refused = await http.get("/readyz")
    assert (ready.status_code, ready.json()["checks"]) == (
        200,
        {"timescale": "ok", "quotes": "ok", "quote-stream": "ok"},
    )
    assert refused.status_code == 503
    assert refused.json()["checks"]["timescale"] == "failed: PermissionError"


async def test_nexanest_serve_runs_it_behind_the_auth_services_sessions(
    service_settings: Settings, test_id: str, tmp_path: Path
) -> None:
    """As users run it: ``build_app(settings)`` verifies tokens against the auth
    service's sessions in Redis, so a logout ends access at once."""
    sessions, resource = session_store(service_settings)
    async with resource.open():
        token = (await sessions.create(uuid.uuid4(), "user")).token
        headers = {"Authorization": f"Bearer {token}"}
        url_path = f"/quotes?symbols={symbol_of(test_id)}"
        with served_process("market-data", service_settings, tmp_path / "service.log") as url:
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                found = await http.get(url_path, headers=headers)
                assert await sessions.revoke(token)
                revoked = await http.get(url_path, headers=headers)
                ready = await http.get("/readyz")
    assert found.status_code == 200
    assert found.json() == {"quotes": [], "missing": [symbol_of(test_id)]}
    assert revoked.status_code == 401
    assert ready.json()["checks"]["sessions"] == "ok"
