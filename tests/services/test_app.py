"""The app factory (unit): probes, OpenAPI, the lifespan of resources, the request
log; in process through httpx's ASGI transport, and once under uvicorn on loopback.

No ``from __future__ import annotations`` here: routes close over their
resources, and FastAPI must see the annotations as objects (``Resource``'s docstring).
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib.metadata import version
from typing import Annotated, Any

import httpx
import pytest
import structlog
import uvicorn
from fastapi import APIRouter, Depends, FastAPI
from prometheus_client.parser import text_string_to_metric_families

from nexanest.services.app import Resource, ResourceOpenError, create_app
from tests.prometheus import check_metrics


class Ledger:
    """What the fake resources did, in order: ``open:a``, ``close:a``, ``check:a``."""

    def __init__(self) -> None:
        self.events: list[str] = []


def fake_resource(
    ledger: Ledger,
    name: str,
    *,
    check: Callable[[], Any] | None = None,
    fail_open: bool = False,
    checked: bool = True,
) -> Resource[str]:
    """A resource whose opened value is ``<name>-value``; its check runs ``check``
    (a coroutine function), or answers at once."""

    @asynccontextmanager
    async def open_it() -> AsyncIterator[str]:
        ledger.events.append(f"open:{name}")
        if fail_open:
            raise ConnectionRefusedError(f"{name} refuses")
        try:
            yield f"{name}-value"
        finally:
            ledger.events.append(f"close:{name}")

    async def check_it(value: str) -> None:
        assert value == f"{name}-value"
        ledger.events.append(f"check:{name}")
        if check is not None:
            await check()

    return Resource(name, open_it, check_it if checked else None)


def running(app: FastAPI) -> AbstractAsyncContextManager[object]:
    """The app's lifespan, as a server runs it (httpx's transport does not)."""
    return app.router.lifespan_context(app)


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service.test")


async def test_healthz_answers_without_any_resource() -> None:
    async with client(create_app("demo")) as http:
        response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_the_openapi_document_names_the_service_and_its_probes() -> None:
    router = APIRouter()

    @router.get("/things")
    async def things() -> list[str]:
        return []

    async with client(create_app("demo", routers=[router], app_version="1.2.3")) as http:
        document = (await http.get("/openapi.json")).json()
    assert document["info"] == {"title": "NexaNest demo", "version": "1.2.3"}
    assert set(document["paths"]) == {"/healthz", "/readyz", "/things"}
    assert set(document["paths"]["/readyz"]["get"]["responses"]) == {"200", "503"}


async def test_the_version_defaults_to_the_installed_package() -> None:
    assert create_app("demo").version == version("nexanest")


async def test_resources_open_in_order_close_in_reverse_and_reach_routes() -> None:
    ledger = Ledger()
    first, second = fake_resource(ledger, "first"), fake_resource(ledger, "second")
    router = APIRouter()

    @router.get("/values")
    async def values(a: Annotated[str, Depends(first.get)], b: Annotated[str, Depends(second.get)]) -> dict[str, str]:
        return {"a": a, "b": b}

    app = create_app("demo", resources=[first, second], routers=[router])
    async with client(app) as http:
        async with running(app):
            assert ledger.events == ["open:first", "open:second"]
            assert (await http.get("/values")).json() == {"a": "first-value", "b": "second-value"}
        assert ledger.events == ["open:first", "open:second", "close:second", "close:first"]
        # Stopped: a route that needs a resource fails rather than use a closed one.
        with pytest.raises(RuntimeError, match="'first' is not open"):
            await http.get("/values")


async def test_a_resource_that_cannot_open_fails_the_start_and_closes_the_others() -> None:
    ledger = Ledger()
    resources = [
        fake_resource(ledger, "db"),
        fake_resource(ledger, "cache", fail_open=True),
        fake_resource(ledger, "never"),
    ]
    app = create_app("demo", resources=resources)
    with pytest.raises(ResourceOpenError, match="cannot open 'cache'") as failure:
        async with running(app):
            pytest.fail("the app started without its cache")
    assert failure.value.resource == "cache"
    assert isinstance(failure.value.__cause__, ConnectionRefusedError)
    assert ledger.events == ["open:db", "open:cache", "close:db"]


def test_resource_names_are_unique() -> None:
    ledger = Ledger()
    with pytest.raises(ValueError, match="unique"):
        create_app("demo", resources=[fake_resource(ledger, "db"), fake_resource(ledger, "db")])


async def test_readyz_is_ready_when_every_checked_resource_answers() -> None:
    ledger = Ledger()
    resources = [fake_resource(ledger, "db"), fake_resource(ledger, "cache"), fake_resource(ledger, "x", checked=False)]
    app = create_app("demo", resources=resources)
    async with client(app) as http, running(app):
        response = await http.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"db": "ok", "cache": "ok"}}
    assert "check:x" not in ledger.events


async def test_readyz_names_what_fails_and_what_hangs_and_keeps_driver_messages_out() -> None:
    ledger = Ledger()

    async def refuse() -> None:
        raise ConnectionError("password=hunter2 rejected by 127.0.0.1:6379")

    async def hang() -> None:
        await asyncio.sleep(30)

    resources = [
        fake_resource(ledger, "db"),
        fake_resource(ledger, "cache", check=refuse),
        fake_resource(ledger, "slow", check=hang),
    ]
    app = create_app("demo", resources=resources, readiness_timeout_s=0.1)
    async with client(app) as http, running(app):
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"db": "ok", "cache": "failed: ConnectionError", "slow": "timeout"},
    }
    assert "hunter2" not in response.text


async def test_readyz_before_the_lifespan_reports_resources_not_open() -> None:
    app = create_app("demo", resources=[fake_resource(Ledger(), "db")])
    async with client(app) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"db": "not open"}


async def test_readyz_logs_when_a_resource_goes_away_and_comes_back_not_every_probe() -> None:
    down = True

    async def flaky() -> None:
        if down:
            raise ConnectionError("down")

    app = create_app("demo", resources=[fake_resource(Ledger(), "db", check=flaky)])
    async with client(app) as http, running(app):
        with structlog.testing.capture_logs() as logs:
            statuses = [(await http.get("/readyz")).status_code for _ in range(3)]
            down = False
            statuses += [(await http.get("/readyz")).status_code for _ in range(2)]
    assert statuses == [503, 503, 503, 200, 200]
    changes = [(e["event"], e["resource"]) for e in logs if e["event"].startswith("resource_")]
    assert changes == [("resource_unavailable", "db"), ("resource_available", "db")]


async def test_each_request_is_logged_once_with_its_id_and_without_credentials() -> None:
    router = APIRouter()

    @router.get("/things/{thing}")
    async def thing(thing: str) -> dict[str, str]:
        structlog.get_logger("test").info("inside")
        return {"thing": thing}

    app = create_app("demo", routers=[router])
    async with client(app) as http:
        with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            chosen = await http.get(
                "/things/a?token=secret-query", headers={"X-Request-ID": "abc-123", "Authorization": "Bearer sekrit"}
            )
            forged = await http.get("/things/b", headers={"X-Request-ID": "x\ninjected"})
            missing = await http.get("/nowhere")
    assert chosen.headers["x-request-id"] == "abc-123"
    assert forged.headers["x-request-id"] != "x\ninjected"
    assert len(forged.headers["x-request-id"]) == 32  # one of ours
    requests = [e for e in logs if e["event"] == "request"]
    assert [(e["path"], e["status"], e["request_id"]) for e in requests] == [
        ("/things/a", 200, "abc-123"),
        ("/things/b", 200, forged.headers["x-request-id"]),
        ("/nowhere", 404, missing.headers["x-request-id"]),
    ]
    assert all(e["service"] == "demo" and e["method"] == "GET" and e["duration_ms"] >= 0 for e in requests)
    # What a route logs carries the request's id too.
    assert [e["request_id"] for e in logs if e["event"] == "inside"] == ["abc-123", forged.headers["x-request-id"]]
    assert "secret-query" not in repr(logs)
    assert "sekrit" not in repr(logs)


async def test_a_route_that_raises_is_logged_as_500_and_answers_without_a_trace() -> None:
    router = APIRouter()

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("internal detail")

    app = create_app("demo", routers=[router])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as http:
        with structlog.testing.capture_logs() as logs:
            response = await http.get("/boom")
    assert response.status_code == 500
    assert "internal detail" not in response.text
    assert [(e["path"], e["status"]) for e in logs if e["event"] == "request"] == [("/boom", 500)]


async def test_under_uvicorn_the_lifespan_runs_and_probes_answer_over_tcp() -> None:
    ledger = Ledger()
    app = create_app("demo", resources=[fake_resource(ledger, "db")])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False))
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.025)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            ready = await http.get("/readyz")
        assert (ready.status_code, ready.json()["checks"]) == (200, {"db": "ok"})
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
    assert ledger.events == ["open:db", "check:db", "close:db"]


async def test_requests_are_counted_by_route_template_and_scraped_on_the_service_port() -> None:
    """/metrics on the service's own port: every request counted by the route's
    template (an id in the path never becomes a series), 404s of unknown paths as
    ``unmatched``, 500s counted; the scrape passes ``promtool check metrics``."""
    router = APIRouter()

    @router.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @router.get("/broken")
    async def broken() -> dict[str, int]:
        raise RuntimeError("boom")

    service = f"metrics-{id(router)}"  # series of its own in the process-wide registry
    app = create_app(service, routers=[router])
    async with running(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            for item_id in (1, 2, 3):
                assert (await client.get(f"/items/{item_id}")).status_code == 200
            assert (await client.get("/nowhere/7")).status_code == 404
            assert (await client.get("/broken")).status_code == 500
            scrape = await client.get("/metrics")
            document = (await client.get("/openapi.json")).json()
    assert scrape.status_code == 200
    assert "/metrics" not in document["paths"]
    counted = {
        (s.labels["route"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(scrape.text)
        for s in family.samples
        if s.name == "nexanest_http_requests_total" and s.labels.get("service") == service
    }
    assert counted == {("/items/{item_id}", "200"): 3, ("unmatched", "404"): 1, ("/broken", "500"): 1}
    assert check_metrics(scrape.content) == ""
